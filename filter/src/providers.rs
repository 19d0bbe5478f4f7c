//! Which deployment of the model list a request goes to, and what its provider wants of
//! it: the route's header, the path, the credential headers, the model named in the body.

use std::collections::BTreeMap;

use livegate_contract::deployment::{Deployment, Provider, ANTHROPIC_VERSION, DEPLOYMENT_HEADER};

use crate::host_env::Secret;
use crate::model_body::route;

/// Azure's credential header: a client's never reaches a provider.
pub const AZURE_KEY_HEADER: &str = "api-key";
pub const ANTHROPIC_VERSION_HEADER: &str = "anthropic-version";

/// The request as the chosen deployment receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound<'a> {
    pub deployment: &'a Deployment,
    /// The `:path` sent to the provider.
    pub path: String,
    /// Headers to set (the route's, the credential): never shown to a client or logged.
    pub set: Vec<(&'static str, String)>,
}

/// Why a request has no deployment to go to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unroutable {
    #[error("Invalid model name passed in model={0}. Call /v1/models to view available models for your key.")]
    UnknownModel(String),
    #[error("model={model} is served by {provider} deployments, which livegate does not translate {route} to yet")]
    Shape {
        model: String,
        provider: &'static str,
        route: String,
    },
    #[error("{route} names its model in the path; with a model list, call /v1/chat/completions (or /v1/completions, /v1/embeddings) with model={model} in the body")]
    PathModel { model: String, route: String },
}

/// The deployment of `model_name` for this `turn` (a per-worker counter): each one in turn,
/// as often as its weight says, among the entries sharing the name.
pub fn pick<'a>(
    deployments: &'a [Deployment],
    model_name: &str,
    turn: u64,
) -> Option<&'a Deployment> {
    let matching = || deployments.iter().filter(|d| d.model_name == model_name);
    let total: u64 = matching().map(|d| u64::from(d.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut slot = turn % total;
    for d in matching() {
        let weight = u64::from(d.weight);
        if slot < weight {
            return Some(d);
        }
        slot -= weight;
    }
    None
}

/// The request to `deployment`: `path` is the client's normal path, `query` its `?…` (or
/// empty), `keys` the provider keys from the VM's environment, `client_version` whether the
/// client named its own `anthropic-version`.
pub fn outbound<'a>(
    deployment: &'a Deployment,
    path: &str,
    query: &str,
    keys: &BTreeMap<String, Secret>,
    client_version: bool,
) -> Result<Outbound<'a>, Unroutable> {
    let route_path = route(path);
    let operation = route_path.strip_prefix("/v1").unwrap_or(route_path);
    let prefix = deployment.path_prefix.as_str();
    let shape = || Unroutable::Shape {
        model: deployment.model_name.clone(),
        provider: deployment.provider.prefix(),
        route: route_path.to_owned(),
    };
    let key = deployment
        .api_key_env
        .as_ref()
        .and_then(|name| keys.get(name))
        .map(Secret::expose);
    let mut set = vec![(DEPLOYMENT_HEADER, deployment.route.clone())];
    let path = match deployment.provider {
        Provider::Openai => {
            if !matches!(
                operation,
                "/chat/completions" | "/completions" | "/embeddings" | "/responses"
            ) {
                return Err(shape());
            }
            if let Some(key) = key {
                set.push(("authorization", format!("Bearer {key}")));
            }
            format!("{prefix}{operation}{query}")
        }
        Provider::Azure => {
            if !matches!(
                operation,
                "/chat/completions" | "/completions" | "/embeddings"
            ) {
                return Err(shape());
            }
            if let Some(key) = key {
                set.push((AZURE_KEY_HEADER, key.to_owned()));
            }
            let version = deployment.api_version.as_deref().unwrap_or_default();
            let model = crate::path::encode_segment(&deployment.model);
            format!("{prefix}/openai/deployments/{model}{operation}?api-version={version}")
        }
        Provider::Anthropic => {
            if operation != "/messages" {
                return Err(shape());
            }
            if let Some(key) = key {
                set.push(("x-api-key", key.to_owned()));
            }
            if !client_version {
                set.push((ANTHROPIC_VERSION_HEADER, ANTHROPIC_VERSION.to_owned()));
            }
            format!("{prefix}/v1/messages{query}")
        }
    };
    Ok(Outbound {
        deployment,
        path,
        set,
    })
}

/// `GET /v1/models` in OpenAI's list shape: each `model_name` once, in the list's order,
/// those `may_use` lets through.
pub fn model_list_body(deployments: &[Deployment], may_use: impl Fn(&str) -> bool) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for d in deployments {
        if !seen.contains(&d.model_name.as_str()) && may_use(&d.model_name) {
            seen.push(&d.model_name);
        }
    }
    let data: Vec<serde_json::Value> = seen
        .iter()
        .map(|id| {
            serde_json::json!({"id": id, "object": "model", "created": 1_677_610_602, "owned_by": "openai"})
        })
        .collect();
    serde_json::json!({"object": "list", "data": data}).to_string()
}

/// The paths answered from the model list.
pub fn is_models_path(path: &str) -> bool {
    matches!(route(path), "/v1/models" | "/models")
}

#[cfg(test)]
mod tests;
