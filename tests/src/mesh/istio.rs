//! Istio's way: the filter's extension config from deploy/istio's EnvoyFilter, as
//! istio-agent hands it to Envoy over ECDS, and Istio's cluster names.

use std::path::Path;

use anyhow::Context;
use serde_json::{json, Value};

/// The namespace the manifests of deploy/istio install into.
pub const NAMESPACE: &str = "livegate";
/// The control plane's port and Service name in the manifests.
pub const CONTROL_PLANE_SERVICE: &str = "livegate-control-plane";
pub const CONTROL_PLANE_PORT: u16 = 4001;
/// The extension config's name: the HTTP filter of the listener asks for it by name.
pub const EXTENSION_NAME: &str = "livegate";

/// A cluster's name as Istio gives it to a Service's port: `outbound|PORT||HOST`.
pub fn istio_cluster(port: u16, service: &str, namespace: &str) -> String {
    format!("outbound|{port}||{service}.{namespace}.svc.cluster.local")
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

/// The ECDS file: a discovery response with the one extension config.
pub fn write_ecds(dir: &Path, extension: Value, version: u64) -> anyhow::Result<()> {
    let response = json!({
        "version_info": version.to_string(),
        "resources": [extension],
    });
    let aside = dir.join(format!(".livegate-{version}.json"));
    std::fs::write(&aside, serde_json::to_vec_pretty(&response)?)?;
    std::fs::rename(&aside, dir.join("livegate.json"))?;
    Ok(())
}
