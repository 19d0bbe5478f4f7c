//! Prices per token, from the file LiteLLM users already keep:
//! `model_prices_and_context_window.json`.
//!
//! The file is an object of model name → entry. Of an entry only `input_cost_per_token`,
//! `output_cost_per_token`, `cache_read_input_token_cost`, `cache_creation_input_token_cost`
//! and `output_cost_per_reasoning_token` (USD per token) are read; every other field
//! (tiers such as `input_cost_per_token_above_200k_tokens`, service tiers, audio and image
//! prices, `cache_creation_input_token_cost_above_1hr`) is ignored, and so is the
//! documentation entry `sample_spec`. An entry with neither input nor output price (image, audio,
//! rerank models, priced per pixel, second or query) is skipped and counted: those models
//! are unpriced here. An entry with one of the two prices costs 0 for the other (an
//! embedding model's output). A price that is not a finite, non-negative number, or an
//! entry that is not an object, refuses the whole file with an error naming the file and
//! the model: a price table is loaded at start, and a wrong price must not bill quietly.
//!
//! **Provider prefixes.** LiteLLM's file names most models bare (`gpt-4o`) and some with
//! their provider (`azure/gpt-4o`, `openrouter/openai/gpt-4o`), and its cost lookup falls
//! back to the bare name when the prefixed one is not listed. [`PriceTable::lookup`] does
//! the same and nothing more: the exact name first, then the name with its leading
//! `provider/` segments removed one at a time (`openrouter/openai/gpt-4o` →
//! `openai/gpt-4o` → `gpt-4o`). A bare name never takes a provider's price (`gpt-4o`
//! never matches `azure/gpt-4o`: which provider would it be?), and names are compared as
//! written, case included: a model that does not match costs 0 and is marked unpriced,
//! never priced by a guess.
//!
//! **Arithmetic: LiteLLM's `generic_cost_per_token`**
//! (`litellm/litellm_core_utils/llm_cost_calc/utils.py`, with `_calculate_input_cost` and
//! `_get_token_base_cost`), in its order of operations so that the same usage costs the
//! same `f64` to the last digit (checked against LiteLLM 1.110.2 in the tests):
//! - prompt: `max(prompt − cached − cache_creation, 0) × input`, plus `cached ×
//!   cache_read_input_token_cost`, plus (when there are any) `cache_creation ×
//!   cache_creation_input_token_cost`; a cache price the entry does not give is the input
//!   price (a provider that publishes none bills cached tokens as input);
//! - completion: with reasoning tokens, `max(completion − reasoning, 0) × output +
//!   reasoning × output_cost_per_reasoning_token` (else the output price); without,
//!   `completion × output`;
//! - the cost is prompt + completion.
//!
//! The counts are in OpenAI's meaning (the filter's meter adds Anthropic's cache counts to
//! its `input_tokens`, as LiteLLM's Anthropic adapter does): cached and cache-write tokens
//! are part of the prompt, reasoning tokens part of the completion.

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The documentation entry at the top of LiteLLM's file.
const SAMPLE_SPEC: &str = "sample_spec";

/// USD per token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input_cost_per_token: f64,
    pub output_cost_per_token: f64,
    /// Cached prompt tokens; `None`: the input price.
    pub cache_read_input_token_cost: Option<f64>,
    /// Prompt tokens written to the cache (Anthropic); `None`: the input price.
    pub cache_creation_input_token_cost: Option<f64>,
    /// Reasoning tokens; `None`: the output price.
    pub output_cost_per_reasoning_token: Option<f64>,
}

/// The counts a request is priced by (see the module's comment for their meaning).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub prompt: u64,
    pub completion: u64,
    /// Of `prompt`, read from the cache.
    pub cached: u64,
    /// Of `prompt`, written to the cache.
    pub cache_creation: u64,
    /// Of `completion`, spent reasoning.
    pub reasoning: u64,
}

impl TokenUsage {
    /// A prompt and a completion without details.
    pub fn new(prompt: u64, completion: u64) -> TokenUsage {
        TokenUsage {
            prompt,
            completion,
            ..TokenUsage::default()
        }
    }

    /// A spend record's counts; a count it does not carry is 0.
    pub fn of(record: &livegate_contract::SpendRecord) -> TokenUsage {
        TokenUsage {
            prompt: record.prompt_tokens.unwrap_or(0),
            completion: record.completion_tokens.unwrap_or(0),
            cached: record.cached_tokens.unwrap_or(0),
            cache_creation: record.cache_creation_tokens.unwrap_or(0),
            reasoning: record.reasoning_tokens.unwrap_or(0),
        }
    }
}

impl Price {
    /// What `usage` costs at these prices, as LiteLLM computes it (the module's comment).
    pub fn cost(&self, usage: TokenUsage) -> f64 {
        let cache_read = self
            .cache_read_input_token_cost
            .unwrap_or(self.input_cost_per_token);
        let cache_creation = self
            .cache_creation_input_token_cost
            .unwrap_or(self.input_cost_per_token);
        let uncached = usage
            .prompt
            .saturating_sub(usage.cached.saturating_add(usage.cache_creation));
        let mut prompt = uncached as f64 * self.input_cost_per_token;
        prompt += usage.cached as f64 * cache_read;
        if usage.cache_creation > 0 {
            prompt += usage.cache_creation as f64 * cache_creation;
        }
        let completion = if usage.reasoning > 0 {
            let text = usage.completion.saturating_sub(usage.reasoning);
            let reasoning = self
                .output_cost_per_reasoning_token
                .unwrap_or(self.output_cost_per_token);
            text as f64 * self.output_cost_per_token + usage.reasoning as f64 * reasoning
        } else {
            usage.completion as f64 * self.output_cost_per_token
        };
        prompt + completion
    }
}

/// The cost of one request. `unpriced` means the model is not in the table: the cost
/// is 0 because it is unknown, not because it is free.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Priced {
    pub cost: f64,
    pub unpriced: bool,
}

/// Why a price file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    #[error("{}: cannot be read: {source}", .file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: is not JSON: {source}", .file.display())]
    Json {
        file: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: must be an object of model names", .file.display())]
    NotAnObject { file: PathBuf },
    #[error("{}: model {model:?}: {problem}", .file.display())]
    Entry {
        file: PathBuf,
        model: String,
        problem: EntryProblem,
    },
}

/// What is wrong with one model's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    #[error("the entry is not an object")]
    NotAnObject,
    #[error("{0} must be a finite, non-negative number")]
    BadPrice(&'static str),
}

/// Every priced model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceTable {
    prices: HashMap<String, Price>,
    skipped: usize,
    /// A deployment's route → its prices, for deployments with a `model_info`
    /// (`deployments.rs`).
    deployments: HashMap<String, Price>,
}

impl PriceTable {
    /// Reads a price file without blocking the runtime.
    pub async fn load(file: &Path) -> Result<PriceTable, PricingError> {
        let text = tokio::fs::read_to_string(file)
            .await
            .map_err(|source| PricingError::Read {
                file: file.to_path_buf(),
                source,
            })?;
        PriceTable::parse(&text, file)
    }

    /// Parses a price file's text; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<PriceTable, PricingError> {
        let document: Value = serde_json::from_str(text).map_err(|source| PricingError::Json {
            file: file.to_path_buf(),
            source,
        })?;
        let Value::Object(entries) = document else {
            return Err(PricingError::NotAnObject {
                file: file.to_path_buf(),
            });
        };
        let mut table = PriceTable::default();
        for (model, entry) in entries {
            if model == SAMPLE_SPEC {
                continue;
            }
            let price = entry_price(&entry).map_err(|problem| PricingError::Entry {
                file: file.to_path_buf(),
                model: model.clone(),
                problem,
            })?;
            match price {
                Some(price) => {
                    table.prices.insert(model, price);
                }
                None => table.skipped += 1,
            }
        }
        Ok(table)
    }

    /// The number of priced models.
    pub fn len(&self) -> usize {
        self.prices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }

    /// Entries without a per-token price (their models are unpriced).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The price of `model`: the exact name, else without its provider prefixes.
    pub fn lookup(&self, model: &str) -> Option<Price> {
        let mut name = model;
        loop {
            if let Some(price) = self.prices.get(name) {
                return Some(*price);
            }
            name = name.split_once('/')?.1;
        }
    }

    /// What a request costs; a model without a price costs 0 and is marked.
    pub fn cost(&self, model: &str, usage: TokenUsage) -> Priced {
        match self.lookup(model) {
            Some(price) => Priced {
                cost: price.cost(usage),
                unpriced: false,
            },
            None => Priced {
                cost: 0.0,
                unpriced: true,
            },
        }
    }
}

/// An entry's per-token prices; `None` when it has neither.
fn entry_price(entry: &Value) -> Result<Option<Price>, EntryProblem> {
    let Value::Object(fields) = entry else {
        return Err(EntryProblem::NotAnObject);
    };
    let input = per_token(fields, "input_cost_per_token")?;
    let output = per_token(fields, "output_cost_per_token")?;
    if input.is_none() && output.is_none() {
        return Ok(None);
    }
    Ok(Some(Price {
        input_cost_per_token: input.unwrap_or(0.0),
        output_cost_per_token: output.unwrap_or(0.0),
        cache_read_input_token_cost: per_token(fields, "cache_read_input_token_cost")?,
        cache_creation_input_token_cost: per_token(fields, "cache_creation_input_token_cost")?,
        output_cost_per_reasoning_token: per_token(fields, "output_cost_per_reasoning_token")?,
    }))
}

fn per_token(fields: &Map<String, Value>, name: &'static str) -> Result<Option<f64>, EntryProblem> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_f64() {
            Some(price) if price.is_finite() && price >= 0.0 => Ok(Some(price)),
            _ => Err(EntryProblem::BadPrice(name)),
        },
    }
}

mod deployments;
pub use deployments::DeploymentPriceError;

#[cfg(test)]
mod tests;
