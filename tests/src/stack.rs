//! The whole local stack in one value: Postgres, control plane, upstream, Envoy.
//! `cargo xtask up` and the end-to-end tests start the same thing.

use std::path::PathBuf;

use crate::control_plane::ControlPlane;
use crate::demo_upstream::DemoUpstream;
use crate::envoy::{Endpoint, Envoy, EnvoyConfig, EnvoyLimits};
use crate::postgres::Postgres;
use crate::process::Scratch;

/// Which database the control plane uses.
#[derive(Debug, Clone)]
pub enum Database {
    /// A fresh cluster in a temporary directory (tests).
    Fresh,
    /// A cluster kept in a directory across runs, on a fixed port (`cargo xtask up`).
    Persistent { dir: PathBuf, port: u16 },
    /// Someone else's database, by URL (`DATABASE_URL`).
    External(String),
}

/// Where protected requests go.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// Nothing: the cluster points at a port nobody listens on.
    None,
    /// The built-in demo upstream.
    Demo,
    /// An API somebody else runs.
    External(Endpoint),
}

/// What to start, and on which ports (`None` = a free one).
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// `None`: no database and no control plane at all.
    pub database: Option<Database>,
    pub upstream: Upstream,
    pub master_key: String,
    pub control_plane_args: Vec<String>,
    /// Extra environment of the control plane (e.g. `RUST_LOG`).
    pub control_plane_env: Vec<(String, String)>,
    pub filter_config: String,
    pub listen_port: Option<u16>,
    pub admin_port: Option<u16>,
    pub probe_port: Option<u16>,
    /// Envoy's timeouts and connection limit.
    pub envoy_limits: EnvoyLimits,
    pub control_plane_port: Option<u16>,
    pub upstream_port: Option<u16>,
    pub concurrency: u16,
    /// Where logs and configs go (`None` = a temporary directory).
    pub state_dir: Option<PathBuf>,
    /// A model list's deployments (none: protected requests go to the one upstream).
    pub providers: crate::providers::Providers,
}

impl StackOptions {
    /// Envoy alone with the filter: no control plane, no Postgres, no upstream.
    pub fn envoy_only() -> StackOptions {
        StackOptions {
            database: None,
            upstream: Upstream::None,
            master_key: crate::control_plane::TEST_MASTER_KEY.to_string(),
            control_plane_args: Vec::new(),
            control_plane_env: Vec::new(),
            filter_config: "{}".to_string(),
            listen_port: None,
            admin_port: None,
            probe_port: None,
            envoy_limits: EnvoyLimits::default(),
            control_plane_port: None,
            upstream_port: None,
            concurrency: 1,
            state_dir: None,
            providers: crate::providers::Providers::default(),
        }
    }

    /// Everything, on free ports, with a fresh database and the demo upstream.
    pub fn full() -> StackOptions {
        StackOptions {
            database: Some(Database::Fresh),
            upstream: Upstream::Demo,
            ..StackOptions::envoy_only()
        }
    }
}

/// A running stack. Fields drop in order: Envoy first, the files last.
#[derive(Debug)]
pub struct Stack {
    pub envoy: Envoy,
    pub control_plane: Option<ControlPlane>,
    pub upstream: Option<DemoUpstream>,
    pub postgres: Option<Postgres>,
    pub scratch: Scratch,
    pub database_url: Option<String>,
    pub control_plane_port: u16,
    pub options: StackOptions,
}

impl Stack {
    pub fn start(options: StackOptions) -> anyhow::Result<Stack> {
        let scratch = match &options.state_dir {
            Some(dir) => Scratch::persistent(dir)?,
            None => Scratch::new("livegate-stack-")?,
        };
        let pick = |port: Option<u16>| port.map_or_else(crate::ports::free_port, Ok);
        let control_plane_port = pick(options.control_plane_port)?;

        let postgres = match &options.database {
            Some(Database::Fresh) => Some(Postgres::start()?),
            Some(Database::Persistent { dir, port }) => {
                Some(Postgres::start_in(Scratch::persistent(dir)?, *port)?)
            }
            Some(Database::External(_)) | None => None,
        };
        let database_url = match (&options.database, &postgres) {
            (Some(Database::External(url)), _) => Some(url.clone()),
            (_, Some(postgres)) => Some(postgres.url()),
            _ => None,
        };
        let control_plane = match &database_url {
            Some(url) => Some(start_control_plane(
                &options,
                url,
                control_plane_port,
                &scratch,
            )?),
            None => None,
        };

        let (upstream, upstream_endpoint) = match &options.upstream {
            Upstream::Demo => {
                let demo = DemoUpstream::start(options.upstream_port, scratch.path())?;
                let endpoint = Endpoint::loopback(demo.port());
                (Some(demo), endpoint)
            }
            Upstream::External(endpoint) => (None, endpoint.clone()),
            Upstream::None => (None, Endpoint::loopback(pick(options.upstream_port)?)),
        };

        let config = EnvoyConfig {
            listen_address: "127.0.0.1".to_string(),
            listen_port: pick(options.listen_port)?,
            probe_address: "127.0.0.1".to_string(),
            probe_port: pick(options.probe_port)?,
            limits: options.envoy_limits.clone(),
            admin_address: "127.0.0.1".to_string(),
            admin_port: pick(options.admin_port)?,
            control_plane: Endpoint::loopback(control_plane_port),
            more_control_planes: Vec::new(),
            upstream: upstream_endpoint,
            filter_config: options.filter_config.clone(),
            filter_wasm: crate::artifacts::filter_wasm(),
            concurrency: options.concurrency,
            internal_token: Some(crate::internal_token::internal_token().to_string()),
            providers: options.providers.clone(),
        };
        let envoy = Envoy::start(config, scratch.path())?;
        Ok(Stack {
            envoy,
            control_plane,
            upstream,
            postgres,
            scratch,
            database_url,
            control_plane_port,
            options,
        })
    }

    /// Starts the control plane again, same port and arguments, after it died or was killed.
    pub fn restart_control_plane(&mut self) -> anyhow::Result<()> {
        let url = self
            .database_url
            .clone()
            .ok_or_else(|| anyhow::anyhow!("this stack runs no control plane"))?;
        self.control_plane = None;
        let control_plane =
            start_control_plane(&self.options, &url, self.control_plane_port, &self.scratch)?;
        self.control_plane = Some(control_plane);
        Ok(())
    }

    /// The gateway's URL for `path` (Envoy's listener).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.envoy.url())
    }

    pub fn master_key(&self) -> &str {
        &self.options.master_key
    }

    /// An admin call through the gateway (Envoy routes it to the control plane).
    pub fn admin(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
        crate::http::admin_post(&self.envoy.url(), self.master_key(), path, body)
    }

    /// An admin read (`GET` with the master key, through the gateway) that must answer 200.
    pub fn admin_get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        crate::http::admin_get(&self.envoy.url(), self.master_key(), path)
    }

    /// A new key (`/key/generate` with `body`, through the gateway): its secret.
    pub fn generate_key(&self, body: &serde_json::Value) -> anyhow::Result<String> {
        let created = self.admin("/key/generate", body)?;
        created["key"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("/key/generate answered no key: {created}"))
    }

    /// The ledger's rows for `key` (`/spend/logs`); none while it cannot say (an outage
    /// answers 503), for a caller that polls.
    pub fn spend_logs(&self, key: &str) -> Option<Vec<serde_json::Value>> {
        let rows = self.admin_get(&format!("/spend/logs?api_key={key}")).ok()?;
        rows.as_array().cloned()
    }

    /// The control plane's Prometheus text (`GET /metrics` on its own port).
    pub fn control_plane_metrics(&self) -> anyhow::Result<String> {
        let control_plane = self
            .control_plane
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("this stack runs no control plane"))?;
        Ok(crate::http::get(&control_plane.metrics_url(), &[])?.body)
    }
}

fn start_control_plane(
    options: &StackOptions,
    database_url: &str,
    port: u16,
    scratch: &Scratch,
) -> anyhow::Result<ControlPlane> {
    let mut builder = ControlPlane::builder(database_url)
        .master_key(Some(&options.master_key))
        .port(port)
        .log_dir(scratch.path().to_path_buf());
    for arg in &options.control_plane_args {
        builder = builder.arg(arg.clone());
    }
    for (name, value) in &options.control_plane_env {
        builder = builder.env(name, value);
    }
    // A stack is up when it can serve: the control plane's database is connected.
    let control_plane = builder.start()?;
    control_plane.wait_connected(std::time::Duration::from_secs(60))?;
    Ok(control_plane)
}
