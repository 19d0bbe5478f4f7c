//! Helpers of the deployment tests: read the files, find things in them.

use std::path::PathBuf;

use clap::CommandFactory;

use livegate_filter::config::Config as FilterConfig;
use livegate_tests::artifacts;
use livegate_tests::envoy::Envoy;
use serde::Deserialize;
use serde_norway::Value;

use super::envoy_config::{self, FILTER_WASM_IN_IMAGE};

pub fn root() -> PathBuf {
    artifacts::workspace_root()
}

pub fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn yaml(text: &str) -> Value {
    serde_norway::from_str(text).unwrap()
}

pub fn compose() -> Value {
    yaml(&read("docker-compose.yml"))
}

pub fn kustomization() -> Value {
    yaml(&read("deploy/kubernetes/kustomization.yaml"))
}

/// Every document of every manifest the kustomization lists.
pub fn kubernetes() -> Vec<Value> {
    let mut documents = Vec::new();
    for file in strings(&kustomization()["resources"]) {
        let text = read(&format!("deploy/kubernetes/{file}"));
        for document in serde_norway::Deserializer::from_str(&text) {
            documents.push(Value::deserialize(document).unwrap_or_else(|e| panic!("{file}: {e}")));
        }
    }
    documents
}

pub fn manifest(kind: &str, name: &str) -> Value {
    kubernetes()
        .into_iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/kubernetes"))
}

/// The Secret the control plane reads, as the example documents it (not applied by kustomize).
pub fn example_secret() -> Value {
    let secret = yaml(&read("deploy/kubernetes/secret.example.yaml"));
    assert_eq!(secret["kind"].as_str(), Some("Secret"));
    assert!(
        !strings(&kustomization()["resources"]).contains(&"secret.example.yaml".to_string()),
        "placeholders would overwrite the operator's secrets"
    );
    secret
}

pub fn compose_envoy_text() -> String {
    read(envoy_config::COMPOSE_FILE)
}

pub fn kubernetes_envoy_text() -> String {
    manifest("ConfigMap", envoy_config::KUBERNETES_CONFIGMAP)["data"]["envoy.yaml"]
        .as_str()
        .expect("the ConfigMap has envoy.yaml")
        .to_string()
}

pub fn compose_envoy() -> Value {
    yaml(&compose_envoy_text())
}

pub fn kubernetes_envoy() -> Value {
    yaml(&kubernetes_envoy_text())
}

pub fn wasm_filter(envoy: &Value) -> Value {
    seq(
        &envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["http_filters"],
    )
    .iter()
    .find(|f| f["name"].as_str() == Some("envoy.filters.http.wasm"))
    .expect("the wasm filter")["typed_config"]
        .clone()
}

/// The listener called `name` in an Envoy configuration.
pub fn listener(envoy: &Value, name: &str) -> Value {
    seq(&envoy["static_resources"]["listeners"])
        .iter()
        .find(|l| l["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no listener {name}"))
        .clone()
}

/// The routes of a listener's (first) HTTP connection manager.
pub fn listener_routes(listener: &Value) -> Vec<Value> {
    seq(
        &listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
            ["virtual_hosts"][0]["routes"],
    )
    .to_vec()
}

pub fn effective_filter_config(envoy: &Value) -> FilterConfig {
    let raw = wasm_filter(envoy)["config"]["configuration"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    FilterConfig::parse(Some(raw.as_bytes())).unwrap()
}

pub fn cluster_endpoint(envoy: &Value, name: &str) -> (String, u16) {
    let cluster = seq(&envoy["static_resources"]["clusters"])
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no cluster {name}"))
        .clone();
    let address = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        ["address"]["socket_address"];
    (
        address["address"].as_str().unwrap().to_string(),
        address["port_value"].as_u64().unwrap() as u16,
    )
}

/// `envoy --mode validate` on `text`, with the image's filter path pointed at the built one.
pub fn assert_envoy_validates(name: &str, text: &str) {
    let wasm = artifacts::require(&artifacts::filter_wasm(), "the filter (.wasm)").unwrap();
    let text = text.replace(FILTER_WASM_IN_IMAGE, &wasm.display().to_string());
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    let (valid, log) = Envoy::validate(&path).unwrap();
    assert!(valid, "Envoy refuses the {name} configuration:\n{log}");
}

pub struct Probe {
    pub path: String,
    pub port: String,
}

pub fn probe(deployment: &str, kind: &str) -> Probe {
    let container =
        &manifest("Deployment", deployment)["spec"]["template"]["spec"]["containers"][0];
    let get = &container[kind]["httpGet"];
    Probe {
        path: get["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{deployment} has no {kind}"))
            .to_string(),
        port: get["port"].as_str().unwrap_or_default().to_string(),
    }
}

pub fn container_port(deployment: &str, name: &str) -> u16 {
    let container =
        &manifest("Deployment", deployment)["spec"]["template"]["spec"]["containers"][0];
    seq(&container["ports"])
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("{deployment} has no port {name}")) as u16
}

pub fn service_port(service: &str) -> u16 {
    manifest("Service", service)["spec"]["ports"][0]["port"]
        .as_u64()
        .unwrap() as u16
}

pub fn kubernetes_env(deployment: &str, name: &str) -> String {
    let container =
        &manifest("Deployment", deployment)["spec"]["template"]["spec"]["containers"][0];
    seq(&container["env"])
        .iter()
        .find(|v| v["name"].as_str() == Some(name))
        .and_then(|v| v["value"].as_str())
        .unwrap_or_else(|| panic!("{deployment} does not set {name}"))
        .to_string()
}

/// The port in the `| what | host:port |` table of docs/architecture.md.
pub fn documented_port(what: &str) -> u16 {
    let doc = read("docs/architecture.md");
    let row = doc
        .lines()
        .find(|line| line.starts_with(&format!("| {what}")))
        .unwrap_or_else(|| panic!("docs/architecture.md documents no port for {what}"));
    let cell = row.split('|').nth(2).expect("a second cell");
    let address = cell.split('`').nth(1).expect("a `host:port` cell");
    address.rsplit(':').next().unwrap().parse().unwrap()
}

/// The `default_value_t` of the `cargo xtask up` flag stored in field `field`.
pub fn up_default(field: &str) -> u16 {
    let source = read("xtask/src/up.rs");
    let lines: Vec<&str> = source.lines().map(str::trim).collect();
    let at = lines
        .iter()
        .position(|line| *line == format!("{field}: u16,"))
        .unwrap_or_else(|| panic!("xtask up has no {field}"));
    let attribute = lines[at - 1];
    let value = attribute
        .split("default_value_t = ")
        .nth(1)
        .unwrap_or_else(|| panic!("{field} has no default: {attribute}"));
    value.trim_end_matches(")]").parse().unwrap()
}

pub fn xtask_const(name: &str) -> String {
    let source = read("xtask/src/setup.rs");
    let line = source
        .lines()
        .find(|line| line.starts_with(&format!("pub const {name}: &str = ")))
        .unwrap_or_else(|| panic!("xtask/src/setup.rs has no {name}"));
    line.split('"').nth(1).unwrap().to_string()
}

pub fn xtask_envoy_version() -> String {
    let version = xtask_const("ENVOY_VERSION");
    assert!(version.split('.').count() == 3, "{version}");
    version
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
pub fn dockerfile() -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in read("deploy/docker/Dockerfile").lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part.trim());
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    lines
}

/// The instructions of one stage, from its FROM to the next.
pub fn stage(lines: &[String], name: &str) -> Vec<String> {
    let start = lines
        .iter()
        .position(|line| line.starts_with("FROM ") && line.ends_with(&format!(" AS {name}")))
        .unwrap_or_else(|| panic!("no stage {name}"));
    lines[start..]
        .iter()
        .enumerate()
        .take_while(|(i, line)| *i == 0 || !line.starts_with("FROM "))
        .map(|(_, line)| line.clone())
        .collect()
}

/// Every `cargo build …` in the Dockerfile's RUN instructions, as words.
pub fn dockerfile_cargo_builds() -> Vec<Vec<String>> {
    dockerfile()
        .iter()
        .filter(|line| line.starts_with("RUN"))
        .flat_map(|line| line.split("&&").map(str::to_string).collect::<Vec<_>>())
        .filter_map(|part| {
            let at = part.find("cargo build")?;
            Some(part[at..].split_whitespace().map(str::to_string).collect())
        })
        .collect()
}

pub fn has_pair(words: &[String], flag: &str, value: &str) -> bool {
    words
        .windows(2)
        .any(|pair| pair[0] == flag && pair[1] == value)
}

pub fn rust_sources(dir: &str) -> String {
    let mut text = String::new();
    let mut stack = vec![root().join(dir)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                text.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    text
}

pub fn env_file(path: &str) -> Vec<(String, String)> {
    read(path)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn glob_prefix_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) if !prefix.contains('*') => name.starts_with(prefix),
        _ => false,
    }
}

pub fn seq(value: &Value) -> &[Value] {
    value.as_sequence().map(Vec::as_slice).unwrap_or_default()
}

pub fn mapping(value: &Value) -> Vec<(Value, Value)> {
    value
        .as_mapping()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

pub fn strings(value: &Value) -> Vec<String> {
    seq(value)
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// The workspace members of the root Cargo.toml (one `members = [...]` line).
pub fn workspace_members() -> Vec<String> {
    let manifest = read("Cargo.toml");
    let line = manifest
        .lines()
        .find(|line| line.trim_start().starts_with("members"))
        .expect("[workspace] members");
    line.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[derive(Debug)]
pub struct Flag {
    pub long: String,
    pub env: String,
    pub default: Option<String>,
}

/// The `serve` flags that have an environment variable, as clap itself describes them.
pub fn control_plane_flags() -> Vec<Flag> {
    let command = livegate_control_plane::cli::Cli::command();
    let serve = command
        .find_subcommand("serve")
        .expect("the control plane has a serve subcommand");
    serve
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_str()?.to_string();
            let long = format!("--{}", arg.get_long()?);
            let default = arg
                .get_default_values()
                .first()
                .map(|value| value.to_string_lossy().into_owned());
            Some(Flag { long, env, default })
        })
        .collect()
}

/// Every metric name the control plane exports, read from its own exposition text.
pub fn control_plane_metric_names() -> Vec<String> {
    let metrics = livegate_control_plane::metrics::Metrics::default();
    let text = metrics.render(&livegate_control_plane::db::Snapshot::default(), 0, None);
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The fields of the filter's `Config` and `CacheConfig` (as `cache.<field>`).
pub fn filter_config_fields() -> Vec<String> {
    let source = read("filter/src/config.rs");
    let fields = |name: &str| -> Vec<String> {
        let body = source
            .split(&format!("pub struct {name} {{"))
            .nth(1)
            .and_then(|rest| rest.split('}').next())
            .unwrap_or_else(|| panic!("filter/src/config.rs has no struct {name}"));
        body.lines()
            .filter_map(|line| line.trim().strip_prefix("pub "))
            .filter_map(|line| line.split(':').next().map(str::to_string))
            .collect()
    };
    let mut all = fields("Config");
    all.retain(|field| !["cache", "metering", "rate_limits"].contains(&field.as_str()));
    all.extend(
        fields("CacheConfig")
            .into_iter()
            .map(|f| format!("cache.{f}")),
    );
    all.extend(
        fields("MeteringConfig")
            .into_iter()
            .map(|f| format!("metering.{f}")),
    );
    all.extend(
        fields("RateLimitsConfig")
            .into_iter()
            .map(|f| format!("rate_limits.{f}")),
    );
    assert!(all.len() >= 10, "{all:?}");
    all
}
