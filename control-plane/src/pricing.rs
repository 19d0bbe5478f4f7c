//! Prices per token, from the file LiteLLM users already keep:
//! `model_prices_and_context_window.json`.
//!
//! The file is an object of model name → entry. Of an entry only `input_cost_per_token`
//! and `output_cost_per_token` (USD per token) are read; every other field is ignored, and
//! so is the documentation entry `sample_spec`. An entry with neither price (image, audio,
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
    pub fn cost(&self, model: &str, prompt_tokens: u64, completion_tokens: u64) -> Priced {
        match self.lookup(model) {
            Some(price) => Priced {
                cost: prompt_tokens as f64 * price.input_cost_per_token
                    + completion_tokens as f64 * price.output_cost_per_token,
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

#[cfg(test)]
mod tests;
