//! The operator's model list, in LiteLLM's `config.yaml` format: parsed, refused where it
//! asks for what livegate does not do, validated, and turned into deployments (the filter's
//! table) with their transport (Envoy's clusters). Native only (feature `model-list`).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::deployment::{Deployment, Provider};

mod router;
pub use router::{Chain, Router, DEFAULT_NUM_RETRIES};

/// LiteLLM's default request timeout, seconds.
pub const DEFAULT_TIMEOUT_SECONDS: f64 = 600.0;

/// Why a model list was refused: always with the field's path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelListError {
    #[error("model list: {0}")]
    Parse(String),
    #[error("model list: {field}: {problem}")]
    Field { field: String, problem: String },
    #[error("model list: {field} is not implemented yet (livegate refuses it rather than ignore it){why}")]
    NotImplemented { field: String, why: String },
    #[error("model list: {field}: the environment variable {name} is not set")]
    Unset { field: String, name: String },
}

/// The whole file. Only `model_list` is read; the other sections LiteLLM knows are named so
/// that each is refused by name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    model_list: Vec<Entry>,
    router_settings: Option<serde_norway::Value>,
    litellm_settings: Option<serde_norway::Value>,
    general_settings: Option<serde_norway::Value>,
    environment_variables: Option<serde_norway::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    model_name: String,
    litellm_params: Params,
    model_info: Option<ModelInfo>,
}

/// A deployment's `model_info`: its prices in USD per token, each over the control plane's
/// price file for this deployment only (LiteLLM's keys). Any other key of LiteLLM's
/// `model_info` (`id`, `mode`, `max_tokens`, …) is refused by name: none is enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_cost_per_token: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_cost_per_token: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_read_input_token_cost: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_token_cost: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_cost_per_reasoning_token: Option<f64>,
}

impl ModelInfo {
    /// Each price by its LiteLLM name.
    pub fn prices(&self) -> [(&'static str, Option<f64>); 5] {
        [
            ("input_cost_per_token", self.input_cost_per_token),
            ("output_cost_per_token", self.output_cost_per_token),
            (
                "cache_read_input_token_cost",
                self.cache_read_input_token_cost,
            ),
            (
                "cache_creation_input_token_cost",
                self.cache_creation_input_token_cost,
            ),
            (
                "output_cost_per_reasoning_token",
                self.output_cost_per_reasoning_token,
            ),
        ]
    }

    /// True when it names no price (`model_info: {}`).
    pub fn is_empty(&self) -> bool {
        self.prices().iter().all(|(_, p)| p.is_none())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    model: String,
    api_base: Option<String>,
    api_key: Option<String>,
    api_version: Option<String>,
    timeout: Option<f64>,
    weight: Option<u32>,
}

/// How Envoy reaches a deployment: its cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Transport {
    /// `https`: TLS with SNI and certificate checks for `host`.
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The request timeout of its route, seconds.
    pub timeout_seconds: f64,
}

/// A deployment and how to reach it.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub deployment: Deployment,
    pub transport: Transport,
    /// Its own prices (`model_info`); empty: the price file's.
    pub model_info: ModelInfo,
    /// `litellm_params.timeout` as written (`None`: LiteLLM's default), for `/model/info`.
    pub timeout: Option<f64>,
}

impl Routed {
    /// The api_base it reaches, as a URL without a trailing slash (never a credential:
    /// one in the URL is refused).
    pub fn api_base(&self) -> String {
        let t = &self.transport;
        let (scheme, default_port) = if t.tls { ("https", 443) } else { ("http", 80) };
        let port = if t.port == default_port {
            String::new()
        } else {
            format!(":{}", t.port)
        };
        format!("{scheme}://{}{port}{}", t.host, self.deployment.path_prefix)
    }
}

/// A parsed, validated model list.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelList {
    pub deployments: Vec<Routed>,
    /// `router_settings` / `litellm_settings`: retries and fallbacks.
    pub router: Router,
}

impl ModelList {
    pub fn parse(text: &str) -> Result<ModelList, ModelListError> {
        let de = serde_norway::Deserializer::from_str(text);
        let file: File = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            ModelListError::Parse(format!("{path}: {}", e.into_inner()))
        })?;
        for (field, present) in [
            ("general_settings", file.general_settings.is_some()),
            (
                "environment_variables",
                file.environment_variables.is_some(),
            ),
        ] {
            if present {
                return Err(not_implemented(field, ""));
            }
        }
        if file.model_list.is_empty() {
            return Err(field("model_list", "lists no deployment"));
        }
        let deployments = file
            .model_list
            .into_iter()
            .enumerate()
            .map(|(i, entry)| entry.resolve(i))
            .collect::<Result<Vec<_>, _>>()?;
        let router =
            Router::from_sections(file.router_settings, file.litellm_settings, &deployments)?;
        Ok(ModelList {
            deployments,
            router,
        })
    }

    /// The provider keys the filter's VM must be given, read from `env` now: an unset
    /// variable is an error naming it (and the entry). Each variable once.
    pub fn credentials(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<BTreeMap<String, String>, ModelListError> {
        let mut found = BTreeMap::new();
        for (i, routed) in self.deployments.iter().enumerate() {
            let Some(name) = &routed.deployment.api_key_env else {
                continue;
            };
            match env(name).filter(|v| !v.is_empty()) {
                Some(value) => {
                    found.insert(name.clone(), value);
                }
                None => {
                    return Err(ModelListError::Unset {
                        field: format!("model_list[{i}].litellm_params.api_key"),
                        name: name.clone(),
                    })
                }
            }
        }
        Ok(found)
    }

    /// The filter's table.
    pub fn table(&self) -> Vec<Deployment> {
        self.deployments
            .iter()
            .map(|r| r.deployment.clone())
            .collect()
    }
}

impl Entry {
    fn resolve(self, i: usize) -> Result<Routed, ModelListError> {
        let at = |name: &str| format!("model_list[{i}].{name}");
        let params_at = |name: &str| format!("model_list[{i}].litellm_params.{name}");
        let model_info = self.model_info.unwrap_or_default();
        for (name, price) in model_info.prices() {
            if price.is_some_and(|p| !(p.is_finite() && p >= 0.0)) {
                let problem = "must be a finite, non-negative number (USD per token)";
                return Err(field(&at(&format!("model_info.{name}")), problem));
            }
        }
        if self.model_name.is_empty() || !visible(&self.model_name) {
            return Err(field(&at("model_name"), "must be non-empty visible text"));
        }
        let p = self.litellm_params;
        let (prefix, model) = p.model.split_once('/').ok_or_else(|| {
            field(
                &params_at("model"),
                "must be provider/model: openai/…, azure/… or anthropic/…",
            )
        })?;
        let provider = Provider::from_prefix(prefix).ok_or_else(|| {
            field(
                &params_at("model"),
                &format!("provider {prefix:?} is not supported (openai, azure, anthropic)"),
            )
        })?;
        if model.is_empty() || !visible(model) {
            return Err(field(
                &params_at("model"),
                "names no model after the provider",
            ));
        }
        let base = match (&p.api_base, provider) {
            (Some(base), _) => base.as_str(),
            (None, Provider::Openai) => "https://api.openai.com/v1",
            (None, Provider::Anthropic) => "https://api.anthropic.com",
            (None, Provider::Azure) => {
                return Err(field(&params_at("api_base"), "is required for azure/"))
            }
        };
        let (tls, host, port, path_prefix) =
            api_base(base).map_err(|problem| field(&params_at("api_base"), &problem))?;
        let api_key_env = match p.api_key {
            None => None,
            Some(key) => match key.strip_prefix("os.environ/") {
                Some(name) if valid_env_name(name) => Some(name.to_owned()),
                Some(_) => {
                    let problem = "os.environ/NAME needs a variable name ([A-Za-z_][A-Za-z0-9_]*)";
                    return Err(field(&params_at("api_key"), problem));
                }
                // Never echo what may be a key.
                None => {
                    let problem = "must be os.environ/NAME: a key written in the file would \
                                   end up in Envoy's configuration";
                    return Err(field(&params_at("api_key"), problem));
                }
            },
        };
        let api_version = match (p.api_version, provider) {
            (Some(v), Provider::Azure) if !v.is_empty() && v.bytes().all(query_safe) => Some(v),
            (Some(_), Provider::Azure) => {
                return Err(field(&params_at("api_version"), "must be like 2024-10-21"))
            }
            (None, Provider::Azure) => {
                return Err(field(&params_at("api_version"), "is required for azure/"))
            }
            (Some(_), _) => {
                return Err(field(
                    &params_at("api_version"),
                    "is for azure/ deployments only",
                ))
            }
            (None, _) => None,
        };
        let timeout_seconds = p.timeout.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
        if !(timeout_seconds > 0.0 && timeout_seconds <= 86_400.0) {
            return Err(field(
                &params_at("timeout"),
                "must be seconds in (0, 86400]",
            ));
        }
        let weight = p.weight.unwrap_or(1);
        if weight == 0 {
            return Err(field(&params_at("weight"), "must be at least 1"));
        }
        Ok(Routed {
            deployment: Deployment {
                model_name: self.model_name,
                provider,
                model: model.to_owned(),
                route: format!("livegate_deployment_{i}"),
                path_prefix,
                api_key_env,
                api_version,
                weight,
            },
            transport: Transport {
                tls,
                host,
                port,
                timeout_seconds,
            },
            model_info,
            timeout: p.timeout,
        })
    }
}

/// `http(s)://host[:port][/path]` → (tls, host, port, path without trailing slash).
fn api_base(text: &str) -> Result<(bool, String, u16, String), String> {
    let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    let tls = match url.scheme() {
        "https" => true,
        "http" => false,
        other => return Err(format!("scheme {other:?} is not http or https")),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(_)) => return Err("IPv6 addresses are not supported yet".into()),
        None => return Err("has no host".into()),
    };
    let port = url.port_or_known_default().ok_or("has no port")?;
    let path = url.path().trim_end_matches('/').to_owned();
    Ok((tls, host, port, path))
}

fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b == b'_' || b.is_ascii_alphabetic())
        && bytes.all(|b| b == b'_' || b.is_ascii_alphanumeric())
}

fn visible(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_graphic())
}

fn query_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'
}

fn field(name: &str, problem: &str) -> ModelListError {
    ModelListError::Field {
        field: name.to_owned(),
        problem: problem.to_owned(),
    }
}

fn not_implemented(name: &str, why: &str) -> ModelListError {
    ModelListError::NotImplemented {
        field: name.to_owned(),
        why: why.to_owned(),
    }
}

#[cfg(test)]
mod tests;
