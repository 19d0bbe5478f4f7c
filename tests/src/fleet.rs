//! Several Envoys and several control planes over one Postgres: the shape Kubernetes runs,
//! on one machine. Every Envoy balances over every control plane; all share one master key.
//! `cargo xtask up --envoys N --control-planes M` and the fleet tests start this.

use std::path::PathBuf;
use std::time::Duration;

use crate::control_plane::ControlPlane;
use crate::demo_upstream::DemoUpstream;
use crate::envoy::{Endpoint, Envoy, EnvoyConfig};
use crate::postgres::Postgres;
use crate::process::Scratch;

/// What to start; `None` ports are free ones.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub envoys: usize,
    pub control_planes: usize,
    pub master_key: String,
    pub filter_config: String,
    pub control_plane_args: Vec<String>,
    /// Envoy worker threads each (2: the change feed is shared between workers).
    pub concurrency: u16,
    /// Per instance k: Envoy listener, Envoy admin, control plane (`None`: free ports).
    pub ports: Option<FleetPorts>,
    /// Postgres kept in this directory on this port (`None`: a fresh one).
    pub database: Option<(PathBuf, u16)>,
    pub upstream_port: Option<u16>,
    pub state_dir: Option<PathBuf>,
}

/// Fixed ports: instance k listens on `base + 10·k`.
#[derive(Debug, Clone, Copy)]
pub struct FleetPorts {
    pub listen: u16,
    pub admin: u16,
    pub control_plane: u16,
    /// The probe listener (`None`: free ports).
    pub probe: Option<u16>,
}

impl FleetOptions {
    pub fn new(envoys: usize, control_planes: usize) -> FleetOptions {
        FleetOptions {
            envoys,
            control_planes,
            master_key: crate::stack::StackOptions::envoy_only().master_key,
            filter_config: "{}".to_string(),
            control_plane_args: Vec::new(),
            concurrency: 2,
            ports: None,
            database: None,
            upstream_port: None,
            state_dir: None,
        }
    }
}

/// A running fleet. Envoys drop first, Postgres and the files last.
#[derive(Debug)]
pub struct Fleet {
    pub envoys: Vec<Envoy>,
    /// `None` while a control plane is stopped by the test.
    pub control_planes: Vec<Option<ControlPlane>>,
    pub upstream: DemoUpstream,
    pub postgres: Postgres,
    pub scratch: Scratch,
    control_plane_ports: Vec<u16>,
    options: FleetOptions,
}

fn pick(fixed: Option<u16>) -> anyhow::Result<u16> {
    fixed.map_or_else(crate::ports::free_port, Ok)
}

fn offset(base: u16, k: usize) -> Option<u16> {
    u16::try_from(k * 10).ok().and_then(|o| base.checked_add(o))
}

impl Fleet {
    pub fn start(options: FleetOptions) -> anyhow::Result<Fleet> {
        let scratch = match &options.state_dir {
            Some(dir) => Scratch::persistent(dir)?,
            None => Scratch::new("livegate-fleet-")?,
        };
        let postgres = match &options.database {
            Some((dir, port)) => Postgres::start_in(Scratch::persistent(dir)?, *port)?,
            None => Postgres::start()?,
        };
        let ports = options.ports;
        let control_plane_ports = (0..options.control_planes.max(1))
            .map(|k| pick(ports.and_then(|p| offset(p.control_plane, k))))
            .collect::<anyhow::Result<Vec<u16>>>()?;
        let mut fleet_control_planes = Vec::new();
        for (k, port) in control_plane_ports.iter().enumerate() {
            let cp = start_control_plane(&options, &postgres.url(), *port, &scratch, k)?;
            fleet_control_planes.push(Some(cp));
        }
        let upstream = DemoUpstream::start(options.upstream_port, scratch.path())?;
        let mut endpoints = control_plane_ports.iter().map(|p| Endpoint::loopback(*p));
        let first = endpoints
            .next()
            .ok_or_else(|| anyhow::anyhow!("a fleet needs a control plane"))?;
        let more: Vec<Endpoint> = endpoints.collect();
        let mut envoys = Vec::new();
        for k in 0..options.envoys.max(1) {
            let dir = scratch.path().join(format!("envoy-{k}"));
            std::fs::create_dir_all(&dir)?;
            let config = EnvoyConfig {
                listen_address: "127.0.0.1".to_string(),
                listen_port: pick(ports.and_then(|p| offset(p.listen, k)))?,
                admin_address: "127.0.0.1".to_string(),
                admin_port: pick(ports.and_then(|p| offset(p.admin, k)))?,
                control_plane: first.clone(),
                more_control_planes: more.clone(),
                upstream: Endpoint::loopback(upstream.port()),
                filter_config: options.filter_config.clone(),
                filter_wasm: crate::artifacts::filter_wasm(),
                concurrency: options.concurrency,
                probe_address: "127.0.0.1".to_string(),
                probe_port: pick(ports.and_then(|p| p.probe.and_then(|base| offset(base, k))))?,
                limits: crate::envoy::EnvoyLimits::default(),
                internal_token: Some(crate::internal_token::internal_token().to_string()),
                providers: crate::providers::Providers::default(),
            };
            envoys.push(Envoy::start(config, &dir)?);
        }
        Ok(Fleet {
            envoys,
            control_planes: fleet_control_planes,
            upstream,
            postgres,
            scratch,
            control_plane_ports,
            options,
        })
    }

    pub fn master_key(&self) -> &str {
        &self.options.master_key
    }

    /// Control plane `k`, which must be running.
    pub fn control_plane(&self, k: usize) -> anyhow::Result<&ControlPlane> {
        self.control_planes
            .get(k)
            .and_then(Option::as_ref)
            .ok_or_else(|| anyhow::anyhow!("control plane {k} is not running"))
    }

    /// An admin call straight to control plane `k` (not through an Envoy).
    pub fn admin_via(
        &self,
        k: usize,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let base = self.control_plane(k)?.base_url();
        crate::http::admin_post(&base, self.master_key(), path, body)
    }

    /// Stops control plane `k` for good (SIGTERM, then waits for it to exit).
    /// Sends `signal` to every running control plane (SIGSTOP freezes them all at once).
    pub fn signal_control_planes(&self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        for control_plane in self.control_planes.iter().flatten() {
            control_plane.signal(signal)?;
        }
        Ok(())
    }

    pub fn stop_control_plane(&mut self, k: usize) {
        if let Some(slot) = self.control_planes.get_mut(k) {
            *slot = None;
        }
    }

    /// Starts control plane `k` again on its port, with an empty cache; does not wait for
    /// the database (which may be away on purpose).
    pub fn restart_control_plane(&mut self, k: usize) -> anyhow::Result<()> {
        let port = *self
            .control_plane_ports
            .get(k)
            .ok_or_else(|| anyhow::anyhow!("no control plane {k}"))?;
        self.stop_control_plane(k);
        let cp = spawn_control_plane(&self.options, &self.postgres.url(), port, &self.scratch, k)?;
        if let Some(slot) = self.control_planes.get_mut(k) {
            *slot = Some(cp);
        }
        Ok(())
    }
}

fn spawn_control_plane(
    options: &FleetOptions,
    database_url: &str,
    port: u16,
    scratch: &Scratch,
    k: usize,
) -> anyhow::Result<ControlPlane> {
    let dir = scratch.path().join(format!("control-plane-{k}"));
    std::fs::create_dir_all(&dir)?;
    let mut builder = ControlPlane::builder(database_url)
        .master_key(Some(&options.master_key))
        .port(port)
        .log_dir(dir);
    for arg in &options.control_plane_args {
        builder = builder.arg(arg.clone());
    }
    builder.start()
}

fn start_control_plane(
    options: &FleetOptions,
    database_url: &str,
    port: u16,
    scratch: &Scratch,
    k: usize,
) -> anyhow::Result<ControlPlane> {
    let cp = spawn_control_plane(options, database_url, port, scratch, k)?;
    cp.wait_connected(Duration::from_secs(60))?;
    Ok(cp)
}
