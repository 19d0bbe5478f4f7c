//! `cargo xtask envoy-config`: the Envoy configuration of the containers, rendered from
//! the one template (`envoy/livegate.yaml.tmpl`) by the same `EnvoyConfig::render` the
//! local stack and the tests use, so the two can never drift.
//!
//! Two targets: docker-compose (`envoy/container.yaml`, baked into the Envoy image) and
//! Kubernetes (`deploy/kubernetes/envoy-configmap.yaml`, a ConfigMap holding the same
//! rendering with the Kubernetes names). `tests/tests/deployment/` includes this file
//! to check that both committed files equal a fresh rendering.

use std::path::PathBuf;

use livegate_tests::envoy::{Endpoint, EnvoyConfig, EnvoyLimits};

/// Where the Envoy image keeps the filter (see `deploy/docker/Dockerfile`).
pub const FILTER_WASM_IN_IMAGE: &str = "/etc/livegate/livegate_filter.wasm";
/// Envoy's probe listener in the containers (the kubelet's and compose's health checks).
pub const PROBE_PORT: u16 = 4004;
/// The committed docker-compose rendering, relative to the workspace root.
pub const COMPOSE_FILE: &str = "envoy/container.yaml";
/// The committed Kubernetes ConfigMap, relative to the workspace root.
pub const KUBERNETES_FILE: &str = "deploy/kubernetes/envoy-configmap.yaml";
/// The ConfigMap's name, as the Envoy Deployment mounts it.
pub const KUBERNETES_CONFIGMAP: &str = "livegate-envoy";
/// The model list's ConfigMap (`--config`), as the control plane's Deployment mounts it.
pub const MODEL_LIST_CONFIGMAP: &str = "livegate-model-list";
/// Where the control plane's Deployment mounts the model list's ConfigMap.
pub const MODEL_LIST_DIR_IN_POD: &str = "/etc/livegate/model-list";
/// The CA bundle of the Envoy image (the official one ships Ubuntu's `ca-certificates`):
/// what TLS deployments are checked against in the containers.
pub const CA_BUNDLE_IN_IMAGE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Which container platform the configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// docker-compose: services reached by their compose names.
    Compose,
    /// Kubernetes: Services reached by their names.
    Kubernetes,
}

impl Target {
    pub fn committed_file(self) -> &'static str {
        match self {
            Target::Compose => COMPOSE_FILE,
            Target::Kubernetes => KUBERNETES_FILE,
        }
    }

    /// The template values for this target; `filter_config` is the plugin's JSON.
    pub fn envoy_config(self, filter_config: &str, upstream: Option<Endpoint>) -> EnvoyConfig {
        let (control_plane, default_upstream) = match self {
            Target::Compose => ("control-plane", "upstream"),
            Target::Kubernetes => ("livegate-control-plane", "livegate-upstream"),
        };
        EnvoyConfig {
            listen_address: "0.0.0.0".to_string(),
            listen_port: 4000,
            // The kubelet reaches the pod's address: the probe listener is on every interface.
            probe_address: "0.0.0.0".to_string(),
            probe_port: PROBE_PORT,
            limits: EnvoyLimits::default(),
            // Admin can stop Envoy (`/quitquitquit`) and dump its configuration: loopback
            // only, in a pod and in a compose container alike (any container of the
            // network could reach it otherwise). Read it from inside the container.
            admin_address: "127.0.0.1".to_string(),
            admin_port: 9901,
            control_plane: Endpoint {
                host: control_plane.to_string(),
                port: 4001,
            },
            more_control_planes: Vec::new(),
            upstream: upstream.unwrap_or(Endpoint {
                host: default_upstream.to_string(),
                port: 4002,
            }),
            filter_config: filter_config.to_string(),
            filter_wasm: PathBuf::from(FILTER_WASM_IN_IMAGE),
            // Not part of the template: the container's command sets it.
            concurrency: 0,
            // Not part of the file either: a Secret puts it in Envoy's environment.
            internal_token: None,
            // A model list is not rendered into the containers' files yet.
            providers: livegate_tests::providers::Providers::default(),
        }
    }

    /// The complete file for this target, with its generated-file header.
    pub fn render(self, filter_config: &str, upstream: Option<Endpoint>) -> anyhow::Result<String> {
        self.render_with(filter_config, upstream, None)
    }

    /// The same with a model list (`--config`, LiteLLM's config.yaml): its deployments'
    /// clusters and routes, and its key variables in `host_env_keys`. No key is read: the
    /// file holds `os.environ/NAME` only (a key written in it is refused, unechoed), and the
    /// container's environment gives each NAME (a Secret; compose's env file). For
    /// Kubernetes, a second ConfigMap carries the list itself for the control plane.
    pub fn render_with(
        self,
        filter_config: &str,
        upstream: Option<Endpoint>,
        model_list: Option<&str>,
    ) -> anyhow::Result<String> {
        refuse_secrets(filter_config)?;
        let mut config = self.envoy_config(filter_config, upstream);
        if let Some(text) = model_list {
            config.providers =
                livegate_tests::providers::Providers::for_container(text, CA_BUNDLE_IN_IMAGE)?;
        }
        let envoy = config.render()?;
        Ok(match (self, model_list) {
            (Target::Compose, _) => format!("{COMPOSE_HEADER}{envoy}"),
            (Target::Kubernetes, None) => configmap(&envoy),
            (Target::Kubernetes, Some(text)) => {
                format!("{}---\n{}", configmap(&envoy), model_list_configmap(text))
            }
        })
    }
}

/// A committed rendering (and a ConfigMap) is no place for a secret: the upstream
/// credential reaches the filter from a Secret, as `LIVEGATE_UPSTREAM_AUTHORIZATION`.
fn refuse_secrets(filter_config: &str) -> anyhow::Result<()> {
    let config: serde_json::Value = serde_json::from_str(filter_config)
        .map_err(|e| anyhow::anyhow!("--filter-config is not JSON: {e}"))?;
    anyhow::ensure!(
        config
            .get("upstream_authorization")
            .is_none_or(|v| v.is_null()),
        "--filter-config: upstream_authorization is a secret and would be written into the \
         rendered file; give it to Envoy as LIVEGATE_UPSTREAM_AUTHORIZATION from a Secret \
         (deploy/kubernetes/upstream-secret.example.yaml, .env for compose)"
    );
    Ok(())
}

const COMPOSE_HEADER: &str = "\
# GENERATED by `cargo xtask envoy-config` from envoy/livegate.yaml.tmpl: do not edit,
# change the template (or the container values in xtask/src/envoy_config.rs) and
# regenerate. The tests in tests/tests/deployment/ fail when this file and a fresh
# rendering differ.
# This is the Envoy configuration of the container image (deploy/docker/Dockerfile,
# target `envoy`) that docker-compose.yml runs: admin listens on 127.0.0.1 inside the
# container only, and docker-compose.yml publishes nothing but the listener.
";

/// A ConfigMap with the rendered Envoy configuration under `envoy.yaml`.
fn configmap(envoy: &str) -> String {
    let mut text = String::from(
        "\
# GENERATED by `cargo xtask envoy-config --kubernetes` from envoy/livegate.yaml.tmpl:
# do not edit, regenerate. The tests in tests/tests/deployment/ fail when this file
# and a fresh rendering differ.
#
# This ConfigMap is the filter's configuration too: Envoy reads a Wasm plugin's
# configuration only inline (the StringValue under `configuration` below), never from a
# file, so the whole Envoy configuration lives here, rendered from the one template.
# To change the filter's configuration, regenerate it with
#   cargo xtask envoy-config --kubernetes --filter-config '{\"failure_mode\": \"closed\"}'
# (fields: docs/operations.md), then `kubectl rollout restart deployment/livegate-envoy`.
# Admin stays on 127.0.0.1 in the pod: see docs/operations.md for the stats.
apiVersion: v1
kind: ConfigMap
metadata:
  name: ",
    );
    text.push_str(KUBERNETES_CONFIGMAP);
    text.push_str(
        "
  labels:
    app.kubernetes.io/name: livegate-envoy
    app.kubernetes.io/part-of: livegate
data:
  envoy.yaml: |
",
    );
    for line in envoy.lines() {
        if !line.is_empty() {
            text.push_str("    ");
            text.push_str(line);
        }
        text.push('\n');
    }
    text
}

/// The model list for the control plane (`LIVEGATE_CONFIG` names the file; `path` lets the
/// Deployment set it only when this ConfigMap exists).
fn model_list_configmap(text: &str) -> String {
    let mut out = format!(
        "\
# GENERATED by `cargo xtask envoy-config --kubernetes --config FILE`: the model list the
# control plane reads (LIVEGATE_CONFIG) for prices and /model/info; the same file Envoy's
# deployments above come from. Provider keys are not here: os.environ/NAME only, each NAME
# from the Secret livegate-provider-keys in Envoy's environment.
apiVersion: v1
kind: ConfigMap
metadata:
  name: {MODEL_LIST_CONFIGMAP}
  labels:
    app.kubernetes.io/name: livegate-control-plane
    app.kubernetes.io/part-of: livegate
data:
  path: {MODEL_LIST_DIR_IN_POD}/config.yaml
  config.yaml: |
"
    );
    for line in text.lines() {
        if !line.is_empty() {
            out.push_str("    ");
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Renders `target` and writes it to `out` (`-` for stdout; default: the committed file).
pub fn write(
    target: Target,
    out: Option<PathBuf>,
    filter_config: &str,
    upstream: Option<Endpoint>,
    model_list: Option<PathBuf>,
) -> anyhow::Result<()> {
    let text = match model_list {
        None => target.render(filter_config, upstream)?,
        Some(file) => {
            let list = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("--config {}: {e}", file.display()))?;
            anyhow::ensure!(
                out.is_some(),
                "--config needs --out: the committed files are the demo's rendering"
            );
            target
                .render_with(filter_config, upstream, Some(&list))
                .map_err(|e| anyhow::anyhow!("--config {}: {e}", file.display()))?
        }
    };
    let out = out.unwrap_or_else(|| {
        livegate_tests::artifacts::workspace_root().join(target.committed_file())
    });
    if out.as_os_str() == "-" {
        print!("{text}");
    } else {
        std::fs::write(&out, text)?;
        eprintln!("==> wrote {}", out.display());
    }
    Ok(())
}

/// `host:port` → an endpoint.
pub fn parse_endpoint(text: &str) -> anyhow::Result<Endpoint> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("--upstream must be host:port, got `{text}`"))?;
    anyhow::ensure!(!host.is_empty(), "--upstream has no host: `{text}`");
    let port = port
        .parse::<u16>()
        .map_err(|_| anyhow::anyhow!("--upstream port `{port}` is not a port number"))?;
    Ok(Endpoint {
        host: host.to_string(),
        port,
    })
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn an_upstream_credential_is_never_written_into_a_committed_rendering() {
        for target in [Target::Compose, Target::Kubernetes] {
            let config = r#"{"upstream_authorization": "Bearer sk-provider"}"#;
            let error = target.render(config, None).unwrap_err().to_string();
            assert!(error.contains("LIVEGATE_UPSTREAM_AUTHORIZATION"), "{error}");
            assert!(!error.contains("sk-provider"), "{error}");
        }
        assert!(refuse_secrets(r#"{"upstream_authorization": null}"#).is_ok());
        assert!(refuse_secrets("{}").is_ok());
    }

    const LIST: &str = "model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_API_KEY
  - model_name: claude
    litellm_params:
      model: anthropic/claude-3-5-sonnet-20241022
      api_key: os.environ/ANTHROPIC_API_KEY
";

    #[test]
    fn a_model_list_renders_its_deployments_with_key_names_and_never_a_key() {
        for target in [Target::Compose, Target::Kubernetes] {
            let text = target.render_with("{}", None, Some(LIST)).unwrap();
            for expected in [
                "livegate_deployment_0",
                "livegate_deployment_1",
                "sni: \"api.openai.com\"",
                "sni: \"api.anthropic.com\"",
                CA_BUNDLE_IN_IMAGE,
                "OPENAI_API_KEY, ANTHROPIC_API_KEY",
            ] {
                // host_env_keys is sorted: ANTHROPIC before OPENAI.
                let expected = expected.replace(
                    "OPENAI_API_KEY, ANTHROPIC_API_KEY",
                    "ANTHROPIC_API_KEY, OPENAI_API_KEY",
                );
                assert!(text.contains(&expected), "{target:?}: {expected}");
            }
            // The only credentials named are variables: every api_key is os.environ/NAME.
            for line in text.lines().filter(|l| l.contains("api_key:")) {
                assert!(
                    line.trim_end().ends_with("_API_KEY") && line.contains("os.environ/"),
                    "{line}"
                );
            }
            let literal = LIST.replace("os.environ/OPENAI_API_KEY", "sk-live-0123456789");
            let error = target
                .render_with("{}", None, Some(&literal))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("api_key") && !error.contains("sk-live"),
                "{error}"
            );
        }
        let kubernetes = Target::Kubernetes
            .render_with("{}", None, Some(LIST))
            .unwrap();
        let documents: Vec<serde_norway::Value> = kubernetes
            .split("\n---\n")
            .map(|d| serde_norway::from_str(d).unwrap())
            .collect();
        assert_eq!(documents.len(), 2);
        let list = &documents[1];
        assert_eq!(
            list["metadata"]["name"].as_str(),
            Some(MODEL_LIST_CONFIGMAP)
        );
        let carried = list["data"]["config.yaml"].as_str().unwrap();
        assert_eq!(
            livegate_contract::model_list::ModelList::parse(carried).unwrap(),
            livegate_contract::model_list::ModelList::parse(LIST).unwrap()
        );
    }
}
