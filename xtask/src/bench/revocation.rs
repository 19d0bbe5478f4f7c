//! `cargo xtask bench revocation`: on 2 Envoys × 2 control planes, the time from the admin
//! API's 200 for a block to the first refusal at each Envoy; and what the allow TTL costs
//! in auth checks under steady traffic.

use std::time::{Duration, Instant};

use livegate_tests::fleet::{Fleet, FleetOptions};
use livegate_tests::http;
use serde_json::json;

const TRIALS: usize = 50;
const PATIENCE: Duration = Duration::from_secs(10);
const STEADY_KEYS: usize = 20;

pub fn run(steady_seconds: u64) -> anyhow::Result<()> {
    let fleet = Fleet::start(FleetOptions::new(2, 2))?;
    let key = generate(&fleet, 0, "revocation-bench")?;
    for envoy in 0..fleet.envoys.len() {
        wait_for(&fleet, envoy, &key, 200)?;
    }
    let mut delays = Vec::new();
    for trial in 0..TRIALS {
        let via = trial % 2;
        fleet.admin_via(via, "/key/block", &json!({"key": key}))?;
        let blocked_at = Instant::now();
        for envoy in 0..fleet.envoys.len() {
            wait_for(&fleet, envoy, &key, 403)?;
            // Each Envoy is polled in turn, so the second's delay is an upper bound.
            delays.push(blocked_at.elapsed());
        }
        fleet.admin_via(1 - via, "/key/unblock", &json!({"key": key}))?;
        for envoy in 0..fleet.envoys.len() {
            wait_for(&fleet, envoy, &key, 200)?;
        }
    }
    drop(fleet);
    let steady = [10_000, 60_000]
        .iter()
        .map(|ttl| steady_traffic(*ttl, steady_seconds))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let table = table(&mut delays, &steady, steady_seconds);
    eprintln!("{table}");
    super::markdown::update_benchmarks_doc("revocation", &table)
}

fn generate(fleet: &Fleet, via: usize, alias: &str) -> anyhow::Result<String> {
    let created = fleet.admin_via(via, "/key/generate", &json!({"key_alias": alias}))?;
    created["key"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no key in {created}"))
}

fn status(fleet: &Fleet, envoy: usize, key: &str) -> anyhow::Result<u16> {
    let url = format!("{}/v1/models", fleet.envoys[envoy].url());
    Ok(http::get(&url, &[("authorization", &format!("Bearer {key}"))])?.status)
}

/// Polls (every 2 ms) until two answers in a row, one per worker at best, are `want`.
fn wait_for(fleet: &Fleet, envoy: usize, key: &str, want: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if status(fleet, envoy, key)? == want && status(fleet, envoy, key)? == want {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    anyhow::bail!("Envoy {envoy} never answered {want}")
}

/// Auth checks per second and cache hit ratio with this allow TTL: `STEADY_KEYS` keys
/// used in turn, 50 requests per second, on one Envoy with two workers.
fn steady_traffic(allow_ttl_ms: u64, seconds: u64) -> anyhow::Result<(u64, f64, f64)> {
    let fleet = Fleet::start(FleetOptions {
        filter_config: format!(r#"{{"cache": {{"allow_ttl_ms": {allow_ttl_ms}}}}}"#),
        ..FleetOptions::new(1, 1)
    })?;
    let keys = (0..STEADY_KEYS)
        .map(|i| generate(&fleet, 0, &format!("steady-{i}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let envoy = &fleet.envoys[0];
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        status(&fleet, 0, &keys[i % keys.len()])?;
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let hits = envoy.prometheus_counter("livegate_cache_hit_total")?;
    let misses = envoy.prometheus_counter("livegate_cache_miss_total")?;
    let elapsed = started.elapsed().as_secs_f64();
    Ok((
        allow_ttl_ms,
        misses / elapsed,
        hits / (hits + misses).max(1.0),
    ))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(rank).copied().unwrap_or_default()
}

fn table(delays: &mut [Duration], steady: &[(u64, f64, f64)], steady_seconds: u64) -> String {
    delays.sort();
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
    let mut out = format!(
        "Machine: {}\n\n{} blocks through alternating control planes, each timed from the admin API's 200 to two refusals in a row at each of 2 Envoys (2 workers each), polled every 2 ms:\n\n| samples | p50 | p99 | max |\n|---|---|---|---|\n| {} | {} | {} | {} |\n\n",
        super::machine::describe(),
        TRIALS,
        delays.len(),
        ms(percentile(delays, 0.5)),
        ms(percentile(delays, 0.99)),
        ms(delays.last().copied().unwrap_or_default()),
    );
    out.push_str(&format!(
        "Steady traffic, {STEADY_KEYS} keys in turn at 50 requests/s for {steady_seconds} s on one Envoy (2 workers):\n\n| `cache.allow_ttl_ms` | auth checks/s | cache hit ratio |\n|---|---|---|\n"
    ));
    for (ttl, rate, ratio) in steady {
        out.push_str(&format!("| {ttl} | {rate:.2} | {:.1} % |\n", ratio * 100.0));
    }
    out
}
