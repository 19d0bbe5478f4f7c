//! livegate delivered as a service mesh delivers it: the filter taken out of its OCI image
//! (`cargo xtask package`), handed to Envoy as Istio does (over extension config discovery
//! from a file, `tests/mesh/envoy.yaml.tmpl`) or as Envoy Gateway does (in the listener,
//! enabled per route, `tests/mesh/envoy-gateway.yaml.tmpl`), with the mesh's cluster names.

mod envoy_gateway;
mod istio;
mod oci;

pub use envoy_gateway::{envoy_gateway_filter, EnvoyGatewayFilter, ENVOY_GATEWAY_TEMPLATE};
pub use istio::{
    control_plane_cluster, extension_config, istio_cluster, CONTROL_PLANE_PORT,
    CONTROL_PLANE_SERVICE, EXTENSION_NAME, ISTIO_ENVOY_FILTER, NAMESPACE,
};
pub use oci::{oci_layout, plugin_from_layout, OCI_LAYOUT_ENV};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::control_plane::ControlPlane;
use crate::demo_upstream::DemoUpstream;
use crate::postgres::Postgres;
use crate::process::{Owned, Scratch, SpawnOptions};
use istio::write_ecds;
use oci::take_plugin;

/// The template of the mesh's Envoy, relative to the workspace root.
pub const TEMPLATE: &str = "tests/mesh/envoy.yaml.tmpl";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// An Envoy configured as a mesh configures it, its filter from an ECDS file.
#[derive(Debug)]
pub struct MeshEnvoy {
    process: Owned,
    listen_port: u16,
    admin_port: u16,
    /// Where the ECDS resource is (none: the filter is in the listener, Envoy Gateway's way).
    ecds_dir: Option<PathBuf>,
    plugin_wasm: PathBuf,
    version: u64,
}

impl MeshEnvoy {
    /// Takes `plugin.wasm` out of the packaged layout into `dir`, writes the first ECDS
    /// resource (the manifest's, with `overrides` in its plugin configuration), starts
    /// Envoy and waits until its listener serves.
    pub fn start(
        dir: &Path,
        control_plane_port: u16,
        upstream_port: u16,
        overrides: &Value,
    ) -> anyhow::Result<MeshEnvoy> {
        let plugin_wasm = take_plugin(dir)?;
        let ecds_dir = dir.join("ecds");
        std::fs::create_dir_all(&ecds_dir)?;
        let listen_port = crate::ports::free_port()?;
        let admin_port = crate::ports::free_port()?;
        let quoted = |text: &str| Value::from(text).to_string();
        let first = extension_config(overrides, &plugin_wasm)?;
        let control_plane_cluster = control_plane_cluster(&first)?;
        let upstream_cluster = istio_cluster(4002, "demo-upstream", NAMESPACE);
        let template = std::fs::read_to_string(crate::artifacts::workspace_root().join(TEMPLATE))?;
        let config = crate::envoy::render(
            &template,
            &[
                ("ADMIN_PORT", admin_port.to_string()),
                ("LISTEN_PORT", listen_port.to_string()),
                ("CONTROL_PLANE_CLUSTER", quoted(&control_plane_cluster)),
                ("CONTROL_PLANE_PORT", control_plane_port.to_string()),
                ("UPSTREAM_CLUSTER", quoted(&upstream_cluster)),
                ("UPSTREAM_PORT", upstream_port.to_string()),
                (
                    "ECDS_PATH",
                    quoted(&ecds_dir.join("livegate.json").display().to_string()),
                ),
                ("ECDS_DIR", quoted(&ecds_dir.display().to_string())),
            ],
        )?;
        // Written before Envoy starts: its first read finds the resource.
        write_ecds(&ecds_dir, first, 1)?;
        MeshEnvoy::launch(
            dir,
            &config,
            listen_port,
            admin_port,
            plugin_wasm,
            Some(ecds_dir),
        )
    }

    /// Takes `plugin.wasm` out of the packaged layout into `dir` and starts Envoy with the
    /// configuration Envoy Gateway generates for deploy/envoy-gateway (`overrides` in the
    /// plugin configuration); waits until its listener serves.
    pub fn start_envoy_gateway(
        dir: &Path,
        control_plane_port: u16,
        upstream_port: u16,
        overrides: &Value,
    ) -> anyhow::Result<MeshEnvoy> {
        let plugin_wasm = take_plugin(dir)?;
        let listen_port = crate::ports::free_port()?;
        let admin_port = crate::ports::free_port()?;
        let generated = envoy_gateway_filter(overrides, &plugin_wasm)?;
        let quoted = |text: &str| Value::from(text).to_string();
        let mut values = vec![
            ("ADMIN_PORT", admin_port.to_string()),
            ("LISTEN_PORT", listen_port.to_string()),
            ("CONTROL_PLANE_PORT", control_plane_port.to_string()),
            ("UPSTREAM_PORT", upstream_port.to_string()),
            ("WASM_FILTER_NAME", quoted(&generated.filter_name)),
            // JSON is YAML: the filter's typed_config as one flow mapping.
            ("WASM_FILTER", generated.typed_config.to_string()),
        ];
        for (placeholder, cluster) in ["RULE_0", "RULE_1", "RULE_2"]
            .into_iter()
            .zip(&generated.rule_clusters)
        {
            values.push((placeholder, quoted(cluster)));
        }
        let template = std::fs::read_to_string(
            crate::artifacts::workspace_root().join(ENVOY_GATEWAY_TEMPLATE),
        )?;
        let config = crate::envoy::render(&template, &values)?;
        MeshEnvoy::launch(dir, &config, listen_port, admin_port, plugin_wasm, None)
    }

    fn launch(
        dir: &Path,
        config: &str,
        listen_port: u16,
        admin_port: u16,
        plugin_wasm: PathBuf,
        ecds_dir: Option<PathBuf>,
    ) -> anyhow::Result<MeshEnvoy> {
        let binary = crate::artifacts::require(&crate::artifacts::envoy_bin(), "Envoy")?;
        let config_path = dir.join(format!("mesh-envoy-{listen_port}.yaml"));
        std::fs::write(&config_path, config)?;
        let mut command = Command::new(binary);
        command
            .arg("-c")
            .arg(&config_path)
            .arg("--disable-hot-restart")
            // Two workers, as the mesh's gateways run several: each has its own VM.
            .args(["--concurrency", "2"])
            .args(["--log-level", "info"])
            // The gateway pod's environment, which the manifests hand the VM (host_env_keys).
            .env(
                crate::internal_token::ENV,
                crate::internal_token::internal_token(),
            );
        let log = dir.join(format!("mesh-envoy-{listen_port}.log"));
        let mut envoy = MeshEnvoy {
            process: Owned::spawn("envoy", command, &log, SpawnOptions::default())?,
            listen_port,
            admin_port,
            ecds_dir,
            plugin_wasm,
            version: 1,
        };
        envoy.wait_ready()?;
        Ok(envoy)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let liveness = format!("{}/health/liveliness", self.url());
        let waited = crate::poll::until("the mesh Envoy to serve", READY_TIMEOUT, || {
            if let Some(status) = self.process.try_exit_code() {
                return Some(Err(anyhow::anyhow!(
                    "Envoy exited ({status}):\n{}",
                    self.log_text()
                )));
            }
            let answered = crate::http::get_within(&liveness, Duration::from_secs(2)).ok()?;
            (answered.status == 200).then_some(Ok(()))
        });
        waited.and_then(|inner| inner)
    }

    /// Replaces the extension config with one whose plugin configuration has `overrides`,
    /// as a mesh pushes a changed configuration: written aside, then renamed into place.
    pub fn push_plugin_config(&mut self, overrides: &Value) -> anyhow::Result<()> {
        let ecds_dir = self
            .ecds_dir
            .as_ref()
            .context("this Envoy takes its filter from its listener, not over ECDS")?;
        self.version += 1;
        let extension = extension_config(overrides, &self.plugin_wasm)?;
        write_ecds(ecds_dir, extension, self.version)
    }

    /// Times Envoy took a new extension config over ECDS (the first one included).
    pub fn config_reloads(&self) -> anyhow::Result<f64> {
        let stats = crate::http::get(&format!("{}/stats?format=json", self.admin_url()), &[])?;
        let name = format!("extension_config_discovery.http_filter.{EXTENSION_NAME}.config_reload");
        let value = stats.json()?["stats"]
            .as_array()
            .and_then(|stats| stats.iter().find(|s| s["name"] == name.as_str()))
            .and_then(|s| s["value"].as_f64());
        Ok(value.unwrap_or(0.0))
    }

    pub fn plugin_wasm(&self) -> &Path {
        &self.plugin_wasm
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.listen_port)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    pub fn log_text(&self) -> String {
        self.process.log_text()
    }
}

/// Which mesh's gateway the stack runs.
#[derive(Debug, Clone, Copy)]
enum Mesh {
    Istio,
    EnvoyGateway,
}

/// Postgres, a control plane, the demo upstream and the mesh's Envoy. Drops Envoy first.
#[derive(Debug)]
pub struct MeshStack {
    pub envoy: MeshEnvoy,
    pub control_plane: Option<ControlPlane>,
    /// The control plane's port: a restarted one listens there again.
    pub control_plane_port: u16,
    pub upstream: DemoUpstream,
    pub postgres: Postgres,
    pub scratch: Scratch,
}

impl MeshStack {
    /// With Istio's gateway; `overrides`: merged into the manifest's plugin configuration.
    pub fn start(overrides: &Value) -> anyhow::Result<MeshStack> {
        MeshStack::start_as(Mesh::Istio, overrides)
    }

    /// With Envoy Gateway's gateway.
    pub fn start_envoy_gateway(overrides: &Value) -> anyhow::Result<MeshStack> {
        MeshStack::start_as(Mesh::EnvoyGateway, overrides)
    }

    fn start_as(mesh: Mesh, overrides: &Value) -> anyhow::Result<MeshStack> {
        let scratch = Scratch::new("livegate-mesh-")?;
        let postgres = Postgres::start()?;
        let control_plane_port = crate::ports::free_port()?;
        let control_plane = ControlPlane::builder(&postgres.url())
            .master_key(Some(crate::control_plane::TEST_MASTER_KEY))
            .port(control_plane_port)
            .log_dir(scratch.path().to_path_buf())
            .start()?;
        control_plane.wait_connected(Duration::from_secs(60))?;
        let upstream = DemoUpstream::start(None, scratch.path())?;
        let start = match mesh {
            Mesh::Istio => MeshEnvoy::start,
            Mesh::EnvoyGateway => MeshEnvoy::start_envoy_gateway,
        };
        let envoy = start(
            scratch.path(),
            control_plane.port(),
            upstream.port(),
            overrides,
        )?;
        Ok(MeshStack {
            envoy,
            control_plane: Some(control_plane),
            control_plane_port,
            upstream,
            postgres,
            scratch,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.envoy.url())
    }

    /// An admin call through the mesh's gateway (its route to the control plane).
    pub fn admin(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        crate::http::admin_post(
            &self.envoy.url(),
            crate::control_plane::TEST_MASTER_KEY,
            path,
            body,
        )
    }

    pub fn admin_get(&self, path: &str) -> anyhow::Result<Value> {
        crate::http::admin_get(
            &self.envoy.url(),
            crate::control_plane::TEST_MASTER_KEY,
            path,
        )
    }
}
