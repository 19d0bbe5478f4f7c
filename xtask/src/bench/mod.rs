//! `cargo xtask bench`: the outage lab, the auth throughput benchmark, metering, rate limits,
//! the flood and the disconnects, run against the real local stack built in release mode; results land in
//! docs/.

mod auth;
mod disconnects;
mod flood;
mod hot_key;
mod limits;
mod machine;
mod markdown;
mod metering;
mod outage;
mod pinning;
mod plot;
mod revocation;
mod wrk;

use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum Bench {
    /// The outage scenarios: liveness, readiness and auth through each fault.
    Outage {
        /// Only these scenarios (pause, kill, partition, wedged-engine,
        /// control-plane-killed, flapping); all when none is named.
        #[arg(long = "scenario")]
        scenarios: Vec<String>,
        /// Seconds per throughput run for the liveness ceilings.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Only the liveness ceilings (their section of docs/benchmarks.md alone is rewritten).
        #[arg(long)]
        ceilings_only: bool,
    },
    /// Hostile traffic: slow-header sockets against the probe listener's liveness, then a
    /// flood of random keys while a warmed key keeps requesting.
    Flood {
        /// Slow-header connections opened at once.
        #[arg(long, default_value_t = 5000)]
        slow_sockets: usize,
        /// Envoy's connection limit during the run.
        #[arg(long, default_value_t = 2500)]
        connection_limit: u64,
        /// Seconds of the random-key flood.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Random keys per second asked of the flood.
        #[arg(long, default_value_t = 2000)]
        rate: u64,
        /// Connections each starting an 8 MiB body, with no key and with unknown keys.
        #[arg(long, default_value_t = 500)]
        big_bodies: usize,
    },
    /// Clients that disconnect with their auth check in flight: the filter VM's memory
    /// over a million of them.
    Disconnects {
        /// Disconnects after the warm-up.
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
    },
    /// Requests/s and latency: no filter, filter passing through, cached key, cache miss.
    Auth {
        /// Seconds per wrk run (each setup runs three times, both ways).
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Metering's cost on streamed answers (no filter, passed through, metering off and on),
    /// the ledger's drain rate into Postgres, and a database outage under metered load.
    Metering {
        /// Seconds per wrk run (each setup runs three times, both ways).
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Seconds Postgres stays frozen under steady metered traffic.
        #[arg(long, default_value_t = 60)]
        outage_seconds: u64,
    },
    /// 2 Envoys × 2 control planes: a hot key (an `rpm_limit` far above what the machine
    /// sends) against an unlimited key, with and without leases; then a key flooded at 10×
    /// its `rpm_limit`, admitted per window against the limit, then with Postgres frozen
    /// for one window.
    Limits {
        /// The key's `rpm_limit`.
        #[arg(long, default_value_t = 60)]
        limit: u64,
        /// Windows (60 s each) of flood with Postgres up (0: the hot-key run alone).
        #[arg(long, default_value_t = 3)]
        windows: u64,
        /// Seconds per wrk run of the hot-key comparison (each setup runs three times).
        #[arg(long, default_value_t = 5)]
        hot_seconds: u64,
    },
    /// 2 Envoys × 2 control planes: time from a block's 200 to the refusal at each Envoy;
    /// auth checks per second under steady traffic with the old and the new allow TTL.
    Revocation {
        /// Seconds of steady traffic per allow TTL.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

pub fn run(bench: Bench) -> anyhow::Result<()> {
    crate::build::prepare_stack(true)?;
    match bench {
        Bench::Outage {
            scenarios,
            seconds,
            ceilings_only,
        } => outage::run(&scenarios, seconds, ceilings_only),
        Bench::Auth { seconds } => auth::run(seconds),
        Bench::Metering {
            seconds,
            outage_seconds,
        } => metering::run(seconds, outage_seconds),
        Bench::Revocation { seconds } => revocation::run(seconds),
        Bench::Limits {
            limit,
            windows,
            hot_seconds,
        } => {
            hot_key::run(hot_seconds)?;
            if windows == 0 {
                return Ok(());
            }
            limits::run(limit, windows)
        }
        Bench::Disconnects { count } => disconnects::run(count),
        Bench::Flood {
            slow_sockets,
            connection_limit,
            seconds,
            rate,
            big_bodies,
        } => flood::run(&flood::FloodPlan {
            slow_sockets,
            connection_limit,
            flood_seconds: seconds,
            flood_rate: rate,
            big_bodies,
        }),
    }
}

/// An Envoy beside the stack's, on free ports, with the same control plane and upstream:
/// from `template` (the filter's, or the no-filter baseline) with this filter configuration.
fn envoy_beside(
    stack: &livegate_tests::stack::Stack,
    template: &str,
    filter_config: &str,
) -> anyhow::Result<livegate_tests::envoy::Envoy> {
    let mut config = config_beside(stack)?;
    config.filter_config = filter_config.to_string();
    livegate_tests::envoy::Envoy::start_from(template, config, stack.scratch.path())
}

/// The least a Wasm filter does (xtask/floor-filter) on the baseline's bare listener,
/// beside the stack: what Envoy's Wasm host costs per request, whatever the filter.
fn floor_beside(
    stack: &livegate_tests::stack::Stack,
) -> anyhow::Result<livegate_tests::envoy::Envoy> {
    floor_beside_with(stack, "{}")
}

/// [`floor_beside`] with the floor filter's configuration (`read_response_body`: it also
/// copies every response body chunk into the VM).
fn floor_beside_with(
    stack: &livegate_tests::stack::Stack,
    filter_config: &str,
) -> anyhow::Result<livegate_tests::envoy::Envoy> {
    let config = livegate_tests::envoy::EnvoyConfig {
        filter_wasm: crate::build::floor_filter()?,
        filter_config: filter_config.to_string(),
        ..config_beside(stack)?
    };
    livegate_tests::envoy::Envoy::start_from(BARE_WASM_TEMPLATE, config, stack.scratch.path())
}

/// An Envoy's configuration on free ports, with the stack's control plane and upstream.
fn config_beside(
    stack: &livegate_tests::stack::Stack,
) -> anyhow::Result<livegate_tests::envoy::EnvoyConfig> {
    use livegate_tests::envoy::{Endpoint, EnvoyConfig};
    let upstream = Endpoint::loopback(stack.upstream.as_ref().map_or(0, |u| u.port()));
    let control_plane = Endpoint::loopback(stack.control_plane_port);
    EnvoyConfig::on_free_ports(control_plane, upstream)
}

/// The baseline's bare listener with one Wasm filter (the floor filter, or livegate's).
const BARE_WASM_TEMPLATE: &str = "xtask/src/bench/bare-wasm.yaml.tmpl";

/// The filter passing every `/v1/` path through: what any Wasm filter costs.
const PASSTHROUGH_V1: &str = r#"{"passthrough_prefixes": ["/v1/"]}"#;

/// `docs/benchmarks/`, where raw results and timelines go.
fn results_dir() -> anyhow::Result<PathBuf> {
    let dir = livegate_tests::artifacts::workspace_root().join("docs/benchmarks");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
