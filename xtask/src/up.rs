//! `cargo xtask up`: the local stack in the foreground, stopped as a whole by Ctrl-C.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use livegate_tests::envoy::Endpoint;
use livegate_tests::fleet::{Fleet, FleetOptions, FleetPorts};
use livegate_tests::stack::{Database, Stack, StackOptions, Upstream};

use crate::step;

#[derive(clap::Args)]
pub struct UpArgs {
    /// Envoy's listener port (on 127.0.0.1).
    #[arg(long, default_value_t = 4000)]
    port: u16,
    /// Envoy's probe listener (liveness and readiness of Envoy, outside the connection limit).
    #[arg(long, default_value_t = 4004)]
    probe_port: u16,
    /// Envoy's admin port (on 127.0.0.1 only).
    #[arg(long, default_value_t = 9901)]
    admin_port: u16,
    /// The control plane's port (on 127.0.0.1).
    #[arg(long, default_value_t = 4001)]
    control_plane_port: u16,
    /// The demo upstream's port, when no LIVEGATE_UPSTREAM is given.
    #[arg(long, default_value_t = 4002)]
    demo_upstream_port: u16,
    /// The embedded Postgres' port, when no DATABASE_URL is given.
    #[arg(long, default_value_t = 4003)]
    postgres_port: u16,
    /// Use this database instead of starting one under .livegate/postgres.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The protected API, as http://host:port; a demo upstream is started when unset.
    #[arg(long, env = "LIVEGATE_UPSTREAM")]
    upstream: Option<String>,
    /// A model list in LiteLLM's config.yaml format: each deployment becomes an Envoy
    /// cluster (TLS for https, CA from SSL_CERT_FILE or the system bundle) and the filter
    /// routes by model, with the key of each `os.environ/NAME` (read from this environment
    /// now, and handed to Envoy's environment only). Without it: LIVEGATE_UPSTREAM.
    #[arg(long, conflicts_with = "upstream")]
    config: Option<std::path::PathBuf>,
    /// The filter's plugin configuration (JSON); defaults apply to absent fields.
    #[arg(long, env = "LIVEGATE_FILTER_CONFIG", default_value = "{}")]
    filter_config: String,
    /// Build the binaries with the release profile.
    #[arg(long)]
    release: bool,
    /// Envoys of a local fleet: Envoy k listens on port + 10k (admin: admin-port + 10k).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=9))]
    envoys: u16,
    /// Control planes of a local fleet: control plane k on control-plane-port + 10k. Every
    /// Envoy balances over every control plane; all share one Postgres and one master key.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=9))]
    control_planes: u16,
    /// The control planes' price file (LiteLLM's model_prices_and_context_window.json
    /// format); by default the checked-in deploy/prices/model_prices.json, which prices the
    /// demo upstream's model `livegate-demo`.
    #[arg(long, env = "LIVEGATE_PRICES_FILE")]
    prices_file: Option<std::path::PathBuf>,
}

impl UpArgs {
    /// `--prices-file <file>` for the control planes: the one named, else the demo's; and
    /// the model list (`--config`), the same file Envoy's deployments come from.
    fn control_plane_args(&self) -> Vec<String> {
        let file = self
            .prices_file
            .clone()
            .unwrap_or_else(livegate_tests::artifacts::demo_prices_file);
        let mut args = vec!["--prices-file".into(), file.display().to_string()];
        if let Some(config) = &self.config {
            args.extend(["--config".into(), config.display().to_string()]);
        }
        args
    }
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    crate::build::prepare_stack(args.release)?;

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }

    let state = livegate_tests::artifacts::state_dir();
    let master_key = master_key(&state)?;
    let database = match &args.database_url {
        Some(url) => Database::External(url.clone()),
        None => Database::Persistent {
            dir: state.join("postgres"),
            port: args.postgres_port,
        },
    };
    let upstream = match &args.upstream {
        // The model list's deployments are the upstreams: no demo.
        None if args.config.is_some() => Upstream::None,
        Some(url) => Upstream::External(parse_upstream(url)?),
        None => Upstream::Demo,
    };
    let providers = match &args.config {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("--config {}", file.display()))?;
            livegate_tests::providers::Providers::from_model_list(&text, |name| {
                std::env::var(name).ok()
            })
            .with_context(|| format!("--config {}", file.display()))?
        }
        None => livegate_tests::providers::Providers::default(),
    };
    if args.envoys > 1 || args.control_planes > 1 {
        anyhow::ensure!(
            args.config.is_none(),
            "--config with --envoys/--control-planes is not implemented yet"
        );
        return run_fleet(&args, master_key, &state, &stop);
    }
    step("starting Postgres, the control plane, the upstream and Envoy");
    let stack = Stack::start(StackOptions {
        database: Some(database),
        upstream,
        master_key,
        filter_config: args.filter_config.clone(),
        control_plane_args: args.control_plane_args(),
        listen_port: Some(args.port),
        admin_port: Some(args.admin_port),
        probe_port: Some(args.probe_port),
        control_plane_port: Some(args.control_plane_port),
        upstream_port: Some(args.demo_upstream_port),
        concurrency: 2,
        state_dir: Some(state.join("run")),
        providers,
        ..StackOptions::envoy_only()
    })?;
    print_welcome(&stack, &args);

    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    step("stopping every process of the stack");
    drop(stack);
    Ok(())
}

/// `--envoys N --control-planes M`: the fleet Kubernetes runs, on this machine.
fn run_fleet(
    args: &UpArgs,
    master_key: String,
    state: &std::path::Path,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.database_url.is_none() && args.upstream.is_none(),
        "--envoys/--control-planes run the local Postgres and the demo upstream only; unset DATABASE_URL and LIVEGATE_UPSTREAM"
    );
    step("starting Postgres, the control planes, the upstream and the Envoys");
    let fleet = Fleet::start(FleetOptions {
        master_key,
        filter_config: args.filter_config.clone(),
        control_plane_args: args.control_plane_args(),
        ports: Some(FleetPorts {
            listen: args.port,
            admin: args.admin_port,
            control_plane: args.control_plane_port,
            probe: Some(args.probe_port),
        }),
        database: Some((state.join("postgres"), args.postgres_port)),
        upstream_port: Some(args.demo_upstream_port),
        state_dir: Some(state.join("run")),
        ..FleetOptions::new(usize::from(args.envoys), usize::from(args.control_planes))
    })?;
    println!();
    println!("livegate is up: a fleet.");
    for (k, envoy) in fleet.envoys.iter().enumerate() {
        println!(
            "  gateway {k}         {}  (admin {})",
            envoy.url(),
            envoy.admin_url()
        );
    }
    for (k, cp) in fleet.control_planes.iter().flatten().enumerate() {
        println!("  control plane {k}   {}", cp.base_url());
    }
    println!("  demo upstream     {}", fleet.upstream.base_url());
    println!("  logs              {}", fleet.scratch.path().display());
    println!();
    println!("Ctrl-C stops everything.");
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    step("stopping every process of the fleet");
    drop(fleet);
    Ok(())
}

/// `LIVEGATE_MASTER_KEY`, else one generated once and kept in `.livegate/master-key` (0600).
fn master_key(state: &std::path::Path) -> anyhow::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(key) = std::env::var("LIVEGATE_MASTER_KEY") {
        if !key.is_empty() {
            return Ok(key);
        }
    }
    let path = state.join("master-key");
    if let Ok(key) = std::fs::read_to_string(&path) {
        return Ok(key.trim().to_string());
    }
    std::fs::create_dir_all(state)?;
    let mut random = [0u8; 24];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut random)?;
    let key = format!(
        "sk-master-{}",
        random
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&path)?;
    std::io::Write::write_all(&mut file, key.as_bytes())?;
    Ok(key)
}

/// `http://host:port` → the upstream endpoint.
fn parse_upstream(url: &str) -> anyhow::Result<Endpoint> {
    let rest = url
        .strip_prefix("http://")
        .context("LIVEGATE_UPSTREAM must be an http://host:port URL")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, port) = authority
        .rsplit_once(':')
        .context("LIVEGATE_UPSTREAM must name a port: http://host:port")?;
    let port = port
        .parse::<u16>()
        .with_context(|| format!("LIVEGATE_UPSTREAM port `{port}` is not a port number"))?;
    anyhow::ensure!(!host.is_empty(), "LIVEGATE_UPSTREAM has no host");
    Ok(Endpoint {
        host: host.to_string(),
        port,
    })
}

fn print_welcome(stack: &Stack, args: &UpArgs) {
    let gateway = stack.envoy.url();
    println!();
    println!("livegate is up.");
    println!("  gateway (Envoy)   {gateway}");
    println!(
        "  Envoy probes      {}  (/health/liveliness, /ready)",
        stack.envoy.probe_url()
    );
    println!(
        "  Envoy admin       {}  (stats: /stats/prometheus)",
        stack.envoy.admin_url()
    );
    if let Some(control_plane) = &stack.control_plane {
        println!("  control plane     {}", control_plane.base_url());
        println!("  its metrics       {}", control_plane.metrics_url());
    }
    match &args.upstream {
        _ if args.config.is_some() => {
            for routed in &stack.options.providers.deployments {
                let (d, t) = (&routed.deployment, &routed.transport);
                let scheme = if t.tls { "https" } else { "http" };
                println!(
                    "  model {:<11} {}/{} at {scheme}://{}:{}{}",
                    d.model_name,
                    d.provider.prefix(),
                    d.model,
                    t.host,
                    t.port,
                    d.path_prefix
                );
            }
        }
        Some(url) => println!("  upstream          {url}"),
        None => println!(
            "  demo upstream     http://127.0.0.1:{}",
            args.demo_upstream_port
        ),
    }
    println!("  logs              {}", stack.scratch.path().display());
    println!();
    println!("Try:");
    println!("  curl -i {gateway}/health/liveliness");
    println!("  curl -s {gateway}/health/readiness");
    if std::env::var_os("LIVEGATE_MASTER_KEY").is_none() {
        println!("  export LIVEGATE_MASTER_KEY=$(cat .livegate/master-key)");
    }
    println!("  KEY=$(curl -s -X POST {gateway}/key/generate -H \"authorization: Bearer $LIVEGATE_MASTER_KEY\" \\");
    println!("        -H 'content-type: application/json' -d '{{\"key_alias\":\"demo\"}}' | sed -E 's/.*\"key\":\"([^\"]+)\".*/\\1/')");
    println!("  curl -s {gateway}/v1/chat/completions -H \"authorization: Bearer $KEY\" -d '{{\"model\":\"livegate-demo\",\"messages\":[]}}'");
    println!();
    println!("Ctrl-C stops everything.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_url_gives_host_and_port() {
        let endpoint = parse_upstream("http://api.internal:8080/v1").unwrap();
        assert_eq!(
            (endpoint.host.as_str(), endpoint.port),
            ("api.internal", 8080)
        );
    }

    #[test]
    fn an_upstream_url_without_a_port_is_refused_with_the_variable_named() {
        let error = parse_upstream("http://api.internal")
            .unwrap_err()
            .to_string();
        assert!(error.contains("LIVEGATE_UPSTREAM"), "{error}");
    }

    #[test]
    fn an_https_upstream_is_refused() {
        assert!(parse_upstream("https://api.internal:443").is_err());
    }
}
