//! The real Envoy, with the livegate filter, rendered from `envoy/` onto free ports.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::process::{Owned, SpawnOptions};

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The one Envoy configuration of the project, relative to the workspace root.
pub const TEMPLATE: &str = "envoy/livegate.yaml.tmpl";
/// The benchmarks' reference: the same routes without the filter.
pub const BASELINE_TEMPLATE: &str = "envoy/baseline.yaml.tmpl";

/// Where Envoy sends what it does not answer itself.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn loopback(port: u16) -> Endpoint {
        Endpoint {
            host: "127.0.0.1".to_string(),
            port,
        }
    }
}

/// Envoy's protections against slow, idle and numerous clients, and oversized admin bodies.
/// The defaults are the containers'; tests shorten the timeouts to see them act.
#[derive(Debug, Clone)]
pub struct EnvoyLimits {
    /// A request's headers must be complete this long after their first byte.
    pub request_headers_timeout: Duration,
    /// A stream with no activity for this long is reset.
    pub stream_idle_timeout: Duration,
    /// A connection with no stream for this long is closed.
    pub idle_timeout: Duration,
    /// Open client connections, all listeners together but the probe listener and admin.
    pub max_connections: u64,
    /// The largest body Envoy sends on to the control plane (its `--body-limit-bytes`).
    pub control_plane_body_limit: u64,
    /// The largest request body of a protected route (the API behind the gateway): held
    /// only once the filter knows the key, and Envoy answers a JSON 413 beyond it.
    pub max_request_body: u64,
    /// The heap Envoy may use before its overload manager sheds load (85 %: reset the
    /// largest streams; 90 %: shrink the heap, no keep-alive; 95 %: 503 to new requests).
    pub max_heap: u64,
    /// What one connection's read buffer holds before Envoy stops reading it.
    pub connection_buffer_limit: u64,
    /// A whole request (headers and body) must arrive within this time.
    pub request_timeout: Duration,
    /// HTTP/2 streams one connection may have open at once.
    pub max_concurrent_streams: u32,
}

/// The default largest request body of a protected route: 8 MiB.
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 8 * 1024 * 1024;

/// The default heap bound: 320 MiB, for a 512 MiB pod (the rest: the Wasm VMs, whose memory
/// is not Envoy's heap, code and stacks; docs/operations.md, "Memory").
pub const DEFAULT_MAX_HEAP: u64 = 320 * 1024 * 1024;

/// Envoy's buffer filter counts in a `uint32`.
const MAX_BUFFER_BYTES: u64 = u32::MAX as u64;

impl EnvoyLimits {
    /// Checks every value the template will carry; the error names the field.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (field, bytes) in [
            ("control_plane_body_limit", self.control_plane_body_limit),
            ("max_request_body", self.max_request_body),
        ] {
            anyhow::ensure!(
                (1..=MAX_BUFFER_BYTES).contains(&bytes),
                "envoy limits: {field} must be between 1 and {MAX_BUFFER_BYTES} bytes, got {bytes}"
            );
        }
        anyhow::ensure!(
            self.max_connections > 0,
            "envoy limits: max_connections must be greater than 0"
        );
        anyhow::ensure!(
            self.max_heap >= 2 * self.max_request_body,
            "envoy limits: max_heap must hold at least two of the largest request bodies ({} bytes), got {}",
            2 * self.max_request_body,
            self.max_heap
        );
        anyhow::ensure!(
            (1024..=MAX_BUFFER_BYTES).contains(&self.connection_buffer_limit),
            "envoy limits: connection_buffer_limit must be between 1024 and {MAX_BUFFER_BYTES} bytes, got {}",
            self.connection_buffer_limit
        );
        anyhow::ensure!(
            (1..=2_147_483_647).contains(&self.max_concurrent_streams),
            "envoy limits: max_concurrent_streams must be between 1 and 2147483647"
        );
        for (field, duration) in [
            ("request_headers_timeout", self.request_headers_timeout),
            ("stream_idle_timeout", self.stream_idle_timeout),
            ("idle_timeout", self.idle_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            anyhow::ensure!(
                !duration.is_zero(),
                "envoy limits: {field} must be greater than 0 (0 disables it in Envoy)"
            );
        }
        Ok(())
    }
}

impl Default for EnvoyLimits {
    fn default() -> Self {
        EnvoyLimits {
            request_headers_timeout: Duration::from_secs(10),
            stream_idle_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            control_plane_body_limit: 65_536,
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
            max_heap: DEFAULT_MAX_HEAP,
            connection_buffer_limit: 32 * 1024,
            request_timeout: Duration::from_secs(60),
            max_concurrent_streams: 100,
        }
    }
}

/// A duration as protobuf's JSON spells it (`1.500s`).
fn proto_duration(duration: Duration) -> String {
    format!(
        "\"{}.{:03}s\"",
        duration.as_secs(),
        duration.subsec_millis()
    )
}

/// Everything the template needs.
#[derive(Debug, Clone)]
pub struct EnvoyConfig {
    pub listen_address: String,
    pub listen_port: u16,
    /// The probe listener (liveness and readiness of Envoy), outside the connection limit.
    pub probe_address: String,
    pub probe_port: u16,
    pub limits: EnvoyLimits,
    /// Loopback except inside a container network.
    pub admin_address: String,
    pub admin_port: u16,
    pub control_plane: Endpoint,
    /// Further control planes of a fleet: Envoy balances over all of them.
    pub more_control_planes: Vec<Endpoint>,
    pub upstream: Endpoint,
    /// The filter's plugin configuration, as JSON text.
    pub filter_config: String,
    pub filter_wasm: PathBuf,
    /// Envoy's worker threads.
    pub concurrency: u16,
    /// `LIVEGATE_INTERNAL_TOKEN` in Envoy's environment, which the filter's VM reads
    /// (`host_env_keys`); never in the rendered file. `None`: unset (the filter refuses to
    /// configure).
    pub internal_token: Option<String>,
    /// A model list's deployments: their routes and clusters, the filter's table, and
    /// their keys in Envoy's environment (never in the rendered file).
    pub providers: crate::providers::Providers,
}

impl EnvoyConfig {
    /// Free ports, the built filter, default filter configuration, one worker.
    pub fn on_free_ports(control_plane: Endpoint, upstream: Endpoint) -> anyhow::Result<Self> {
        Ok(EnvoyConfig {
            listen_address: "127.0.0.1".to_string(),
            listen_port: crate::ports::free_port()?,
            probe_address: "127.0.0.1".to_string(),
            probe_port: crate::ports::free_port()?,
            limits: EnvoyLimits::default(),
            admin_address: "127.0.0.1".to_string(),
            admin_port: crate::ports::free_port()?,
            control_plane,
            more_control_planes: Vec::new(),
            upstream,
            filter_config: "{}".to_string(),
            filter_wasm: crate::artifacts::filter_wasm(),
            concurrency: 1,
            internal_token: Some(crate::internal_token::internal_token().to_string()),
            providers: crate::providers::Providers::default(),
        })
    }

    /// The control planes as a YAML flow list of `lb_endpoints`.
    fn control_plane_endpoints(&self) -> String {
        let quoted = |text: &str| serde_json::Value::from(text).to_string();
        let endpoints: Vec<String> = std::iter::once(&self.control_plane)
            .chain(&self.more_control_planes)
            .map(|e| {
                format!(
                    "{{ endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }} }}",
                    quoted(&e.host),
                    e.port
                )
            })
            .collect();
        format!("[{}]", endpoints.join(", "))
    }

    /// The livegate template (`envoy/livegate.yaml.tmpl`) rendered with these values.
    pub fn render(&self) -> anyhow::Result<String> {
        self.render_template(TEMPLATE)
    }

    /// A template of `envoy/` (path relative to the workspace) rendered with these values.
    pub fn render_template(&self, template: &str) -> anyhow::Result<String> {
        self.limits.validate()?;
        let template_path = crate::artifacts::workspace_root().join(template);
        let template = std::fs::read_to_string(&template_path)?;
        // JSON strings are valid YAML double-quoted scalars: no escaping rules of our own.
        let quoted = |text: &str| serde_json::Value::from(text).to_string();
        render(
            &template,
            &[
                ("ADMIN_ADDRESS", quoted(&self.admin_address)),
                ("ADMIN_PORT", self.admin_port.to_string()),
                ("LISTEN_ADDRESS", quoted(&self.listen_address)),
                ("LISTEN_PORT", self.listen_port.to_string()),
                ("PROBE_ADDRESS", quoted(&self.probe_address)),
                ("PROBE_PORT", self.probe_port.to_string()),
                (
                    "REQUEST_HEADERS_TIMEOUT",
                    proto_duration(self.limits.request_headers_timeout),
                ),
                (
                    "STREAM_IDLE_TIMEOUT",
                    proto_duration(self.limits.stream_idle_timeout),
                ),
                ("IDLE_TIMEOUT", proto_duration(self.limits.idle_timeout)),
                ("MAX_CONNECTIONS", self.limits.max_connections.to_string()),
                (
                    "CONTROL_PLANE_BODY_LIMIT",
                    self.limits.control_plane_body_limit.to_string(),
                ),
                ("MAX_REQUEST_BODY", self.limits.max_request_body.to_string()),
                ("MAX_HEAP", self.limits.max_heap.to_string()),
                (
                    "CONNECTION_BUFFER_LIMIT",
                    self.limits.connection_buffer_limit.to_string(),
                ),
                (
                    "REQUEST_TIMEOUT",
                    proto_duration(self.limits.request_timeout),
                ),
                (
                    "MAX_CONCURRENT_STREAMS",
                    self.limits.max_concurrent_streams.to_string(),
                ),
                (
                    "FILTER_CONFIG",
                    quoted(&self.providers.filter_config(&self.filter_config)?),
                ),
                (
                    "DEPLOYMENT_ROUTES",
                    self.providers.routes(self.limits.max_request_body),
                ),
                (
                    "DEPLOYMENT_CLUSTERS",
                    format!(
                        "{}{}",
                        self.providers.clusters(),
                        self.providers.chain_clusters(&self.filter_wasm)?
                    ),
                ),
                ("CATCH_ALL_ACTION", self.providers.catch_all_action()),
                ("HOST_ENV_KEYS", self.providers.host_env_keys()),
                (
                    "FILTER_WASM",
                    quoted(&self.filter_wasm.display().to_string()),
                ),
                ("CONTROL_PLANE_ENDPOINTS", self.control_plane_endpoints()),
                ("UPSTREAM_HOST", quoted(&self.upstream.host)),
                ("UPSTREAM_PORT", self.upstream.port.to_string()),
            ],
        )
    }
}

/// Replaces every `{{NAME}}` in `template`; fails if a placeholder is left unfilled.
pub fn render(template: &str, values: &[(&str, String)]) -> anyhow::Result<String> {
    let mut rendered = template.to_string();
    for (name, value) in values {
        rendered = rendered.replace(&format!("{{{{{name}}}}}"), value);
    }
    if let Some(start) = rendered.find("{{") {
        let rest = &rendered[start..];
        let end = rest.find("}}").map_or(rest.len(), |end| end + 2);
        anyhow::bail!("template placeholder {} has no value", &rest[..end]);
    }
    Ok(rendered)
}

/// A running Envoy; SIGTERM then SIGKILL on drop.
#[derive(Debug)]
pub struct Envoy {
    process: Owned,
    config: EnvoyConfig,
    config_path: PathBuf,
}

impl Envoy {
    /// Renders the config into `dir`, starts Envoy and waits for its admin `/ready`.
    pub fn start(config: EnvoyConfig, dir: &Path) -> anyhow::Result<Envoy> {
        Envoy::start_from(TEMPLATE, config, dir)
    }

    /// [`Envoy::start`] with another template of `envoy/`.
    pub fn start_from(template: &str, config: EnvoyConfig, dir: &Path) -> anyhow::Result<Envoy> {
        let mut envoy = Envoy::spawn(template, config, dir)?;
        let ready = format!("{}/ready", envoy.admin_url());
        let waited = crate::poll::until("Envoy to be ready", READY_TIMEOUT, || {
            if let Some(status) = envoy.process.try_exit_code() {
                return Some(Err(anyhow::anyhow!(
                    "Envoy exited ({status}):\n{}",
                    envoy.log_text()
                )));
            }
            let answered = crate::http::get_within(&ready, Duration::from_secs(2)).ok()?;
            (answered.status == 200).then_some(Ok(()))
        });
        waited.and_then(|inner| inner).map(|()| envoy)
    }

    /// Starts Envoy expecting it to refuse its configuration and exit.
    pub fn start_expecting_exit(
        config: EnvoyConfig,
        dir: &Path,
    ) -> anyhow::Result<(ExitStatus, String)> {
        let mut envoy = Envoy::spawn(TEMPLATE, config, dir)?;
        let status = envoy.process.wait_exit(READY_TIMEOUT)?;
        Ok((status, envoy.log_text()))
    }

    /// `envoy --mode validate` on a rendered or hand-written config file.
    pub fn validate(config_path: &Path) -> anyhow::Result<(bool, String)> {
        let binary = crate::artifacts::require(&crate::artifacts::envoy_bin(), "Envoy")?;
        // The filter's configuration runs in validation too, and wants its token.
        let output = Command::new(binary)
            .args(["--mode", "validate", "--disable-hot-restart", "-c"])
            .arg(config_path)
            .env(
                crate::internal_token::ENV,
                crate::internal_token::internal_token(),
            )
            .output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok((output.status.success(), text))
    }

    fn spawn(template: &str, config: EnvoyConfig, dir: &Path) -> anyhow::Result<Envoy> {
        let binary = crate::artifacts::require(&crate::artifacts::envoy_bin(), "Envoy")?;
        crate::artifacts::require(&config.filter_wasm, "the filter (.wasm)")?;
        let name = format!("envoy-{}", config.listen_port);
        let config_path = dir.join(format!("{name}.yaml"));
        std::fs::write(&config_path, config.render_template(template)?)?;
        let mut command = Command::new(binary);
        command
            .arg("-c")
            .arg(&config_path)
            // Several Envoys run at once in the tests: no shared memory between them.
            .arg("--disable-hot-restart")
            .args(["--concurrency", &config.concurrency.to_string()])
            .args(["--log-level", "info"])
            .env_remove(crate::internal_token::ENV);
        if let Some(token) = &config.internal_token {
            command.env(crate::internal_token::ENV, token);
        }
        for (name, value) in &config.providers.keys {
            command.env(name, value);
        }
        let log = dir.join(format!("{name}.log"));
        let process = Owned::spawn("envoy", command, &log, SpawnOptions::default())?;
        Ok(Envoy {
            process,
            config,
            config_path,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.config.listen_port)
    }

    /// The probe listener's URL: Envoy's liveness and readiness, outside the connection limit.
    pub fn probe_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.config.probe_port)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.config.admin_port)
    }

    pub fn config(&self) -> &EnvoyConfig {
        &self.config
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    /// The Envoy process' id (for its CPU time in benchmarks).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// A stat of the gateway listener's connection manager (`stat_prefix: livegate`) as
    /// Prometheus names it (`envoy_http_downstream_cx_rx_bytes_total`); `None` if absent.
    pub fn gateway_stat(&self, name: &str) -> Option<f64> {
        let stats = crate::http::get(&format!("{}/stats/prometheus", self.admin_url()), &[]);
        let prefix = format!("{name}{{envoy_http_conn_manager_prefix=\"livegate\"}} ");
        stats
            .ok()?
            .body
            .lines()
            .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
    }

    /// The value of one counter in Envoy's Prometheus stats (0 when absent).
    pub fn prometheus_counter(&self, name: &str) -> anyhow::Result<f64> {
        let stats = crate::http::get(&format!("{}/stats/prometheus", self.admin_url()), &[])?;
        Ok(prometheus_value(&stats.body, name).unwrap_or(0.0))
    }

    /// Requests Envoy has sent to `cluster` so far (`livegate_upstream`: the upstream;
    /// `livegate_control_plane`: auth checks and feed polls).
    pub fn cluster_requests(&self, cluster: &str) -> anyhow::Result<f64> {
        let filter = format!("^cluster\\.{cluster}\\.upstream_rq_total$");
        let stats = crate::http::get(&format!("{}/stats?filter={filter}", self.admin_url()), &[])?;
        Ok(stats
            .body
            .lines()
            .find_map(|line| line.split(": ").nth(1)?.trim().parse().ok())
            .unwrap_or(0.0))
    }
}

/// Sums the samples of metric `name` (any labels) in Prometheus text.
pub fn prometheus_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(value) = value {
            found = Some(found.unwrap_or(0.0) + value);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_rendered_as_protobuf_json_strings() {
        assert_eq!(proto_duration(Duration::from_millis(1500)), "\"1.500s\"");
        assert_eq!(proto_duration(Duration::from_secs(300)), "\"300.000s\"");
    }

    #[test]
    fn limits_out_of_range_are_refused_naming_the_field() {
        let zero = EnvoyLimits {
            max_request_body: 0,
            ..EnvoyLimits::default()
        };
        let error = zero.validate().unwrap_err().to_string();
        assert!(error.contains("max_request_body"), "{error}");
        let huge = EnvoyLimits {
            max_request_body: u64::from(u32::MAX) + 1,
            ..EnvoyLimits::default()
        };
        let error = huge.validate().unwrap_err().to_string();
        assert!(error.contains("max_request_body"), "{error}");
        let no_timeout = EnvoyLimits {
            idle_timeout: Duration::ZERO,
            ..EnvoyLimits::default()
        };
        let error = no_timeout.validate().unwrap_err().to_string();
        assert!(error.contains("idle_timeout"), "{error}");
        let small_heap = EnvoyLimits {
            max_heap: DEFAULT_MAX_REQUEST_BODY,
            ..EnvoyLimits::default()
        };
        let error = small_heap.validate().unwrap_err().to_string();
        assert!(error.contains("max_heap"), "{error}");
        assert!(EnvoyLimits::default().validate().is_ok());
    }

    #[test]
    fn render_fills_every_placeholder() {
        let out = render("a {{X}} b {{Y}}", &[("X", "1".into()), ("Y", "2".into())]).unwrap();
        assert_eq!(out, "a 1 b 2");
    }

    #[test]
    fn render_names_a_placeholder_left_unfilled() {
        let error = render("a {{X}} b {{MISSING}}", &[("X", "1".into())]).unwrap_err();
        assert!(error.to_string().contains("{{MISSING}}"), "{error}");
    }

    #[test]
    fn prometheus_value_sums_labelled_samples_and_ignores_prefixes() {
        let text = "# TYPE x counter\nx{a=\"1\"} 2\nx{a=\"2\"} 3\nx_total 7\n";
        assert_eq!(prometheus_value(text, "x"), Some(5.0));
        assert_eq!(prometheus_value(text, "x_total"), Some(7.0));
        assert_eq!(prometheus_value(text, "y"), None);
    }
}
