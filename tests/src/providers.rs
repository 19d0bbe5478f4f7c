//! A model list as Envoy runs it: one cluster and one route per deployment, the filter's
//! `deployments` table, and the provider keys for Envoy's environment (never its file).

use std::collections::BTreeMap;
use std::path::PathBuf;

use livegate_contract::deployment::DEPLOYMENT_HEADER;
use livegate_contract::headers::{FAILURE_MODE, KEY_ALIAS, KEY_HASH, STALE, TEAM_ID, USER_ID};
use livegate_contract::model_list::{ModelList, Routed};

/// Where the system's CA bundle usually is, when `SSL_CERT_FILE` is unset.
pub const SYSTEM_CA_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// The variables the filter's VM always gets from Envoy's environment.
const BASE_ENV_KEYS: [&str; 2] = [
    crate::internal_token::ENV,
    "LIVEGATE_UPSTREAM_AUTHORIZATION",
];

/// The providers of a model list, ready to render; `Default`: none (the one upstream).
#[derive(Debug, Clone, Default)]
pub struct Providers {
    pub deployments: Vec<Routed>,
    /// `NAME` → the key, put in Envoy's environment only.
    pub keys: BTreeMap<String, String>,
    /// The CA bundle TLS deployments are verified against.
    pub ca_file: PathBuf,
}

impl Providers {
    /// Reads a model list (LiteLLM's `config.yaml`): refused fields and unset variables
    /// are errors naming them; the CA bundle is `SSL_CERT_FILE` or the system's.
    pub fn from_model_list(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Providers> {
        let list = ModelList::parse(text)?;
        let keys = list.credentials(&env)?;
        let ca_file = match env("SSL_CERT_FILE").filter(|f| !f.is_empty()) {
            Some(file) => {
                let file = PathBuf::from(file);
                anyhow::ensure!(
                    file.is_file(),
                    "SSL_CERT_FILE {} is not a file",
                    file.display()
                );
                file
            }
            None => SYSTEM_CA_BUNDLES
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no CA bundle: set SSL_CERT_FILE (none of {SYSTEM_CA_BUNDLES:?} exists)"
                    )
                })?,
        };
        Ok(Providers {
            deployments: list.deployments,
            keys,
            ca_file,
        })
    }

    /// A model list for a container's rendering (`cargo xtask envoy-config --config`): no
    /// key is read (the container's environment has them, from a Secret or an env file),
    /// and TLS is checked against `ca_file`, a path inside the container.
    pub fn for_container(text: &str, ca_file: &str) -> anyhow::Result<Providers> {
        let list = ModelList::parse(text)?;
        Ok(Providers {
            deployments: list.deployments,
            keys: BTreeMap::new(),
            ca_file: PathBuf::from(ca_file),
        })
    }

    /// The filter's configuration with the `deployments` table added.
    pub fn filter_config(&self, base: &str) -> anyhow::Result<String> {
        if self.deployments.is_empty() {
            return Ok(base.to_owned());
        }
        let mut config: serde_json::Value = serde_json::from_str(base)
            .map_err(|e| anyhow::anyhow!("the filter configuration is not JSON: {e}"))?;
        let object = config
            .as_object_mut()
            .ok_or_else(|| anyhow::anyhow!("the filter configuration is not a JSON object"))?;
        anyhow::ensure!(
            !object.contains_key("deployments"),
            "the filter configuration names deployments itself: give the model list (--config) instead"
        );
        let table: Vec<_> = self.deployments.iter().map(|r| &r.deployment).collect();
        object.insert("deployments".into(), serde_json::to_value(table)?);
        Ok(config.to_string())
    }

    /// `host_env_keys`: the base variables and every provider key's (each once).
    pub fn host_env_keys(&self) -> String {
        let keys: std::collections::BTreeSet<&str> = self
            .deployments
            .iter()
            .filter_map(|r| r.deployment.api_key_env.as_deref())
            .collect();
        let names: Vec<&str> = BASE_ENV_KEYS.iter().copied().chain(keys).collect();
        format!("[{}]", names.join(", "))
    }

    /// What the catch-all route does: the one upstream, or, with a model list, a 404
    /// (routes that name no model have no deployment to go to).
    pub fn catch_all_action(&self) -> String {
        if self.deployments.is_empty() {
            "route: { cluster: livegate_upstream, timeout: 300s }".into()
        } else {
            "direct_response: { status: 404, body: { inline_string: \"no deployment of the model list serves this route (model routes and GET /v1/models only)\" } }".into()
        }
    }

    /// One route per deployment, each line indented for the route list.
    pub fn routes(&self, max_request_body: u64) -> String {
        let quoted = |text: &str| serde_json::Value::from(text).to_string();
        let mut out = String::new();
        let internal = [
            DEPLOYMENT_HEADER,
            KEY_ALIAS,
            KEY_HASH,
            TEAM_ID,
            USER_ID,
            STALE,
            FAILURE_MODE,
        ];
        for routed in &self.deployments {
            let d = &routed.deployment;
            let t = &routed.transport;
            let default_port = if t.tls { 443 } else { 80 };
            let authority = if t.port == default_port {
                t.host.clone()
            } else {
                format!("{}:{}", t.host, t.port)
            };
            out.push_str(&format!(
                "\n              - match: {{ prefix: \"/\", headers: [{{ name: {DEPLOYMENT_HEADER}, string_match: {{ exact: {route} }} }}] }}\
                 \n                route: {{ cluster: {route}, timeout: {timeout}s, host_rewrite_literal: {authority} }}\
                 \n                request_headers_to_remove: [{internal}]\
                 \n                request_body_buffer_limit: {max_request_body}\
                 \n                typed_per_filter_config:\
                 \n                  envoy.filters.http.buffer:\
                 \n                    \"@type\": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute\
                 \n                    buffer: {{ max_request_bytes: {max_request_body} }}",
                route = quoted(&d.route),
                timeout = t.timeout_seconds,
                authority = quoted(&authority),
                internal = internal.join(", "),
            ));
        }
        out
    }

    /// One cluster per deployment: TLS with SNI and the CA for https (HTTP/2 where the
    /// provider offers it by ALPN), plain HTTP/1.1 for http.
    pub fn clusters(&self) -> String {
        let quoted = |text: &str| serde_json::Value::from(text).to_string();
        let mut out = String::new();
        for routed in &self.deployments {
            let d = &routed.deployment;
            let t = &routed.transport;
            let host = quoted(&t.host);
            out.push_str(&format!(
                "\n  - name: {route}\
                 \n    type: LOGICAL_DNS\
                 \n    dns_lookup_family: V4_PREFERRED\
                 \n    connect_timeout: 5s\
                 \n    load_assignment:\
                 \n      cluster_name: {route}\
                 \n      endpoints:\
                 \n      - lb_endpoints:\
                 \n        - endpoint: {{ address: {{ socket_address: {{ address: {host}, port_value: {port} }} }} }}",
                route = quoted(&d.route),
                port = t.port,
            ));
            if !t.tls {
                continue;
            }
            let ip = t.host.parse::<std::net::IpAddr>().is_ok();
            let san_type = if ip { "IP_ADDRESS" } else { "DNS" };
            // SNI names a host, never an address (RFC 6066).
            let sni = if ip {
                String::new()
            } else {
                format!("\n        sni: {host}")
            };
            out.push_str(&format!(
                "\n    typed_extension_protocol_options:\
                 \n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\
                 \n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\
                 \n        auto_config: {{ http_protocol_options: {{}}, http2_protocol_options: {{}} }}\
                 \n    transport_socket:\
                 \n      name: envoy.transport_sockets.tls\
                 \n      typed_config:\
                 \n        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext{sni}\
                 \n        common_tls_context:\
                 \n          alpn_protocols: [h2, http/1.1]\
                 \n          validation_context:\
                 \n            trusted_ca: {{ filename: {ca} }}\
                 \n            match_typed_subject_alt_names: [{{ san_type: {san_type}, matcher: {{ exact: {host} }} }}]",
                ca = quoted(&self.ca_file.display().to_string()),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "model_list:\n  - model_name: gpt-4o\n    litellm_params:\n      model: openai/gpt-4o\n      api_base: https://localhost:8443/v1\n      api_key: os.environ/PROVIDER_TEST_KEY\n  - model_name: local\n    litellm_params:\n      model: openai/llama\n      api_base: http://127.0.0.1:9000\n";

    fn providers() -> Providers {
        let ca = std::env::temp_dir();
        let ca_file = ca.join("livegate-providers-test-ca.pem");
        std::fs::write(&ca_file, "x").unwrap();
        let file = ca_file.display().to_string();
        Providers::from_model_list(LIST, |name| match name {
            "PROVIDER_TEST_KEY" => Some("sk-provider-secret".into()),
            "SSL_CERT_FILE" => Some(file.clone()),
            _ => None,
        })
        .unwrap()
    }

    #[test]
    fn the_rendering_carries_no_key_only_its_variable_name() {
        let p = providers();
        let rendered = format!(
            "{}{}{}{}",
            p.routes(10),
            p.clusters(),
            p.host_env_keys(),
            p.filter_config("{}").unwrap()
        );
        assert!(!rendered.contains("sk-provider-secret"), "{rendered}");
        assert!(p.host_env_keys().contains("PROVIDER_TEST_KEY"));
        assert!(p
            .filter_config("{}")
            .unwrap()
            .contains("\"api_key_env\":\"PROVIDER_TEST_KEY\""));
    }

    #[test]
    fn https_deployments_get_tls_with_sni_and_http_ones_do_not() {
        let clusters = providers().clusters();
        let (tls, plain) = clusters.split_once("livegate_deployment_1").unwrap();
        assert!(
            tls.contains("sni: \"localhost\"") && tls.contains("alpn_protocols: [h2, http/1.1]")
        );
        assert!(tls.contains("livegate-providers-test-ca.pem"));
        assert!(!plain.contains("transport_socket"));
        let routes = providers().routes(10);
        assert!(
            routes.contains("host_rewrite_literal: \"localhost:8443\""),
            "{routes}"
        );
        assert!(
            routes.contains("host_rewrite_literal: \"127.0.0.1:9000\""),
            "{routes}"
        );
    }

    #[test]
    fn an_unset_key_is_named_and_none_is_the_one_upstream() {
        let error = Providers::from_model_list(LIST, |_| None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("PROVIDER_TEST_KEY"), "{error}");
        let none = Providers::default();
        assert_eq!(none.filter_config("{\"a\":1}").unwrap(), "{\"a\":1}");
        assert_eq!(none.routes(1), "");
        assert!(none.catch_all_action().contains("livegate_upstream"));
    }
}
