//! `cargo xtask`: the project's commands. Each installs what it needs first.

mod bench;
mod build;
mod envoy_config;
mod fuzz;
mod layout;
mod package;
mod setup;
mod test;
mod up;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "livegate's development commands", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the stack needs (wasm target, Envoy, Postgres) if missing.
    Setup,
    /// Build the filter (.wasm), the control plane and the demo upstream.
    Build {
        /// Build the binaries with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Package the filter (release build) as an OCI image a service mesh pulls:
    /// target/oci/livegate-filter (an OCI layout) and target/oci/livegate-filter.tar.
    Package {
        /// Package this module instead of building the filter (the Dockerfile's stage).
        #[arg(long)]
        wasm: Option<std::path::PathBuf>,
        /// Write `livegate-filter/` and `livegate-filter.tar` here instead of target/oci.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Run the local stack in the foreground until Ctrl-C.
    Up(up::UpArgs),
    /// Run every test, unit and end-to-end.
    Test {
        /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Formatting and clippy, for the host and for the filter's wasm target.
    Lint,
    /// The module layout of the contract, the filter and the control plane: no import
    /// loop between top-level modules, no import of a higher layer (the layers: the
    /// "Layers" table of docs/architecture.md), no file over 500 lines without a reason.
    Layout,
    /// Every fuzz target of fuzz/ (nightly and cargo-fuzz, installed if missing), then
    /// the corpus minimised in place.
    Fuzz {
        /// Executions per target.
        #[arg(long, default_value_t = 10_000_000)]
        runs: u64,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
    },
    /// Benchmarks against the real stack (release build); results go to docs/.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Render the containers' Envoy configuration (envoy/container.yaml, or with
    /// --kubernetes deploy/kubernetes/envoy-configmap.yaml) from the one template.
    EnvoyConfig {
        /// Write here instead of the committed file; `-` for stdout.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// The Kubernetes ConfigMap instead of the docker-compose configuration.
        #[arg(long)]
        kubernetes: bool,
        /// The filter's plugin configuration (JSON); defaults apply to absent fields.
        #[arg(long, default_value = "{}")]
        filter_config: String,
        /// The protected API as host:port (default: the demo upstream's name, port 4002).
        #[arg(long, value_parser = envoy_config::parse_endpoint)]
        upstream: Option<livegate_tests::envoy::Endpoint>,
        /// A model list (LiteLLM's config.yaml): its deployments instead of the upstream;
        /// with --kubernetes also the model list's ConfigMap. Needs --out.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::all().map(|_| ()),
        Command::Build { release } => setup::all().and_then(|_| build::all(release).map(|_| ())),
        Command::Package { wasm, out } => package::run(wasm, out),
        Command::Up(args) => up::run(args),
        Command::Test { cargo_args } => test::all(&cargo_args),
        Command::Lint => test::lint(),
        Command::Layout => layout::check_before_tests(),
        Command::Fuzz { runs, target } => fuzz::all(runs, target.as_deref()),
        Command::Bench(bench) => bench::run(bench),
        Command::EnvoyConfig {
            out,
            kubernetes,
            filter_config,
            upstream,
            config,
        } => {
            let target = if kubernetes {
                envoy_config::Target::Kubernetes
            } else {
                envoy_config::Target::Compose
            };
            envoy_config::write(target, out, &filter_config, upstream, config)
        }
    };
    if let Err(error) = result {
        eprintln!("xtask: error: {error:#}");
        std::process::exit(1);
    }
}

/// Prints what the command is doing, so a long first run is never silent.
fn step(message: &str) {
    eprintln!("==> {message}");
}
