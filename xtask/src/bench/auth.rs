//! `cargo xtask bench auth`: the cost of the filter on the hot path. wrk against the
//! demo upstream through several Envoys: (a) without the filter, (a″) with the least
//! Wasm filter (xtask/floor-filter, on (a)'s bare listener), (a′) with the filter
//! passing `/v1/` through (what any Wasm filter costs, plus routing and header
//! hygiene), (b) a cached key, (c) every request a cache miss through the control
//! plane and Postgres, (d) a key with an `rpm_limit` (admitted from leases: most requests
//! from the Envoy worker's share, the rest by the control plane's lease, which writes the
//! key's window once per lease); and on `/v1/chat/completions` with a 1 KiB body,
//! (e) a key with no model policy and (e′) a model-restricted key (the filter reads the
//! body's `model`); and to a model list's deployment behind local TLS (a provider double),
//! (f′) its cluster without the filter and (f) a cached key routed to it by model with the
//! provider's key set by the filter. Then the GET rows (a) to (b) once more, with the CPU
//! time Envoy used per request.

use std::fmt::Write as _;

use livegate_tests::envoy::{Envoy, BASELINE_TEMPLATE, TEMPLATE};
use livegate_tests::provider_double::ProviderDouble;
use livegate_tests::providers::Providers;
use livegate_tests::stack::{Stack, StackOptions};
use serde_json::json;

use super::wrk::{self, Plan, Run, Target};
use super::{envoy_beside, PASSTHROUGH_V1};

/// Metering off: its cost (and the ledger's work, which shares the cores) is measured by
/// `bench metering`; here only auth is.
const NO_METERING: &str = r#"{"metering": {"enabled": false}}"#;

/// Keys the cache-miss run cycles through, with a filter cache of one entry.
const MISS_KEYS: usize = 16;

/// (f′)'s Envoy: the deployment's cluster without the filter.
const PROVIDER_BASELINE_TEMPLATE: &str = "xtask/src/bench/provider-baseline.yaml.tmpl";
/// The provider double's key: the one (f′)'s template sets, and the one (f)'s filter reads
/// from Envoy's environment.
const DOUBLE_KEY: &str = "sk-bench-provider-double";
const DOUBLE_KEY_ENV: &str = "LIVEGATE_BENCH_PROVIDER_KEY";

pub fn run(seconds: u64) -> anyhow::Result<()> {
    wrk::ensure_installed()?;
    let stack = Stack::start(StackOptions {
        concurrency: 1,
        filter_config: NO_METERING.to_string(),
        ..StackOptions::full()
    })?;
    let keys: Vec<String> = (0..MISS_KEYS)
        .map(|i| generate(&stack, i))
        .collect::<anyhow::Result<_>>()?;
    let baseline = envoy_beside(&stack, BASELINE_TEMPLATE, "{}")?;
    let passthrough = envoy_beside(&stack, TEMPLATE, PASSTHROUGH_V1)?;
    let floor = super::floor_beside(&stack)?;
    // A one-entry cache and keys used in turn: every request misses.
    let missing = envoy_beside(
        &stack,
        TEMPLATE,
        r#"{"cache": {"max_entries": 1}, "metering": {"enabled": false}}"#,
    )?;

    let limited = generate_with(
        &stack,
        json!({"key_alias": "bench-limited", "rpm_limit": 1_000_000_000_u64}),
    )?;
    let restricted = generate_with(
        &stack,
        json!({"key_alias": "bench-models", "models": ["livegate-demo"]}),
    )?;
    let double = ProviderDouble::start(stack.scratch.path(), DOUBLE_KEY)?;
    let providers = double_providers(&double)?;
    let to_deployment = envoy_with(&stack, TEMPLATE, NO_METERING, providers.clone())?;
    let deployment_baseline = envoy_with(&stack, PROVIDER_BASELINE_TEMPLATE, "{}", providers)?;
    let path = "/v1/models";
    let chat = "/v1/chat/completions";
    // The same wrk script everywhere: its Lua request hook has a cost of its own.
    let cached_script = script(&stack, "cached", &keys[..1])?;
    let targets = [
        Target {
            name: "(a) no filter",
            url: format!("{}{path}", baseline.url()),
            script: cached_script.clone(),
        },
        Target {
            name: "(a″) the least Wasm filter, the route passed through",
            url: format!("{}{path}", floor.url()),
            script: cached_script.clone(),
        },
        Target {
            name: "(a′) filter, the route passed through",
            url: format!("{}{path}", passthrough.url()),
            script: cached_script.clone(),
        },
        Target {
            name: "(b) cached key",
            url: stack.url(path),
            script: cached_script,
        },
        Target {
            name: "(c) cache miss → control plane",
            url: format!("{}{path}", missing.url()),
            script: script(&stack, "missing", &keys)?,
        },
        Target {
            name: "(d) key with an rpm_limit",
            url: stack.url(path),
            script: script(&stack, "limited", std::slice::from_ref(&limited))?,
        },
        Target {
            name: "(e) chat, 1 KiB body, no model policy",
            url: stack.url(chat),
            script: chat_script(&stack, &keys[0], "open")?,
        },
        Target {
            name: "(e′) chat, 1 KiB body, model-restricted key",
            url: stack.url(chat),
            script: chat_script(&stack, &restricted, "restricted")?,
        },
        Target {
            name: "(f′) chat to a TLS deployment, no filter",
            url: format!("{}{chat}", deployment_baseline.url()),
            script: chat_script_for(&stack, &keys[0], "deployment-baseline", "gpt-4o")?,
        },
        Target {
            name: "(f) chat to a TLS deployment, cached key, routed by model",
            url: format!("{}{chat}", to_deployment.url()),
            script: chat_script_for(&stack, &keys[0], "deployment", "gpt-4o")?,
        },
    ];
    let plan = Plan::interleaved(seconds);
    let runs = wrk::measure(&targets, &plan)?;
    // The GET rows' Envoys, in the targets' order: (a), (a″), (a′), (b).
    let envoys = [&baseline, &floor, &passthrough, &stack.envoy];
    let cpu = envoy_cpu_per_request(&targets[..envoys.len()], &envoys, &plan)?;
    let mut table = table(&plan, &runs);
    cpu_table(&mut table, &plan, &cpu);
    eprintln!("{table}");
    super::markdown::update_benchmarks_doc("auth", &table)
}

/// The Envoy CPU time one request of a setup cost (µs), over one more throughput run.
struct EnvoyCpu {
    name: &'static str,
    us_per_request: f64,
}

/// Envoy's CPU time per request, read from `/proc` around one run per setup: what the
/// filter costs Envoy, whatever the load generator and the upstream take of the cores.
fn envoy_cpu_per_request(
    targets: &[Target],
    envoys: &[&Envoy],
    plan: &Plan,
) -> anyhow::Result<Vec<EnvoyCpu>> {
    let mut out = Vec::new();
    for (target, envoy) in targets.iter().zip(envoys) {
        crate::step(&format!("Envoy CPU per request: {}", target.name));
        let (run, cpu_seconds) = target.saturate_timed(plan, envoy.pid())?;
        let requests = (run.requests_per_second * plan.seconds as f64).max(1.0);
        out.push(EnvoyCpu {
            name: target.name,
            us_per_request: cpu_seconds * 1e6 / requests,
        });
    }
    Ok(out)
}

/// The GET rows' Envoy CPU per request, and what each step adds.
fn cpu_table(out: &mut String, plan: &Plan, cpu: &[EnvoyCpu]) {
    let Some(none) = cpu.first() else {
        return;
    };
    let _ = writeln!(
        out,
        "\nWhere the time goes: one more run per setup ({} connections, {} s), with the CPU time Envoy (all its threads) used per request: the filter's cost to Envoy, whatever wrk and the upstream take of the shared cores.\n",
        plan.connections, plan.seconds
    );
    let _ = writeln!(out, "| run | Envoy CPU per request | over no filter |");
    let _ = writeln!(out, "|---|---|---|");
    for row in cpu {
        let _ = writeln!(
            out,
            "| {} | {:.1} µs | +{:.1} µs |",
            row.name,
            row.us_per_request,
            row.us_per_request - none.us_per_request
        );
    }
}

fn generate(stack: &Stack, index: usize) -> anyhow::Result<String> {
    generate_with(stack, json!({"key_alias": format!("bench-{index}")}))
}

fn generate_with(stack: &Stack, body: serde_json::Value) -> anyhow::Result<String> {
    let created = stack.admin("/key/generate", &body)?;
    Ok(created["key"].as_str().unwrap_or_default().to_string())
}

/// One deployment (`gpt-4o`) at the provider double over TLS, its key in Envoy's environment.
fn double_providers(double: &ProviderDouble) -> anyhow::Result<Providers> {
    let list = format!(
        "model_list:\n  - model_name: gpt-4o\n    litellm_params:\n      model: openai/gpt-4o\n      \
         api_base: {}/v1\n      api_key: os.environ/{DOUBLE_KEY_ENV}\n",
        double.base_url()
    );
    let ca = double.ca_file().display().to_string();
    Providers::from_model_list(&list, |name| match name {
        DOUBLE_KEY_ENV => Some(DOUBLE_KEY.to_owned()),
        "SSL_CERT_FILE" => Some(ca.clone()),
        _ => None,
    })
}

/// An Envoy beside the stack's (its control plane), with a model list's deployments.
fn envoy_with(
    stack: &Stack,
    template: &str,
    filter_config: &str,
    providers: Providers,
) -> anyhow::Result<Envoy> {
    let mut config = super::config_beside(stack)?;
    config.filter_config = filter_config.to_string();
    config.providers = providers;
    Envoy::start_from(template, config, stack.scratch.path())
}

/// A wrk Lua script posting a chat completion of about 1 KiB with `key`.
fn chat_script(stack: &Stack, key: &str, name: &str) -> anyhow::Result<std::path::PathBuf> {
    chat_script_for(stack, key, name, "livegate-demo")
}

/// The same for `model`.
fn chat_script_for(
    stack: &Stack,
    key: &str,
    name: &str,
    model: &str,
) -> anyhow::Result<std::path::PathBuf> {
    let content = "x".repeat(1024 - 80);
    let body =
        json!({"model": model, "messages": [{"role": "user", "content": content}]}).to_string();
    let text = format!(
        "wrk.method = \"POST\"\nwrk.body = '{body}'\nwrk.headers[\"content-type\"] = \"application/json\"\nwrk.headers[\"authorization\"] = \"Bearer {key}\"\n"
    );
    let path = stack.scratch.path().join(format!("chat-{name}.lua"));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// A wrk Lua script sending the keys in turn, in a file of its own (`name`).
fn script(stack: &Stack, name: &str, keys: &[String]) -> anyhow::Result<std::path::PathBuf> {
    let list: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    let text = format!(
        "local keys = {{{}}}\nlocal i = 0\nrequest = function()\n  i = i % #keys + 1\n  return wrk.format(\"GET\", nil, {{[\"authorization\"] = \"Bearer \" .. keys[i]}})\nend\n",
        list.join(", ")
    );
    let path = stack.scratch.path().join(format!("keys-{name}.lua"));
    std::fs::write(&path, text)?;
    Ok(path)
}

fn table(plan: &Plan, runs: &[Run]) -> String {
    let Plan {
        connections,
        latency_connections,
        rounds,
        seconds,
    } = plan;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Measured by `cargo xtask bench auth` on: {}.",
        super::machine::describe()
    );
    let _ = writeln!(
        out,
        "wrk with 1 thread, `GET /v1/models` (and `POST /v1/chat/completions` for (e)) on the demo upstream, and the chat for (f) to a provider double over local TLS (one deployment), Envoy with 1 worker; \
         throughput with {connections} connections, latency with {latency_connections} (no queueing). \
         Each figure is the median of {rounds} runs of {seconds} s, the setups interleaved. \
         Metering is off (its cost is `bench metering`'s). \
         wrk, the Envoys, the upstream and the control plane share the machine's cores.\n"
    );
    let _ = writeln!(out, "| run | requests/s ({connections} conns) | vs no filter | p50 (1 conn) | p99 (1 conn) | errors |");
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for run in runs {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2}× | {:.0} µs | {:.0} µs | {} |",
            run.name,
            run.throughput.requests_per_second,
            run.throughput.requests_per_second / runs[0].throughput.requests_per_second,
            run.latency.p50_us,
            run.latency.p99_us,
            run.throughput.errors + run.latency.errors
        );
    }
    if let [none, floor, passthrough, cached, miss, limited, open_chat, restricted, tls_none, tls_cached] =
        runs
    {
        let ratio =
            |run: &Run| run.throughput.requests_per_second / none.throughput.requests_per_second;
        let _ = writeln!(
            out,
            "\nAdded by a cached auth at p50: {:.0} µs (target ≤ 30 µs); cached throughput {:.2}× the no-filter run (target ≥ 0.85×); a cache miss end to end at p50: {:.2} ms (target ≤ 1 ms). \
             The least Wasm filter, on a listener as bare as (a)'s, runs at {:.2}× (adding {:.0} µs at p50): what Envoy's Wasm host costs whatever the filter. \
             The filter with no auth to do already costs {:.2}× and {:.0} µs at p50. \
             A key with an rpm_limit adds {:.0} µs at p50 over a cached key (target ≤ 50 µs); \
             a model-restricted key adds {:.0} µs at p50 over an unrestricted one on the same 1 KiB chat body. \
             To a TLS deployment, the filter (auth from the cache, the body's model read, the deployment picked, \
             the body and path rewritten, the provider's key set) adds {:.0} µs at p50 over the same cluster without it \
             (target: ≤ 20 µs more than the cached row's {:.0} µs).",
            cached.latency.p50_us - none.latency.p50_us,
            ratio(cached),
            miss.latency.p50_us / 1e3,
            ratio(floor),
            floor.latency.p50_us - none.latency.p50_us,
            ratio(passthrough),
            passthrough.latency.p50_us - none.latency.p50_us,
            limited.latency.p50_us - cached.latency.p50_us,
            restricted.latency.p50_us - open_chat.latency.p50_us,
            tls_cached.latency.p50_us - tls_none.latency.p50_us,
            cached.latency.p50_us - none.latency.p50_us,
        );
    }
    out
}
