//! One try of a request at one deployment of its chain: what the filter, running as an
//! upstream HTTP filter of the chain's aggregate cluster, makes of the request for the
//! deployment Envoy picked for this try (its Host, path, credential and body `model`).
//! Envoy's retries walk the chain; each try passes here again (docs/architecture.md,
//! "Fallbacks").

use std::collections::BTreeMap;

use livegate_contract::deployment::{Deployment, DEPLOYMENT_HEADER};
use serde::Deserialize;

use crate::host_env::Secret;
use crate::model_body::requested_model;
use crate::providers::{outbound, Unroutable, AZURE_KEY_HEADER};

/// The request header carrying the client's normal path and query from the filter to each
/// try (the `:path` a try sends is the deployment's); removed before a provider sees it.
pub const CLIENT_PATH_HEADER: &str = "x-livegate-client-path";
/// The response header naming the deployment that answered a try: read and removed by
/// the filter on the listener, so it reaches the spend record and never the client.
pub const ANSWERED_BY_HEADER: &str = "x-livegate-answered-by";
/// Where Envoy's endpoint metadata names a deployment: `filter_metadata.livegate.deployment`
/// of the endpoint (`xds.upstream_host_metadata`), set on each deployment's cluster.
pub const HOST_METADATA_PATH: [&str; 5] = [
    "xds",
    "upstream_host_metadata",
    "filter_metadata",
    "livegate",
    "deployment",
];

/// Every header a provider reads a credential from: each try sets only its own.
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", AZURE_KEY_HEADER, "x-api-key"];

/// The plugin configuration of the filter as an upstream filter: `{"role": "attempt", …}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptConfig {
    pub role: String,
    pub deployments: Vec<Deployment>,
    /// Deployment route → the `:authority` its provider wants.
    pub authorities: BTreeMap<String, String>,
    /// The deployments' keys, from the VM's environment (never the configuration).
    #[serde(skip)]
    pub provider_keys: BTreeMap<String, Secret>,
}

/// Why the attempt configuration was refused: names the field or variable, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttemptConfigError {
    #[error("attempt configuration: {0}")]
    Shape(String),
    #[error("attempt configuration: {0} is not set in the VM: list it under vm_config.environment_variables.host_env_keys")]
    Unset(String),
}

/// Whether a plugin configuration is the upstream (attempt) role's.
pub fn is_attempt_config(raw: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Role {
        role: Option<String>,
    }
    serde_json::from_slice::<Role>(raw).is_ok_and(|r| r.role.as_deref() == Some("attempt"))
}

impl AttemptConfig {
    pub fn from_host(
        raw: &[u8],
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<AttemptConfig, AttemptConfigError> {
        let value: serde_json::Value =
            serde_json::from_slice(raw).map_err(|e| AttemptConfigError::Shape(e.to_string()))?;
        let mut config: AttemptConfig = serde_path_to_error::deserialize(value)
            .map_err(|e| AttemptConfigError::Shape(format!("{}: {}", e.path(), e.inner())))?;
        for d in &config.deployments {
            if !config.authorities.contains_key(&d.route) {
                let why = format!("authorities: names no authority for {}", d.route);
                return Err(AttemptConfigError::Shape(why));
            }
            let Some(name) = &d.api_key_env else { continue };
            let value = get(name)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic()))
                .ok_or_else(|| AttemptConfigError::Unset(name.clone()))?;
            config
                .provider_keys
                .insert(name.clone(), Secret::new(value));
        }
        Ok(config)
    }
}

/// What one try sends: headers to set and to remove (never logged: they hold a key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Try<'a> {
    pub deployment: &'a Deployment,
    pub set: Vec<(&'static str, String)>,
    pub remove: Vec<&'static str>,
}

/// Why a try cannot be shaped: the request is answered 500 rather than sent wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TryError {
    #[error("no deployment named {0:?} in the attempt configuration")]
    UnknownDeployment(String),
    #[error("the request carries no client path")]
    NoClientPath,
    #[error(transparent)]
    Unroutable(#[from] Unroutable),
}

/// The try of the request that went to `client_path` (normal path and query) at the
/// deployment `route`; `client_version`: the request names its own `anthropic-version`.
pub fn shape<'a>(
    config: &'a AttemptConfig,
    route: &str,
    client_path: Option<&str>,
    client_version: bool,
) -> Result<Try<'a>, TryError> {
    let deployment = config
        .deployments
        .iter()
        .find(|d| d.route == route)
        .ok_or_else(|| TryError::UnknownDeployment(route.to_owned()))?;
    let client_path = client_path.ok_or(TryError::NoClientPath)?;
    let (path, query) = client_path.split_at(client_path.find('?').unwrap_or(client_path.len()));
    let out = outbound(
        deployment,
        path,
        query,
        &config.provider_keys,
        client_version,
    )?;
    let mut set: Vec<(&'static str, String)> = out
        .set
        .into_iter()
        .filter(|(name, _)| *name != DEPLOYMENT_HEADER)
        .collect();
    set.push((":path", out.path));
    if let Some(authority) = config.authorities.get(route) {
        set.push((":authority", authority.clone()));
    }
    let mut remove = vec![CLIENT_PATH_HEADER];
    remove.extend(
        CREDENTIAL_HEADERS
            .iter()
            .filter(|h| !set.iter().any(|(name, _)| name == *h)),
    );
    Ok(Try {
        deployment,
        set,
        remove,
    })
}

/// The body with its `model` naming `deployment`'s; `None`: unchanged (already its, or no
/// JSON model to replace: the provider answers such a body itself).
pub fn body_for(body: &[u8], deployment: &Deployment) -> Option<Vec<u8>> {
    let requested = requested_model(body).ok()?;
    if requested.name == deployment.model {
        return None;
    }
    requested.replaced(body, &deployment.model)
}

#[cfg(test)]
mod tests;
