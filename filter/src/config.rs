//! The plugin configuration: typed, defaulted, parsed and validated once per root context.

use crate::host_env::{HostEnv, Secret};
use livegate_contract::deployment::Deployment;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Everything the operator can set; every field is optional (see `filter/README.md`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub liveness_paths: Vec<String>,
    pub passthrough_prefixes: Vec<String>,
    /// Protected routes that name no model and that a key with a `models` restriction may
    /// still use (exact, or a prefix when the entry ends in `/`). Every other route without
    /// a model the filter can read refuses such a key.
    pub model_free_paths: Vec<String>,
    pub control_plane_cluster: String,
    pub control_plane_authority: String,
    pub auth_check_path: String,
    pub auth_timeout_ms: u64,
    /// Bytes of request bodies each worker holds while their keys are being checked; the
    /// request whose body would go past is answered 503 (`unverified`).
    pub max_unverified_body_bytes: u64,
    /// The control plane's change feed; polled by one worker per Envoy.
    pub changes_path: String,
    /// How often the change feed is polled; 0 turns it off (revocations then reach this
    /// Envoy only when its cached decisions expire).
    pub change_poll_ms: u64,
    pub cache: CacheConfig,
    pub failure_mode: FailureMode,
    pub retry_after_seconds: u32,
    pub upstream_authorization: Option<String>,
    pub metering: MeteringConfig,
    /// What the filter enforces of a key's rate limits itself: while no control plane answers.
    pub rate_limits: RateLimitsConfig,
    /// The model list's deployments (`cargo xtask up --config`): a model route's request
    /// goes to one of its model's, with that provider's credential. Empty: every protected
    /// request goes to the one upstream, as before.
    pub deployments: Vec<Deployment>,
    /// The deployments' keys, by variable name: from the VM's environment (`host_env_keys`),
    /// never from the configuration.
    #[serde(skip)]
    pub provider_keys: BTreeMap<String, crate::host_env::Secret>,
    /// Sent on every call to the control plane; from the VM's environment, never from the
    /// configuration (`host_env`).
    #[serde(skip)]
    pub internal_token: crate::host_env::Secret,
}

/// Response metering and the delivery of spend records to the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeteringConfig {
    /// Meter the responses of admitted requests and send one spend record per request.
    pub enabled: bool,
    /// Add `stream_options.include_usage: true` to streamed OpenAI completions requests.
    pub include_usage: bool,
    /// `:path` of the spend records on the control plane.
    pub records_path: String,
    /// Records each worker holds while the control plane cannot take them; beyond, new
    /// records are dropped and counted.
    pub max_queued_records: u64,
    /// Records per `POST`, 1 to the contract's `MAX_BATCH_RECORDS`.
    pub batch_records: u64,
    /// How long a batch may take to be acknowledged before it is sent again.
    pub send_timeout_ms: u64,
}

/// The filter's own hold on keys with rate limits, while no control plane answers (the
/// control planes count them whenever one does).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// Each Envoy worker admits at most this share of a key's limit per 60 s while no
    /// control plane answers: `max(1, floor(share × limit))`, in (0, 1]. With E Envoys of W
    /// workers, a fleet admits at most E·W times that.
    pub outage_share: f64,
}

// JSON has no NaN, and validation keeps the share in (0, 1]: equality is total.
impl Eq for RateLimitsConfig {}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        RateLimitsConfig { outage_share: 0.25 }
    }
}

/// Sizes and lifetimes of the per-worker decision cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    pub max_entries: u64,
    pub allow_ttl_ms: u64,
    pub deny_ttl_ms: u64,
    pub stale_if_error_ms: u64,
}

/// What to do when the control plane cannot answer and no stale allow exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// Refuse with 503: the safe default.
    #[default]
    Closed,
    /// Let the request through, marked, without identity (explicit opt-in).
    Open,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            liveness_paths: strings(&["/health/liveliness", "/health/liveness"]),
            passthrough_prefixes: strings(&[
                "/health/readiness",
                "/key/",
                "/team/",
                "/user/",
                "/spend/",
                "/global/spend",
                "/model/info",
                "/v1/model/info",
            ]),
            // Listing the models spends nothing (LiteLLM lists a restricted key's own).
            model_free_paths: strings(&["/v1/models", "/models"]),
            control_plane_cluster: "livegate_control_plane".into(),
            control_plane_authority: "livegate-control-plane".into(),
            auth_check_path: livegate_contract::AUTH_CHECK_PATH.into(),
            auth_timeout_ms: 200,
            max_unverified_body_bytes: 32 * 1024 * 1024,
            changes_path: livegate_contract::CHANGES_PATH.into(),
            change_poll_ms: 250,
            cache: CacheConfig::default(),
            failure_mode: FailureMode::Closed,
            retry_after_seconds: 5,
            upstream_authorization: None,
            metering: MeteringConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            deployments: Vec::new(),
            provider_keys: BTreeMap::new(),
            internal_token: crate::host_env::Secret::default(),
        }
    }
}

impl Default for MeteringConfig {
    fn default() -> Self {
        MeteringConfig {
            enabled: true,
            include_usage: true,
            records_path: livegate_contract::spend::SPEND_RECORDS_PATH.into(),
            max_queued_records: 10_000,
            batch_records: 100,
            send_timeout_ms: 5_000,
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: 10_000,
            allow_ttl_ms: 60_000,
            deny_ttl_ms: 2_000,
            stale_if_error_ms: 300_000,
        }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

/// The longest auth check we allow: the hot path must never hang on the control plane.
pub const MAX_AUTH_TIMEOUT_MS: u64 = 60_000;

/// The slowest change-feed poll allowed: a revocation must not wait longer than this.
pub const MAX_CHANGE_POLL_MS: u64 = 60_000;

/// The root's tick when the change feed is off but metering is on (the feed's default).
pub const METERING_TICK_MS: u64 = 250;

/// The most records one worker may queue (a record is a few hundred bytes).
pub const MAX_QUEUED_RECORDS: u64 = 1_000_000;

/// Why a configuration was refused; the text always names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("not valid JSON: {0}")]
    Syntax(String),
    #[error("{0}")]
    Shape(String),
    #[error("{field}: {problem}")]
    Value { field: String, problem: String },
}

impl Config {
    /// Parses the raw plugin configuration; absent or blank means all defaults.
    pub fn parse(raw: Option<&[u8]>) -> Result<Config, ConfigError> {
        let raw = raw.unwrap_or_default();
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(Config::default());
        }
        // Two steps so that type errors carry a field path instead of a line/column.
        let value: serde_json::Value =
            serde_json::from_slice(raw).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        let config: Config = serde_path_to_error::deserialize(value).map_err(shape_error)?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as the root takes it from the host: the plugin's JSON, with its
    /// secrets from the VM's environment (`host_env_keys`, read through `env`), never from
    /// the configuration.
    pub fn from_host(
        raw: Option<&[u8]>,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = Config::parse(raw)?;
        let env = HostEnv::read(&get).map_err(|e| ConfigError::Shape(e.to_string()))?;
        config.upstream_authorization = env
            .upstream_authorization(config.upstream_authorization.as_deref())
            .map_err(|e| ConfigError::Shape(e.to_string()))?;
        config.internal_token = env.internal_token;
        for deployment in &config.deployments {
            let Some(name) = &deployment.api_key_env else {
                continue;
            };
            let value = get(name).filter(|v| !v.is_empty()).ok_or_else(|| {
                ConfigError::Shape(format!(
                    "{name} (the key of deployment {}) is not set in the VM: list it under \
                     vm_config.environment_variables.host_env_keys and set it in Envoy's environment",
                    deployment.route
                ))
            })?;
            if !value.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError::Shape(format!(
                    "{name} must be visible ASCII without spaces"
                )));
            }
            config
                .provider_keys
                .insert(name.clone(), Secret::new(value));
        }
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (i, path) in self.liveness_paths.iter().enumerate() {
            require_path(&format!("liveness_paths[{i}]"), path)?;
        }
        for (i, prefix) in self.passthrough_prefixes.iter().enumerate() {
            let field = format!("passthrough_prefixes[{i}]");
            require_path(&field, prefix)?;
            if prefix == "/" {
                return Err(invalid(
                    &field,
                    "\"/\" would let every request skip authentication",
                ));
            }
        }
        for (i, path) in self.model_free_paths.iter().enumerate() {
            let field = format!("model_free_paths[{i}]");
            require_path(&field, path)?;
            if path == "/" {
                return Err(invalid(
                    &field,
                    "\"/\" would let a key restricted to some models use every route",
                ));
            }
        }
        require_header_value("control_plane_cluster", &self.control_plane_cluster)?;
        require_header_value("control_plane_authority", &self.control_plane_authority)?;
        require_path("auth_check_path", &self.auth_check_path)?;
        require_path("changes_path", &self.changes_path)?;
        if self.change_poll_ms > MAX_CHANGE_POLL_MS {
            let problem = format!("must be at most {MAX_CHANGE_POLL_MS} (0 turns the feed off)");
            return Err(invalid("change_poll_ms", &problem));
        }
        if !(1..=MAX_AUTH_TIMEOUT_MS).contains(&self.auth_timeout_ms) {
            let problem = format!("must be between 1 and {MAX_AUTH_TIMEOUT_MS}");
            return Err(invalid("auth_timeout_ms", &problem));
        }
        if self.cache.max_entries == 0 {
            return Err(invalid("cache.max_entries", "must be greater than 0"));
        }
        if let Some(value) = &self.upstream_authorization {
            require_header_value("upstream_authorization", value)?;
        }
        self.metering.validate()?;
        self.rate_limits.validate()?;
        self.validate_deployments()
    }

    fn validate_deployments(&self) -> Result<(), ConfigError> {
        if self.deployments.is_empty() {
            return Ok(());
        }
        if self.failure_mode == FailureMode::Open {
            // An unchecked request has no model read, so no deployment to go to.
            return Err(invalid(
                "failure_mode",
                "open is not implemented yet with deployments",
            ));
        }
        for (i, d) in self.deployments.iter().enumerate() {
            require_header_value(&format!("deployments[{i}].model_name"), &d.model_name)?;
            require_header_value(&format!("deployments[{i}].model"), &d.model)?;
            require_header_value(&format!("deployments[{i}].route"), &d.route)?;
            if d.weight == 0 {
                return Err(invalid(
                    &format!("deployments[{i}].weight"),
                    "must be at least 1",
                ));
            }
            if !(d.path_prefix.is_empty() || d.path_prefix.starts_with('/')) {
                return Err(invalid(
                    &format!("deployments[{i}].path_prefix"),
                    "must be empty or start with '/'",
                ));
            }
            if self.deployments[..i].iter().any(|o| o.route == d.route) {
                return Err(invalid(&format!("deployments[{i}].route"), "is used twice"));
            }
        }
        Ok(())
    }

    /// The root context's tick: the change feed's period, or, with the feed off and
    /// metering on, `METERING_TICK_MS` (records are sent on ticks). `None`: no tick.
    pub fn tick_ms(&self) -> Option<u64> {
        if self.change_poll_ms > 0 {
            Some(self.change_poll_ms)
        } else {
            self.metering.enabled.then_some(METERING_TICK_MS)
        }
    }
}

impl MeteringConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        require_path("metering.records_path", &self.records_path)?;
        if !(1..=MAX_QUEUED_RECORDS).contains(&self.max_queued_records) {
            let problem = format!("must be between 1 and {MAX_QUEUED_RECORDS}");
            return Err(invalid("metering.max_queued_records", &problem));
        }
        let max_batch = livegate_contract::spend::MAX_BATCH_RECORDS as u64;
        if !(1..=max_batch).contains(&self.batch_records) {
            let problem = format!("must be between 1 and {max_batch}");
            return Err(invalid("metering.batch_records", &problem));
        }
        if !(1..=MAX_AUTH_TIMEOUT_MS).contains(&self.send_timeout_ms) {
            let problem = format!("must be between 1 and {MAX_AUTH_TIMEOUT_MS}");
            return Err(invalid("metering.send_timeout_ms", &problem));
        }
        Ok(())
    }
}

impl RateLimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let share = self.outage_share;
        // Written so that NaN fails too (it cannot come from JSON, but nothing relies on that).
        if !(share > 0.0 && share <= 1.0) {
            return Err(invalid(
                "rate_limits.outage_share",
                "must be greater than 0 and at most 1",
            ));
        }
        Ok(())
    }
}

fn shape_error(e: serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if path == "." {
        ConfigError::Shape(inner.to_string())
    } else {
        ConfigError::Shape(format!("{path}: {inner}"))
    }
}

fn invalid(field: &str, problem: &str) -> ConfigError {
    ConfigError::Value {
        field: field.to_string(),
        problem: problem.to_string(),
    }
}

fn require_path(field: &str, value: &str) -> Result<(), ConfigError> {
    if !value.starts_with('/') {
        return Err(invalid(field, &format!("{value:?} must start with '/'")));
    }
    require_header_value(field, value)
}

/// Values that end up in HTTP headers must be non-empty visible text.
fn require_header_value(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.bytes().any(|b| b.is_ascii_control()) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
