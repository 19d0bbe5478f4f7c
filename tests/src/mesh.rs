//! livegate delivered as a service mesh delivers it: the filter taken out of its OCI image
//! (`cargo xtask package`), handed to Envoy as Istio does (over extension config discovery
//! from a file, `tests/mesh/envoy.yaml.tmpl`) or as Envoy Gateway does (in the listener,
//! enabled per route, `tests/mesh/envoy-gateway.yaml.tmpl`), with the mesh's cluster names.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::control_plane::ControlPlane;
use crate::demo_upstream::DemoUpstream;
use crate::postgres::Postgres;
use crate::process::{Owned, Scratch, SpawnOptions};

/// The template of the mesh's Envoy, relative to the workspace root.
pub const TEMPLATE: &str = "tests/mesh/envoy.yaml.tmpl";
/// Where `cargo xtask test` says the packaged layout is.
pub const OCI_LAYOUT_ENV: &str = "LIVEGATE_FILTER_OCI";
/// The namespace the manifests of deploy/istio install into.
pub const NAMESPACE: &str = "livegate";
/// The control plane's port and Service name in the manifests.
pub const CONTROL_PLANE_SERVICE: &str = "livegate-control-plane";
pub const CONTROL_PLANE_PORT: u16 = 4001;
/// The extension config's name: the HTTP filter of the listener asks for it by name.
pub const EXTENSION_NAME: &str = "livegate";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A cluster's name as Istio gives it to a Service's port: `outbound|PORT||HOST`.
pub fn istio_cluster(port: u16, service: &str, namespace: &str) -> String {
    format!("outbound|{port}||{service}.{namespace}.svc.cluster.local")
}

/// The layout `cargo xtask package` wrote: `LIVEGATE_FILTER_OCI`, else `target/oci`.
pub fn oci_layout() -> PathBuf {
    std::env::var_os(OCI_LAYOUT_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::artifacts::target_dir().join("oci/livegate-filter"))
}

/// `plugin.wasm` out of an OCI layout, as a mesh's image fetcher takes it (Istio
/// `pkg/wasm/imagefetcher.go`, compat variant): index → manifest → its one gzip tar layer
/// → the file `plugin.wasm`. Every blob is checked against its digest and size.
pub fn plugin_from_layout(layout: &Path) -> anyhow::Result<Vec<u8>> {
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
    let manifest: Value = serde_json::from_slice(&blob(layout, &index["manifests"][0])?)?;
    let layers = manifest["layers"]
        .as_array()
        .context("the manifest has no layers")?;
    anyhow::ensure!(layers.len() == 1, "{} layers, not one", layers.len());
    anyhow::ensure!(
        layers[0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip",
        "layer media type {}",
        layers[0]["mediaType"]
    );
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(blob(layout, &layers[0])?.as_slice()).read_to_end(&mut tar)?;
    let mut archive = tar::Archive::new(tar.as_slice());
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.path()?.as_os_str() == "plugin.wasm" {
            let mut module = Vec::new();
            entry.read_to_end(&mut module)?;
            return Ok(module);
        }
    }
    anyhow::bail!("no plugin.wasm in the layer")
}

/// A blob of the layout by its descriptor, checked against the descriptor's digest and size.
fn blob(layout: &Path, descriptor: &Value) -> anyhow::Result<Vec<u8>> {
    let digest = descriptor["digest"]
        .as_str()
        .context("descriptor without digest")?;
    let hex = digest
        .strip_prefix("sha256:")
        .context("digest is not sha256")?;
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex))?;
    let actual = hex::encode(Sha256::digest(&bytes));
    anyhow::ensure!(actual == hex, "blob {hex} has digest {actual}");
    anyhow::ensure!(
        descriptor["size"].as_u64() == Some(bytes.len() as u64),
        "blob {hex} is {} bytes, its descriptor says {}",
        bytes.len(),
        descriptor["size"]
    );
    Ok(bytes)
}

/// deploy/istio's EnvoyFilter, whose extension config the mesh tests run.
pub const ISTIO_ENVOY_FILTER: &str = "deploy/istio/envoyfilter.yaml";

/// The extension config deploy/istio's EnvoyFilter adds, as istio-agent hands it to Envoy
/// once it has fetched the image: `code.remote` (the `oci://` url) replaced by
/// `code.local.filename` of the extracted module. `overrides` are merged into the
/// manifest's plugin configuration (the tests' short cache lifetimes, a changed setting).
pub fn extension_config(overrides: &Value, plugin_wasm: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(crate::artifacts::workspace_root().join(ISTIO_ENVOY_FILTER))?;
    let envoy_filter: Value = serde_norway::from_str(&text)?;
    let mut extension = envoy_filter["spec"]["configPatches"]
        .as_array()
        .and_then(|patches| patches.iter().find(|p| p["applyTo"] == "EXTENSION_CONFIG"))
        .map(|patch| patch["patch"]["value"].clone())
        .context("no EXTENSION_CONFIG patch in the EnvoyFilter")?;
    extension["@type"] = json!("type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig");
    let config = &mut extension["typed_config"]["config"];
    let plugin = plugin_config(config, overrides)?;
    config["configuration"]["value"] = json!(plugin);
    config["vm_config"]["code"] = json!({"local": {"filename": plugin_wasm.display().to_string()}});
    Ok(extension)
}

/// The plugin configuration a PluginConfig carries, with `overrides` merged in.
fn plugin_config(config: &Value, overrides: &Value) -> anyhow::Result<String> {
    let text = config["configuration"]["value"]
        .as_str()
        .context("the PluginConfig has no configuration")?;
    let mut plugin: Value = serde_json::from_str(text)?;
    if let (Some(plugin), Some(overrides)) = (plugin.as_object_mut(), overrides.as_object()) {
        plugin.extend(overrides.clone());
    }
    Ok(plugin.to_string())
}

/// The control plane's cluster the extension config names (`control_plane_cluster`).
pub fn control_plane_cluster(extension: &Value) -> anyhow::Result<String> {
    let text = extension["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .context("no plugin configuration")?;
    let plugin: Value = serde_json::from_str(text)?;
    plugin["control_plane_cluster"]
        .as_str()
        .map(str::to_string)
        .context("the plugin configuration names no control_plane_cluster")
}

/// `plugin.wasm` out of the packaged layout, written into `dir`.
fn take_plugin(dir: &Path) -> anyhow::Result<PathBuf> {
    let layout = oci_layout();
    crate::artifacts::require(&layout, "the filter's OCI layout (cargo xtask package)")?;
    let plugin_wasm = dir.join("plugin.wasm");
    std::fs::write(&plugin_wasm, plugin_from_layout(&layout)?)?;
    Ok(plugin_wasm)
}

/// deploy/envoy-gateway's manifests that make the filter and its clusters.
pub const ENVOY_GATEWAY_DIR: &str = "deploy/envoy-gateway";
pub const ENVOY_GATEWAY_TEMPLATE: &str = "tests/mesh/envoy-gateway.yaml.tmpl";

/// What Envoy Gateway generates from deploy/envoy-gateway for the filter.
#[derive(Debug, Clone)]
pub struct EnvoyGatewayFilter {
    /// `envoy.filters.http.wasm/envoyextensionpolicy/NAMESPACE/NAME/wasm/0`.
    pub filter_name: String,
    /// The HTTP filter's typed_config: a Wasm filter with the policy's PluginConfig and the
    /// patch policy's setting applied.
    pub typed_config: Value,
    /// The clusters of the HTTPRoute's rules, in order: `httproute/NAMESPACE/ROUTE/rule/I`.
    pub rule_clusters: Vec<String>,
}

fn manifest(path: &str) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(crate::artifacts::workspace_root().join(path))?;
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(&text) {
        documents.push(<Value as serde::Deserialize>::deserialize(document)?);
    }
    Ok(documents)
}

/// The filter as Envoy Gateway builds it from the EnvoyExtensionPolicy (its translator's
/// `wasmConfig`: name, root id, a VM per policy and index, V8, the `config` object as a
/// string, fail_open, the host env keys), with the EnvoyPatchPolicy's operation applied
/// to it, and the HTTPRoute's clusters. `overrides` go into the plugin configuration.
pub fn envoy_gateway_filter(
    overrides: &Value,
    plugin_wasm: &Path,
) -> anyhow::Result<EnvoyGatewayFilter> {
    let namespace = manifest(&format!("{ENVOY_GATEWAY_DIR}/kustomization.yaml"))?[0]["namespace"]
        .as_str()
        .context("the kustomization sets no namespace")?
        .to_string();
    let policy = manifest(&format!("{ENVOY_GATEWAY_DIR}/extension-policy.yaml"))?.remove(0);
    let name = policy["metadata"]["name"].as_str().context("policy name")?;
    let ir_name = format!("envoyextensionpolicy/{namespace}/{name}/wasm/0");
    let filter_name = format!("envoy.filters.http.wasm/{ir_name}");
    let wasm = &policy["spec"]["wasm"][0];
    let mut plugin = wasm["config"].clone();
    if let (Some(plugin), Some(overrides)) = (plugin.as_object_mut(), overrides.as_object()) {
        plugin.extend(overrides.clone());
    }
    let mut typed_config = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {
            "name": wasm["name"],
            "root_id": wasm["rootID"],
            "vm_config": {
                "vm_id": ir_name,
                "runtime": "envoy.wasm.runtime.v8",
                "code": {"local": {"filename": plugin_wasm.display().to_string()}},
                "environment_variables": {"host_env_keys": wasm["env"]["hostKeys"]},
            },
            "configuration": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": plugin.to_string(),
            },
            "fail_open": wasm["failOpen"],
        },
    });
    // The patch policy's one operation: `add` of `path` on the object its jsonPath selects,
    // which must be this filter's PluginConfig.
    let patch = manifest(&format!("{ENVOY_GATEWAY_DIR}/patch-policy.yaml"))?.remove(0);
    let operation = &patch["spec"]["jsonPatches"][0]["operation"];
    let json_path = operation["jsonPath"].as_str().context("patch jsonPath")?;
    anyhow::ensure!(
        operation["op"] == "add"
            && json_path.contains(&format!("'{filter_name}'"))
            && json_path.ends_with(".typed_config.config"),
        "the patch policy does not select {filter_name}'s PluginConfig: {json_path}"
    );
    let field = operation["path"].as_str().context("patch path")?;
    typed_config["config"][field] = operation["value"].clone();
    let route = manifest(&format!("{ENVOY_GATEWAY_DIR}/gateway.yaml"))?
        .into_iter()
        .find(|d| d["kind"] == "HTTPRoute")
        .context("no HTTPRoute")?;
    let route_name = route["metadata"]["name"].as_str().context("route name")?;
    let rules = route["spec"]["rules"].as_array().context("route rules")?;
    let rule_clusters = (0..rules.len())
        .map(|i| format!("httproute/{namespace}/{route_name}/rule/{i}"))
        .collect();
    Ok(EnvoyGatewayFilter {
        filter_name,
        typed_config,
        rule_clusters,
    })
}

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
            .args(["--log-level", "info"]);
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

/// The ECDS file: a discovery response with the one extension config.
fn write_ecds(dir: &Path, extension: Value, version: u64) -> anyhow::Result<()> {
    let response = json!({
        "version_info": version.to_string(),
        "resources": [extension],
    });
    let aside = dir.join(format!(".livegate-{version}.json"));
    std::fs::write(&aside, serde_json::to_vec_pretty(&response)?)?;
    std::fs::rename(&aside, dir.join("livegate.json"))?;
    Ok(())
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
