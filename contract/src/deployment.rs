//! A deployment of a model at a provider, as the filter routes to it: the plain table that
//! the model list (`model_list`) becomes, carried in the plugin's JSON configuration.

use serde::{Deserialize, Serialize};

/// The request header naming the deployment a request goes to: set by the filter (a
/// client's is removed before any filter sees it), matched by the deployment's route.
pub const DEPLOYMENT_HEADER: &str = "x-livegate-deployment";

/// Anthropic's API version when the client names none (LiteLLM's default).
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Which provider's request shape and credential header a deployment wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// OpenAI, and any OpenAI-compatible server (vLLM, Ollama, a LiteLLM proxy):
    /// `authorization: Bearer`, `{api_base}/chat/completions`.
    Openai,
    /// Azure OpenAI: `api-key`, `{api_base}/openai/deployments/{model}/…?api-version=`.
    Azure,
    /// Anthropic: `x-api-key`, `anthropic-version`, `{api_base}/v1/messages`.
    Anthropic,
}

impl Provider {
    /// LiteLLM's prefix of `litellm_params.model`.
    pub fn prefix(self) -> &'static str {
        match self {
            Provider::Openai => "openai",
            Provider::Azure => "azure",
            Provider::Anthropic => "anthropic",
        }
    }

    pub fn from_prefix(prefix: &str) -> Option<Provider> {
        [Provider::Openai, Provider::Azure, Provider::Anthropic]
            .into_iter()
            .find(|p| p.prefix() == prefix)
    }
}

/// One entry of the model list, resolved: no secret in it (the credential is the name of
/// a variable in the filter's VM environment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// What clients ask for, and what keys' `models` name.
    pub model_name: String,
    pub provider: Provider,
    /// The provider's model, the prefix dropped (`openai/gpt-4o` → `gpt-4o`); Azure's
    /// deployment name.
    pub model: String,
    /// The value of [`DEPLOYMENT_HEADER`] its route matches (its cluster's name).
    pub route: String,
    /// The api_base's path, without a trailing slash (`/v1`; empty for none).
    #[serde(default)]
    pub path_prefix: String,
    /// The VM environment variable holding the provider's key (`os.environ/NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Azure's `api-version` query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Its share among the deployments of one `model_name` (LiteLLM's `weight`).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_reads_back_as_written_and_refuses_unknown_fields() {
        let d = Deployment {
            model_name: "gpt-4o".into(),
            provider: Provider::Azure,
            model: "prod-4o".into(),
            route: "livegate_deployment_0".into(),
            path_prefix: String::new(),
            api_key_env: Some("AZURE_API_KEY".into()),
            api_version: Some("2024-10-21".into()),
            weight: 2,
        };
        let text = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Deployment>(&text).unwrap(), d);
        let unknown = text.replace("\"weight\"", "\"wieght\"");
        let error = serde_json::from_str::<Deployment>(&unknown).unwrap_err();
        assert!(error.to_string().contains("wieght"), "{error}");
    }

    #[test]
    fn providers_are_named_by_litellm_s_prefixes() {
        for p in [Provider::Openai, Provider::Azure, Provider::Anthropic] {
            assert_eq!(Provider::from_prefix(p.prefix()), Some(p));
        }
        assert_eq!(Provider::from_prefix("bedrock"), None);
    }
}
