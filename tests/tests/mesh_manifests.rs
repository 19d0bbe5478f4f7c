//! The service-mesh manifests (deploy/istio, deploy/envoy-gateway, deploy/mesh-control-plane)
//! against the schemas of what they create (tests/schemas: the CRDs, versions named there,
//! and Kubernetes 1.37's core objects) and against the code: the filter's own configuration parser, the cluster names the meshes generate, the
//! internal credential's path to the filter, who may reach the control plane.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use livegate_filter::config::Config as FilterConfig;
use livegate_tests::artifacts::workspace_root;
use livegate_tests::mesh;
use serde::Deserialize;
use serde_json::{json, Value};

const INTERNAL_TOKEN: &str = "LIVEGATE_INTERNAL_TOKEN";

/// A document of a manifest, with the file it came from.
struct Document {
    file: PathBuf,
    value: Value,
}

fn read_documents(file: &Path) -> Vec<Document> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file:?}: {e}"));
    serde_norway::Deserializer::from_str(&text)
        .map(|document| Document {
            file: file.to_path_buf(),
            value: Value::deserialize(document).unwrap_or_else(|e| panic!("{file:?}: {e}")),
        })
        .collect()
}

fn kustomization(dir: &Path) -> Value {
    read_documents(&dir.join("kustomization.yaml"))
        .remove(0)
        .value
}

/// Every document a kustomization applies, following directories it includes.
fn applied(dir: &str) -> Vec<Document> {
    fn walk(dir: &Path, out: &mut Vec<Document>) {
        for resource in kustomization(dir)["resources"].as_array().unwrap() {
            let path = dir.join(resource.as_str().unwrap());
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.extend(read_documents(&path));
            }
        }
    }
    let mut documents = Vec::new();
    walk(&workspace_root().join(dir), &mut documents);
    documents
}

fn find<'a>(documents: &'a [Document], kind: &str, name: &str) -> &'a Value {
    &documents
        .iter()
        .find(|d| d.value["kind"] == kind && d.value["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
        .value
}

fn istio_wasm_plugin() -> Value {
    read_documents(&workspace_root().join("deploy/istio/wasmplugin.yaml"))
        .remove(0)
        .value
}

/// The Kubernetes version whose schemas the core objects are checked against.
const KUBERNETES: &str = "1.37.0";

/// The vendored schema of an object: a custom resource's, made strict (an object that
/// declares its properties accepts no other: the API server would prune it silently), or
/// a core object's from Kubernetes 1.37 (strict already).
fn schema(api_version: &str, kind: &str) -> Value {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let core = !group.contains('.') || group.ends_with(".k8s.io") && !group.starts_with("gateway.");
    let path = if core {
        let group = group.split('.').next().unwrap_or_default();
        let name = [kind.to_lowercase().as_str(), group, version]
            .into_iter()
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join("-");
        format!("tests/schemas/kubernetes-{KUBERNETES}/{name}.json")
    } else {
        format!("tests/schemas/{group}/{kind}.{version}.json")
    };
    let text = std::fs::read_to_string(workspace_root().join(&path))
        .unwrap_or_else(|e| panic!("no vendored schema for {api_version} {kind}: {path}: {e}"));
    let mut schema: Value = serde_json::from_str(&text).unwrap();
    if core {
        return schema;
    }
    // The API server takes these of every object, whether the CRD declares them or not
    // (Istio's do not).
    for (field, kind) in [
        ("apiVersion", "string"),
        ("kind", "string"),
        ("metadata", "object"),
    ] {
        if schema["properties"].get(field).is_none() {
            schema["properties"][field] = json!({"type": kind});
        }
    }
    strict(&mut schema);
    schema
}

fn strict(node: &mut Value) {
    match node {
        Value::Object(map) => {
            let open = map.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
            if map.contains_key("properties") && !map.contains_key("additionalProperties") && !open
            {
                map.insert("additionalProperties".into(), json!(false));
            }
            map.values_mut().for_each(strict);
        }
        Value::Array(items) => items.iter_mut().for_each(strict),
        _ => {}
    }
}

/// The schema's errors for a document, as text; empty when it is valid.
fn schema_errors(value: &Value) -> Vec<String> {
    let api_version = value["apiVersion"].as_str().unwrap();
    let schema = schema(api_version, value["kind"].as_str().unwrap());
    let validator = jsonschema::validator_for(&schema).unwrap();
    validator
        .iter_errors(value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn every_object_of_the_mesh_manifests_fits_its_vendored_schema() {
    let mut checked = BTreeSet::new();
    let mut documents = applied("deploy/istio");
    documents.extend(applied("deploy/envoy-gateway"));
    documents.extend(read_documents(
        &workspace_root().join("deploy/istio/wasmplugin.yaml"),
    ));
    for document in &documents {
        let errors = schema_errors(&document.value);
        assert!(errors.is_empty(), "{:?}: {errors:#?}", document.file);
        checked.insert(document.value["kind"].as_str().unwrap().to_string());
    }
    let expected: BTreeSet<String> = [
        "ClientTrafficPolicy",
        "ConfigMap",
        "Deployment",
        "DestinationRule",
        "EnvoyExtensionPolicy",
        "EnvoyFilter",
        "EnvoyPatchPolicy",
        "EnvoyProxy",
        "Gateway",
        "HTTPRoute",
        "Namespace",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Service",
        "WasmPlugin",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(checked, expected);
}

/// livegate's own Kubernetes manifests, against the same Kubernetes 1.37 schemas (a kind
/// added there needs its schema: tests/schemas/vendor.py).
#[test]
fn livegates_own_kubernetes_manifests_fit_the_kubernetes_schemas() {
    for document in applied("deploy/kubernetes") {
        let errors = schema_errors(&document.value);
        assert!(errors.is_empty(), "{:?}: {errors:#?}", document.file);
    }
}

#[test]
fn the_strict_schemas_refuse_a_misspelt_field_and_a_wrong_enum() {
    let mut typo = istio_wasm_plugin();
    typo["spec"]["failStratgy"] = json!("FAIL_CLOSE");
    let errors = schema_errors(&typo);
    assert!(
        errors.iter().any(|e| e.contains("failStratgy")),
        "{errors:?}"
    );
    let mut wrong = istio_wasm_plugin();
    wrong["spec"]["phase"] = json!("FIRST");
    assert!(!schema_errors(&wrong).is_empty());
    // Deep in a list too.
    let documents = applied("deploy/envoy-gateway");
    let mut deep = find(&documents, "EnvoyExtensionPolicy", "livegate").clone();
    deep["spec"]["wasm"][0]["code"]["image"]["digest"] = json!("sha256:00");
    let errors = schema_errors(&deep);
    assert!(errors.iter().any(|e| e.contains("digest")), "{errors:?}");
    // And in the core objects: a probe's field misspelt.
    let documents = applied("deploy/mesh-control-plane");
    let mut probe = find(&documents, "Deployment", "livegate-control-plane").clone();
    probe["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["periodSecond"] = json!(10);
    let errors = schema_errors(&probe);
    assert!(
        errors.iter().any(|e| e.contains("periodSecond")),
        "{errors:?}"
    );
}

#[test]
fn each_kustomization_lists_every_manifest_of_its_directory() {
    for (dir, not_applied) in [
        ("deploy/istio", vec!["wasmplugin.yaml"]),
        ("deploy/envoy-gateway", vec![]),
        ("deploy/mesh-control-plane", vec![]),
    ] {
        let root = workspace_root().join(dir);
        let listed: BTreeSet<String> = kustomization(&root)["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .filter(|r| r.ends_with(".yaml"))
            .collect();
        let on_disk: BTreeSet<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
            .filter(|n| !not_applied.contains(&n.as_str()))
            .collect();
        assert_eq!(listed, on_disk, "{dir}");
    }
}

/// The plugin configuration of the Istio EnvoyFilter's extension config, as JSON.
fn envoy_filter_plugin() -> (Value, Value) {
    let extension = mesh::extension_config(&json!({}), Path::new("plugin.wasm")).unwrap();
    let config = extension["typed_config"]["config"].clone();
    let plugin: Value =
        serde_json::from_str(config["configuration"]["value"].as_str().unwrap()).unwrap();
    (config, plugin)
}

fn parse_filter_config(plugin: &Value) -> FilterConfig {
    FilterConfig::parse(Some(plugin.to_string().as_bytes()))
        .unwrap_or_else(|e| panic!("the filter refuses {plugin}: {e}"))
}

/// `outbound|PORT||SERVICE.NAMESPACE.svc.cluster.local` of the control plane's Service.
fn istio_control_plane_cluster() -> String {
    let documents = applied("deploy/istio");
    let service = find(&documents, "Service", "livegate-control-plane");
    let port = service["spec"]["ports"][0]["port"].as_u64().unwrap();
    let namespace = kustomization(&workspace_root().join("deploy/istio"))["namespace"]
        .as_str()
        .unwrap()
        .to_string();
    mesh::istio_cluster(
        u16::try_from(port).unwrap(),
        service["metadata"]["name"].as_str().unwrap(),
        &namespace,
    )
}

#[test]
fn istio_runs_the_filter_failing_closed_with_its_cluster_names_and_the_stop_iteration_setting() {
    let (config, plugin) = envoy_filter_plugin();
    assert_eq!(config["allow_on_headers_stop_iteration"], true);
    assert_eq!(config["failure_policy"], "FAIL_CLOSED");
    assert_eq!(config["vm_config"]["runtime"], "envoy.wasm.runtime.v8");
    assert_eq!(
        config["vm_config"]["environment_variables"]["host_env_keys"],
        json!([INTERNAL_TOKEN])
    );
    let filter = parse_filter_config(&plugin);
    assert_eq!(filter.control_plane_cluster, istio_control_plane_cluster());

    // The HTTP filter asks ECDS for the extension config by its name.
    let documents = applied("deploy/istio");
    let envoy_filter = find(&documents, "EnvoyFilter", "livegate");
    let patches = envoy_filter["spec"]["configPatches"].as_array().unwrap();
    let http_filter = patches
        .iter()
        .find(|p| p["applyTo"] == "HTTP_FILTER")
        .unwrap();
    let extension = patches
        .iter()
        .find(|p| p["applyTo"] == "EXTENSION_CONFIG")
        .unwrap();
    assert_eq!(
        http_filter["patch"]["value"]["name"],
        extension["patch"]["value"]["name"]
    );
    assert_eq!(
        http_filter["patch"]["value"]["config_discovery"]["type_urls"],
        json!(["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"])
    );
}

#[test]
fn the_wasm_plugin_installs_the_same_image_and_configuration_as_the_envoy_filter() {
    let (config, plugin) = envoy_filter_plugin();
    let wasm_plugin = istio_wasm_plugin();
    let spec = &wasm_plugin["spec"];
    // `extension_config` replaced the code with a local file: the manifest's own remote.
    let documents = applied("deploy/istio");
    let envoy_filter = find(&documents, "EnvoyFilter", "livegate");
    let remote = envoy_filter["spec"]["configPatches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["applyTo"] == "EXTENSION_CONFIG")
        .map(|p| &p["patch"]["value"]["typed_config"]["config"]["vm_config"]["code"]["remote"])
        .unwrap();
    assert_eq!(spec["url"], remote["http_uri"]["uri"]);
    assert_eq!(spec["sha256"], remote["sha256"]);
    assert_eq!(spec["pluginConfig"], plugin);
    assert_eq!(spec["pluginName"], config["name"]);
    assert_eq!(spec["failStrategy"], "FAIL_CLOSE");
    assert_eq!(spec["phase"], "AUTHN");
    assert_eq!(
        spec["vmConfig"]["env"],
        json!([{"name": INTERNAL_TOKEN, "valueFrom": "HOST"}])
    );
    assert_eq!(spec["targetRefs"], envoy_filter["spec"]["targetRefs"]);
}

#[test]
fn envoy_gateway_calls_the_cluster_of_the_control_plane_rule_and_patches_its_own_filter() {
    let documents = applied("deploy/envoy-gateway");
    let namespace = kustomization(&workspace_root().join("deploy/envoy-gateway"))["namespace"]
        .as_str()
        .unwrap()
        .to_string();
    let policy = find(&documents, "EnvoyExtensionPolicy", "livegate");
    let wasm = &policy["spec"]["wasm"][0];
    assert_eq!(wasm["code"]["type"], "Image");
    assert_eq!(wasm["failOpen"], false);
    assert_eq!(wasm["env"]["hostKeys"], json!([INTERNAL_TOKEN]));
    let filter = parse_filter_config(&wasm["config"]);

    // Envoy Gateway names a rule's cluster `httproute/NAMESPACE/ROUTE/rule/INDEX`.
    let route = find(&documents, "HTTPRoute", "livegate");
    let rule = route["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .position(|r| r["backendRefs"][0]["name"] == "livegate-control-plane")
        .unwrap();
    assert_eq!(
        filter.control_plane_cluster,
        format!("httproute/{namespace}/livegate/rule/{rule}")
    );
    // The paths the filter passes through untouched are those routed to the control plane.
    let routed: BTreeSet<&str> = route["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["backendRefs"][0]["name"] == "livegate-control-plane")
        .flat_map(|r| r["matches"].as_array().unwrap())
        .map(|m| m["path"]["value"].as_str().unwrap())
        .collect();
    for prefix in &filter.passthrough_prefixes {
        assert!(routed.contains(prefix.as_str()), "{prefix} not routed");
    }

    // The patch reaches the filter Envoy Gateway generates for this policy.
    let patch = find(&documents, "EnvoyPatchPolicy", "livegate");
    let operation = &patch["spec"]["jsonPatches"][0]["operation"];
    let filter_name = format!(
        "envoy.filters.http.wasm/envoyextensionpolicy/{namespace}/{}/wasm/0",
        policy["metadata"]["name"].as_str().unwrap()
    );
    assert!(
        operation["jsonPath"]
            .as_str()
            .unwrap()
            .contains(&format!("'{filter_name}'")),
        "{operation}"
    );
    assert_eq!(operation["path"], "allow_on_headers_stop_iteration");
    assert_eq!(operation["value"], true);
}

#[test]
fn every_mesh_install_pins_the_same_image_by_its_manifest_digest() {
    let istio = istio_wasm_plugin();
    let eg = applied("deploy/envoy-gateway");
    let image = &find(&eg, "EnvoyExtensionPolicy", "livegate")["spec"]["wasm"][0]["code"]["image"];
    assert_eq!(
        istio["spec"]["url"].as_str().unwrap(),
        format!("oci://{}", image["url"].as_str().unwrap())
    );
    assert_eq!(istio["spec"]["sha256"], image["sha256"]);
    let digest = image["sha256"].as_str().unwrap();
    assert!(
        digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()),
        "{digest}"
    );
}

/// The gateway pods' container env and liveness probe, from the overlay each mesh applies.
fn gateway_container(mesh: &str) -> Value {
    match mesh {
        "istio" => {
            let documents = applied("deploy/istio");
            let options = find(&documents, "ConfigMap", "livegate-gateway-options");
            let overlay: Value =
                serde_norway::from_str(options["data"]["deployment"].as_str().unwrap()).unwrap();
            overlay["spec"]["template"]["spec"]["containers"][0].clone()
        }
        _ => {
            let documents = applied("deploy/envoy-gateway");
            let proxy = &find(&documents, "EnvoyProxy", "livegate")["spec"]["provider"]
                ["kubernetes"]["envoyDeployment"];
            let mut container =
                proxy["patch"]["value"]["spec"]["template"]["spec"]["containers"][0].clone();
            container["env"] = proxy["container"]["env"].clone();
            container
        }
    }
}

#[test]
fn the_gateway_pods_carry_the_internal_token_and_a_liveness_probe_the_filter_answers() {
    let liveness = FilterConfig::default().liveness_paths;
    for mesh in ["istio", "envoy-gateway"] {
        let container = gateway_container(mesh);
        let env = container["env"].as_array().unwrap();
        let token = env.iter().find(|e| e["name"] == INTERNAL_TOKEN).unwrap();
        assert!(
            token["valueFrom"]["secretKeyRef"].is_object(),
            "{mesh}: from a Secret, never inline"
        );
        let path = container["livenessProbe"]["httpGet"]["path"]
            .as_str()
            .unwrap();
        assert!(liveness.iter().any(|p| p == path), "{mesh}: {path}");
    }
    assert_eq!(gateway_container("istio")["name"], "istio-proxy");
    assert_eq!(gateway_container("envoy-gateway")["name"], "envoy");
}

#[test]
fn only_the_gateway_pods_reach_the_control_plane_on_its_port() {
    for (dir, labels) in [
        (
            "deploy/istio",
            json!({"gateway.networking.k8s.io/gateway-name": "livegate"}),
        ),
        (
            "deploy/envoy-gateway",
            json!({"gateway.envoyproxy.io/owning-gateway-name": "livegate",
                   "gateway.envoyproxy.io/owning-gateway-namespace": "livegate"}),
        ),
    ] {
        let documents = applied(dir);
        let policy = find(&documents, "NetworkPolicy", "livegate-control-plane");
        let deployment = find(&documents, "Deployment", "livegate-control-plane");
        assert_eq!(
            policy["spec"]["podSelector"]["matchLabels"],
            deployment["spec"]["selector"]["matchLabels"]
        );
        let rules = policy["spec"]["ingress"].as_array().unwrap();
        assert_eq!(rules.len(), 1, "{dir}: one rule, from the gateway");
        for peer in rules[0]["from"].as_array().unwrap() {
            assert_eq!(peer["podSelector"]["matchLabels"], labels, "{dir}");
        }
        let service = find(&documents, "Service", "livegate-control-plane");
        assert_eq!(
            rules[0]["ports"][0]["port"],
            service["spec"]["ports"][0]["port"]
        );
        assert_eq!(
            service["spec"]["selector"],
            deployment["spec"]["selector"]["matchLabels"]
        );
    }
}
