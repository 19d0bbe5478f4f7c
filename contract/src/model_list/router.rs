//! LiteLLM's `router_settings` (and the same keys under `litellm_settings`): `fallbacks` and
//! `num_retries`, read and checked against the model list; and the chains they make, the
//! order in which one request tries deployments (Envoy's retries walk it, see
//! docs/architecture.md "Fallbacks").

use std::collections::BTreeMap;

use super::{field, not_implemented, ModelListError, Routed};
use crate::deployment::Provider;

/// Whether a request in one provider's shape can be sent to another's deployment:
/// Anthropic's messages are not OpenAI's (nor Azure's) chat completions, and livegate
/// does not translate between them.
fn same_shape(a: Provider, b: Provider) -> bool {
    (a == Provider::Anthropic) == (b == Provider::Anthropic)
}

/// LiteLLM's `num_retries` when neither section sets it: the Router's
/// `openai.DEFAULT_MAX_RETRIES`.
pub const DEFAULT_NUM_RETRIES: u32 = 2;

/// The keys of either section livegate reads; every other key is refused by name.
const ACCEPTED: [&str; 2] = ["fallbacks", "num_retries"];

/// Retries and fallbacks, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Router {
    /// Tries of a model's other deployments after its first (LiteLLM's `num_retries`).
    pub num_retries: u32,
    /// Model name → the models tried after it, in order.
    pub fallbacks: BTreeMap<String, Vec<String>>,
}

impl Default for Router {
    fn default() -> Router {
        Router {
            num_retries: DEFAULT_NUM_RETRIES,
            fallbacks: BTreeMap::new(),
        }
    }
}

/// The deployments one request may try, in order, when it starts at `start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// The deployment the filter picked (its `route` names the chain's route too).
    pub start: usize,
    /// Indices into the model list, `start` first; each deployment at most once.
    pub members: Vec<usize>,
}

impl Router {
    /// Reads both sections (`None`: absent); a key given in both is refused, so that what
    /// applies is never a guess.
    pub(super) fn from_sections(
        router_settings: Option<serde_norway::Value>,
        litellm_settings: Option<serde_norway::Value>,
        deployments: &[Routed],
    ) -> Result<Router, ModelListError> {
        let mut given: BTreeMap<String, (String, serde_norway::Value)> = BTreeMap::new();
        for (section, value) in [
            ("router_settings", router_settings),
            ("litellm_settings", litellm_settings),
        ] {
            let Some(value) = value else { continue };
            let serde_norway::Value::Mapping(map) = value else {
                return Err(field(section, "must be a mapping"));
            };
            for (key, value) in map {
                let Some(key) = key.as_str().map(str::to_owned) else {
                    return Err(field(section, "has a key that is not a string"));
                };
                let at = format!("{section}.{key}");
                if !ACCEPTED.contains(&key.as_str()) {
                    let why = ": livegate reads fallbacks and num_retries only";
                    return Err(not_implemented(&at, why));
                }
                if let Some((first, _)) = given.get(&key) {
                    return Err(field(
                        &at,
                        &format!("is also given as {first}: give it once"),
                    ));
                }
                given.insert(key, (at, value));
            }
        }
        let mut router = Router::default();
        if let Some((at, value)) = given.remove("num_retries") {
            router.num_retries = match value {
                serde_norway::Value::Number(n) => n
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n <= 10)
                    .ok_or_else(|| field(&at, "must be a whole number from 0 to 10"))?,
                _ => return Err(field(&at, "must be a whole number from 0 to 10")),
            };
        }
        if let Some((at, value)) = given.remove("fallbacks") {
            router.fallbacks = fallbacks(&at, value, deployments)?;
        }
        if router.num_retries > 0 {
            one_shape_per_model(deployments)?;
        }
        Ok(router)
    }

    /// One chain per deployment, starting there: the model's deployments in the list's
    /// order from `start` on (wrapping), at most `1 + num_retries` of them; then, for each
    /// fallback model in order, its deployments from its first, as many.
    pub fn chains(&self, deployments: &[Routed]) -> Vec<Chain> {
        let tries = usize::try_from(self.num_retries)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        let of = |name: &str| -> Vec<usize> {
            (0..deployments.len())
                .filter(|&i| deployments[i].deployment.model_name == name)
                .collect()
        };
        (0..deployments.len())
            .map(|start| {
                let name = &deployments[start].deployment.model_name;
                let own = of(name);
                let at = own.iter().position(|&i| i == start).unwrap_or(0);
                let mut members: Vec<usize> = own
                    .iter()
                    .cycle()
                    .skip(at)
                    .take(own.len().min(tries))
                    .copied()
                    .collect();
                for fallback in self.fallbacks.get(name).into_iter().flatten() {
                    members.extend(of(fallback).into_iter().take(tries));
                }
                Chain { start, members }
            })
            .collect()
    }
}

/// With retries, a request may be sent to any deployment of its model: they must all take
/// it in one shape (refused at start, naming the second shape's entry, rather than a
/// retry answered 500).
fn one_shape_per_model(deployments: &[Routed]) -> Result<(), ModelListError> {
    for (i, d) in deployments.iter().enumerate() {
        let first = deployments
            .iter()
            .find(|e| e.deployment.model_name == d.deployment.model_name);
        if first.is_some_and(|f| !same_shape(f.deployment.provider, d.deployment.provider)) {
            let problem = format!(
                "serves {:?} in another provider's shape than its first deployment \
                 (anthropic/ against openai/ or azure/): with num_retries, a retry may go to \
                 either; give them different model_names, or num_retries: 0",
                d.deployment.model_name
            );
            return Err(field(
                &format!("model_list[{i}].litellm_params.model"),
                &problem,
            ));
        }
    }
    Ok(())
}

/// `[{"gpt-4o": ["gpt-4o-mini"]}, …]`: every name a model of the list, none its own
/// fallback, none listed twice.
fn fallbacks(
    at: &str,
    value: serde_norway::Value,
    deployments: &[Routed],
) -> Result<BTreeMap<String, Vec<String>>, ModelListError> {
    let shape = || field(at, "must be a list of {model: [fallback models]} mappings");
    let serde_norway::Value::Sequence(items) = value else {
        return Err(shape());
    };
    let known = |name: &str| deployments.iter().any(|d| d.deployment.model_name == name);
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, item) in items.into_iter().enumerate() {
        let serde_norway::Value::Mapping(map) = item else {
            return Err(shape());
        };
        for (model, list) in map {
            let Some(model) = model.as_str().map(str::to_owned) else {
                return Err(shape());
            };
            let here = format!("{at}[{i}].{model}");
            if !known(&model) {
                return Err(field(&here, "names no model_name of the model list"));
            }
            if out.contains_key(&model) {
                return Err(field(&here, "is given twice"));
            }
            let serde_norway::Value::Sequence(list) = list else {
                return Err(field(&here, "must be a list of model names"));
            };
            let mut names: Vec<String> = Vec::new();
            for name in list {
                let Some(name) = name.as_str().map(str::to_owned) else {
                    return Err(field(&here, "must be a list of model names"));
                };
                if name == model {
                    return Err(field(&here, "names the model itself"));
                }
                if !known(&name) {
                    let problem = format!("{name:?} is no model_name of the model list");
                    return Err(field(&here, &problem));
                }
                if names.contains(&name) {
                    return Err(field(&here, &format!("names {name:?} twice")));
                }
                let providers = |model: &str| -> Vec<Provider> {
                    deployments
                        .iter()
                        .filter(|d| d.deployment.model_name == model)
                        .map(|d| d.deployment.provider)
                        .collect()
                };
                let (from, to) = (providers(&model), providers(&name));
                if from.iter().any(|a| to.iter().any(|b| !same_shape(*a, *b))) {
                    let problem = format!(
                        "{name:?} is served in another provider's shape than {model:?} \
                         (anthropic/ against openai/ or azure/): livegate does not translate \
                         a request between them"
                    );
                    return Err(field(&here, &problem));
                }
                names.push(name);
            }
            out.insert(model, names);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
