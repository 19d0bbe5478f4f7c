//! Envoy Gateway's way: the Wasm filter Envoy Gateway generates from deploy/envoy-gateway
//! (in the listener, enabled per route) and its clusters, one per HTTPRoute rule.

use std::path::Path;

use anyhow::Context;
use serde_json::{json, Value};

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
