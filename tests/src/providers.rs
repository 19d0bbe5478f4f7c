//! A model list as Envoy runs it: one cluster and one route per deployment, the filter's
//! `deployments` table, and the provider keys for Envoy's environment (never its file).

use std::collections::BTreeMap;
use std::path::PathBuf;

use livegate_contract::deployment::DEPLOYMENT_HEADER;
use livegate_contract::headers::{FAILURE_MODE, KEY_ALIAS, KEY_HASH, STALE, TEAM_ID, USER_ID};
use livegate_contract::model_list::{Chain, ModelList, Routed, Router};

/// The filter's request header carrying the client's path to each try (`filter::attempt`).
pub const CLIENT_PATH_HEADER: &str = "x-livegate-client-path";

/// Most retries in flight at once per chain cluster (Envoy's default, 3, would turn the
/// fourth concurrent failover into the provider's error).
pub const CHAIN_MAX_RETRIES: u32 = 1024;

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
    /// Retries and fallbacks (`router_settings`).
    pub router: Router,
}

impl Providers {
    /// A model list read with `keys` (variable, value) as its environment and `ca_file`
    /// (a provider double's CA) as `SSL_CERT_FILE`: what the tests give it.
    pub fn with_keys(
        text: &str,
        keys: &[(&str, &str)],
        ca_file: &std::path::Path,
    ) -> anyhow::Result<Providers> {
        let ca_file = ca_file.display().to_string();
        Providers::from_model_list(text, |name| match name {
            "SSL_CERT_FILE" => Some(ca_file.clone()),
            _ => keys
                .iter()
                .find(|(variable, _)| *variable == name)
                .map(|(_, value)| (*value).to_owned()),
        })
    }

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
            router: list.router,
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
            router: list.router,
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

    /// The chains of tries, one per deployment (its first try); one member: no retry.
    pub fn chains(&self) -> Vec<Chain> {
        self.router.chains(&self.deployments)
    }

    /// The aggregate cluster of the chain starting at deployment `start`.
    pub fn chain_cluster(start: usize) -> String {
        format!("livegate_chain_{start}")
    }

    /// One route per deployment, each line indented for the route list. A deployment whose
    /// chain has other members routes to the chain's aggregate cluster, retrying on a 429,
    /// a 5xx, a reset or a refused connection, each retry at the next member (Envoy's
    /// previous_priorities: every member is one priority of the aggregate).
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
        for (routed, chain) in self.deployments.iter().zip(self.chains()) {
            let d = &routed.deployment;
            let t = &routed.transport;
            let authority = authority(t);
            let (cluster, timeout, retry, internal) = if chain.members.len() > 1 {
                // A try may take its deployment's timeout (the longest of the chain's:
                // Envoy has one per-try timeout per route); the whole request, the sum.
                let timeouts = chain
                    .members
                    .iter()
                    .map(|&i| self.deployments[i].transport.timeout_seconds);
                let per_try = timeouts.clone().fold(t.timeout_seconds, f64::max);
                let timeout: f64 = timeouts.sum();
                // Each try at the next member; the last member's answer is the client's. A
                // try that times out is a 504 to the retry policy (`5xx`): retried too.
                let retry = format!(
                    "\n                  retry_policy:\
                     \n                    per_try_timeout: {per_try}s\
                     \n                    retry_on: \"5xx,reset,connect-failure,retriable-status-codes\"\
                     \n                    retriable_status_codes: [429]\
                     \n                    num_retries: {retries}\
                     \n                    retry_priority:\
                     \n                      name: envoy.retry_priorities.previous_priorities\
                     \n                      typed_config:\
                     \n                        \"@type\": type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig\
                     \n                        update_frequency: 1",
                    retries = chain.members.len() - 1,
                );
                // The client's path stays for the tries: the attempt filter removes it.
                (
                    Self::chain_cluster(chain.start),
                    timeout,
                    retry,
                    internal.join(", "),
                )
            } else {
                let mut names = internal.to_vec();
                names.push(CLIENT_PATH_HEADER);
                (
                    d.route.clone(),
                    t.timeout_seconds,
                    String::new(),
                    names.join(", "),
                )
            };
            out.push_str(&format!(
                "\n              - match: {{ prefix: \"/\", headers: [{{ name: {DEPLOYMENT_HEADER}, string_match: {{ exact: {route} }} }}] }}\
                 \n                route:\
                 \n                  cluster: {cluster}\
                 \n                  timeout: {timeout}s\
                 \n                  host_rewrite_literal: {authority}{retry}\
                 \n                request_headers_to_remove: [{internal}]\
                 \n                request_body_buffer_limit: {max_request_body}\
                 \n                typed_per_filter_config:\
                 \n                  envoy.filters.http.buffer:\
                 \n                    \"@type\": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute\
                 \n                    buffer: {{ max_request_bytes: {max_request_body} }}",
                route = quoted(&d.route),
                cluster = quoted(&cluster),
                authority = quoted(&authority),
            ));
        }
        out
    }

    /// The attempt filter's configuration: every deployment and its authority, no key.
    pub fn attempt_config(&self) -> anyhow::Result<String> {
        let table: Vec<_> = self.deployments.iter().map(|r| &r.deployment).collect();
        let authorities: BTreeMap<&str, String> = self
            .deployments
            .iter()
            .map(|r| (r.deployment.route.as_str(), authority(&r.transport)))
            .collect();
        Ok(serde_json::json!({
            "role": "attempt",
            "deployments": table,
            "authorities": authorities,
        })
        .to_string())
    }

    /// One aggregate cluster per chain of more than one member: its members as
    /// priorities, in order, and the filter as an upstream HTTP filter (`role: attempt`)
    /// that shapes each try for the member Envoy picked.
    pub fn chain_clusters(&self, filter_wasm: &std::path::Path) -> anyhow::Result<String> {
        let quoted = |text: &str| serde_json::Value::from(text).to_string();
        let config = quoted(&self.attempt_config()?);
        let wasm = quoted(&filter_wasm.display().to_string());
        let keys: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        let mut out = String::new();
        for chain in self.chains().into_iter().filter(|c| c.members.len() > 1) {
            let members: Vec<String> = chain
                .members
                .iter()
                .map(|&i| quoted(&self.deployments[i].deployment.route))
                .collect();
            out.push_str(&format!(
                "\n  - name: {name}\
                 \n    connect_timeout: 5s\
                 \n    lb_policy: CLUSTER_PROVIDED\
                 \n    circuit_breakers:\
                 \n      thresholds: [{{ max_retries: {CHAIN_MAX_RETRIES} }}]\
                 \n    cluster_type:\
                 \n      name: envoy.clusters.aggregate\
                 \n      typed_config:\
                 \n        \"@type\": type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig\
                 \n        clusters: [{members}]\
                 \n    typed_extension_protocol_options:\
                 \n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\
                 \n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\
                 \n        explicit_http_config: {{ http_protocol_options: {{}} }}\
                 \n        http_filters:\
                 \n        - name: envoy.filters.http.wasm\
                 \n          typed_config:\
                 \n            \"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm\
                 \n            config:\
                 \n              name: livegate_attempt\
                 \n              root_id: livegate_attempt\
                 \n              allow_on_headers_stop_iteration: true\
                 \n              configuration:\
                 \n                \"@type\": type.googleapis.com/google.protobuf.StringValue\
                 \n                value: {config}\
                 \n              vm_config:\
                 \n                vm_id: livegate_attempt\
                 \n                runtime: envoy.wasm.runtime.v8\
                 \n                code: {{ local: {{ filename: {wasm} }} }}\
                 \n                environment_variables: {{ host_env_keys: [{keys}] }}\
                 \n        - name: envoy.filters.http.upstream_codec\
                 \n          typed_config:\
                 \n            \"@type\": type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec",
                name = quoted(&Self::chain_cluster(chain.start)),
                members = members.join(", "),
                keys = keys.join(", "),
            ));
        }
        Ok(out)
    }

    /// One cluster per deployment: TLS with SNI and the CA for https (HTTP/2 where the
    /// provider offers it by ALPN), plain HTTP/1.1 for http.
    pub fn clusters(&self) -> String {
        let quoted = |text: &str| serde_json::Value::from(text).to_string();
        let mut out = String::new();
        // A chain's aggregate cluster speaks one codec to every member (HTTP/1.1, which
        // every provider serves): its members offer only that by ALPN.
        let chained: Vec<usize> = self
            .chains()
            .into_iter()
            .filter(|c| c.members.len() > 1)
            .flat_map(|c| c.members)
            .collect();
        for (i, routed) in self.deployments.iter().enumerate() {
            let d = &routed.deployment;
            let t = &routed.transport;
            let host = quoted(&t.host);
            let (protocols, alpn) = if chained.contains(&i) {
                (
                    "explicit_http_config: { http_protocol_options: {} }",
                    "[http/1.1]",
                )
            } else {
                (
                    "auto_config: { http_protocol_options: {}, http2_protocol_options: {} }",
                    "[h2, http/1.1]",
                )
            };
            out.push_str(&format!(
                "\n  - name: {route}\
                 \n    type: LOGICAL_DNS\
                 \n    dns_lookup_family: V4_PREFERRED\
                 \n    connect_timeout: 5s\
                 \n    load_assignment:\
                 \n      cluster_name: {route}\
                 \n      endpoints:\
                 \n      - lb_endpoints:\
                 \n        - endpoint: {{ address: {{ socket_address: {{ address: {host}, port_value: {port} }} }} }}\
                 \n          metadata: {{ filter_metadata: {{ livegate: {{ deployment: {route} }} }} }}",
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
                 \n        {protocols}\
                 \n    transport_socket:\
                 \n      name: envoy.transport_sockets.tls\
                 \n      typed_config:\
                 \n        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext{sni}\
                 \n        common_tls_context:\
                 \n          alpn_protocols: {alpn}\
                 \n          validation_context:\
                 \n            trusted_ca: {{ filename: {ca} }}\
                 \n            match_typed_subject_alt_names: [{{ san_type: {san_type}, matcher: {{ exact: {host} }} }}]",
                ca = quoted(&self.ca_file.display().to_string()),
            ));
        }
        out
    }
}

/// The `Host` a deployment's provider wants: the port only when not the scheme's.
fn authority(t: &livegate_contract::model_list::Transport) -> String {
    let default_port = if t.tls { 443 } else { 80 };
    if t.port == default_port {
        t.host.clone()
    } else {
        format!("{}:{}", t.host, t.port)
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
        Providers::with_keys(
            LIST,
            &[("PROVIDER_TEST_KEY", "sk-provider-secret")],
            &ca_file,
        )
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

    const CHAINED: &str = "model_list:\n  - model_name: gpt-4o\n    litellm_params:\n      model: openai/gpt-4o\n      api_base: https://localhost:8443/v1\n      api_key: os.environ/PROVIDER_TEST_KEY\n      timeout: 30\n  - model_name: gpt-4o\n    litellm_params:\n      model: openai/gpt-4o\n      api_base: http://127.0.0.1:9000\n      timeout: 20\n  - model_name: mini\n    litellm_params:\n      model: openai/gpt-4o-mini\n      api_base: https://localhost:8443/v1\n      api_key: os.environ/PROVIDER_TEST_KEY\n  - model_name: alone\n    litellm_params:\n      model: openai/alone\n      api_base: https://localhost:8443/v1\nrouter_settings:\n  fallbacks: [{gpt-4o: [mini]}]\n  num_retries: 1\n";

    fn chained() -> Providers {
        let ca_file = std::env::temp_dir().join("livegate-providers-chain-test-ca.pem");
        std::fs::write(&ca_file, "x").unwrap();
        Providers::with_keys(
            CHAINED,
            &[("PROVIDER_TEST_KEY", "sk-provider-secret")],
            &ca_file,
        )
        .unwrap()
    }

    #[test]
    fn a_chain_routes_to_its_aggregate_with_retries_and_one_deployment_routes_alone() {
        let p = chained();
        let routes = p.routes(10);
        let route_of = |d: &str| {
            let at = routes.find(&format!("exact: \"{d}\"")).unwrap();
            let end = routes[at..]
                .find("- match")
                .map_or(routes.len(), |e| at + e);
            routes[at..end].to_owned()
        };
        let first = route_of("livegate_deployment_0");
        assert!(first.contains("cluster: \"livegate_chain_0\""), "{first}");
        assert!(first.contains("num_retries: 2"), "{first}");
        assert!(first.contains("retriable_status_codes: [429]"), "{first}");
        assert!(first.contains("previous_priorities"), "{first}");
        assert!(first.contains("per_try_timeout: 600s") && first.contains("timeout: 650s"));
        assert!(
            !first.contains(CLIENT_PATH_HEADER),
            "the tries need it: {first}"
        );
        let mini = route_of("livegate_deployment_2");
        assert!(
            mini.contains("cluster: \"livegate_deployment_2\""),
            "{mini}"
        );
        assert!(!mini.contains("retry_policy") && mini.contains(CLIENT_PATH_HEADER));

        let clusters = p.chain_clusters(std::path::Path::new("/f.wasm")).unwrap();
        assert!(clusters.contains("livegate_chain_0") && clusters.contains("livegate_chain_1"));
        assert!(!clusters.contains("livegate_chain_2") && !clusters.contains("livegate_chain_3"));
        let (zero, one) = clusters.split_once("livegate_chain_1").unwrap();
        assert!(zero.contains("clusters: [\"livegate_deployment_0\", \"livegate_deployment_1\", \"livegate_deployment_2\"]"), "{zero}");
        assert!(one.contains("clusters: [\"livegate_deployment_1\", \"livegate_deployment_0\", \"livegate_deployment_2\"]"), "{one}");
        assert!(
            zero.contains("root_id: livegate_attempt")
                && zero.contains("host_env_keys: [PROVIDER_TEST_KEY]")
        );
        assert!(zero.contains("max_retries: 1024"));
        assert!(!clusters.contains("sk-provider-secret"));
        let config: serde_json::Value = serde_json::from_str(&p.attempt_config().unwrap()).unwrap();
        assert_eq!(
            config["authorities"]["livegate_deployment_0"],
            "localhost:8443"
        );
        assert_eq!(
            config["authorities"]["livegate_deployment_1"],
            "127.0.0.1:9000"
        );

        // Members speak HTTP/1.1 (the aggregate's one codec); a deployment alone, h2 too.
        let members = p.clusters();
        let (chained, alone) = members.split_once("\"livegate_deployment_3\"").unwrap();
        assert!(chained.contains("alpn_protocols: [http/1.1]") && !chained.contains("h2"));
        assert!(alone.contains("alpn_protocols: [h2, http/1.1]"));
        assert!(members
            .contains("filter_metadata: { livegate: { deployment: \"livegate_deployment_1\" } }"));
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
