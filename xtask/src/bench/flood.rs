//! `cargo xtask bench flood`: hostile traffic against the real stack (release build,
//! loopback only, bounded in time). (a) Slow sockets: connections that send the start of a
//! request's headers and never finish, while the kubelet's probe hits the probe listener.
//! (b) A flood of random `Bearer sk-…` keys at the gateway's listener while a warmed key
//! keeps requesting. (c) Strangers with big bodies: hundreds of connections each starting an
//! 8 MiB body, without a key and then with keys nobody issued, while Envoy's memory is
//! watched against its overload bound and the probe listener's liveness is probed.

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use livegate_tests::big_bodies::{self, Credential, MemoryPeak, MemoryWatch};
use livegate_tests::envoy::EnvoyLimits;
use livegate_tests::flood::RandomKeyFlood;
use livegate_tests::lab::prober::{ProbePlan, Probers};
use livegate_tests::lab::recorder::{self, Sample, Summary};
use livegate_tests::stack::{Stack, StackOptions};
use serde_json::json;

use crate::step;

/// What to run.
pub struct FloodPlan {
    pub slow_sockets: usize,
    pub connection_limit: u64,
    pub flood_seconds: u64,
    pub flood_rate: u64,
    /// Connections of (c), each starting an 8 MiB body.
    pub big_bodies: usize,
}

/// (c)'s body size: the largest a protected route takes by default.
const BIG_BODY: usize = livegate_tests::envoy::DEFAULT_MAX_REQUEST_BODY as usize;

/// (c)'s figures, one row per credential.
struct BigBodyReport {
    credential: Credential,
    statuses: String,
    seconds: f64,
    peak: MemoryPeak,
    liveness: Option<Summary>,
}

/// (a)'s figures.
struct SlowReport {
    opened: usize,
    closed: usize,
    all_closed_after: Option<Duration>,
    overflowed: f64,
    header_timeouts: f64,
    liveness: Option<Summary>,
}

/// (b)'s figures.
struct FloodReport {
    sent: u64,
    requests_per_second: f64,
    statuses: String,
    warmed: Option<Summary>,
    liveness: Option<Summary>,
    reconnects_before: u64,
    reconnects_after: u64,
}

/// The probe a kubelet would send, ten times as often.
fn liveness_plan(stack: &Stack) -> ProbePlan {
    ProbePlan {
        url: format!("{}/health/liveliness", stack.envoy.probe_url()),
        headers: Vec::new(),
        clients: 2,
        period: Duration::from_millis(20),
        timeout: Duration::from_secs(2),
    }
}

pub fn run(plan: &FloodPlan) -> anyhow::Result<()> {
    let headers_timeout = Duration::from_secs(10);
    let stack = Stack::start(StackOptions {
        concurrency: 2,
        envoy_limits: EnvoyLimits {
            request_headers_timeout: headers_timeout,
            max_connections: plan.connection_limit,
            ..EnvoyLimits::default()
        },
        ..StackOptions::full()
    })?;
    step(&format!(
        "(a) {} slow-header sockets, connection limit {}",
        plan.slow_sockets, plan.connection_limit
    ));
    let slow = slow_sockets(&stack, plan.slow_sockets)?;
    step(&format!(
        "(b) {} s of {} random keys/s, a warmed key meanwhile",
        plan.flood_seconds, plan.flood_rate
    ));
    let flood = flood(&stack, plan)?;
    step(&format!(
        "(c) {} connections each starting an {} MiB body, without a key, then with unknown keys",
        plan.big_bodies,
        BIG_BODY >> 20
    ));
    let big = [Credential::None, Credential::RandomKey]
        .into_iter()
        .map(|credential| big_bodies_run(&stack, plan.big_bodies, credential))
        .collect::<Vec<_>>();
    let mut table = table(plan, headers_timeout, &slow, &flood);
    table.push_str(&big_table(plan, &big));
    eprintln!("{table}");
    super::markdown::update_benchmarks_doc("flood", &table)
}

fn slow_sockets(stack: &Stack, count: usize) -> anyhow::Result<SlowReport> {
    let address = stack.envoy.url().trim_start_matches("http://").to_string();
    let probers = Probers::start(&liveness_plan(stack), Instant::now());
    let started = Instant::now();
    let mut sockets = Vec::with_capacity(count);
    for i in 0..count {
        let Ok(mut socket) = TcpStream::connect(&address) else {
            continue;
        };
        let _ = socket
            .write_all(format!("GET /v1/models HTTP/1.1\r\nHost: a\r\nX-Slow-{i}: ").as_bytes());
        socket.set_nonblocking(true)?;
        sockets.push(socket);
    }
    let opened = sockets.len();
    // Bounded: the header timeout and a margin.
    let deadline = started + Duration::from_secs(60);
    let mut all_closed_after = None;
    while Instant::now() < deadline {
        sockets.retain_mut(|socket| !closed(socket));
        if sockets.is_empty() {
            all_closed_after = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let liveness = recorder::summarize(&probers.stop());
    // Envoy merges its workers' counters into the admin stats every 5 s (its flush).
    std::thread::sleep(Duration::from_secs(6));
    Ok(SlowReport {
        opened,
        closed: opened - sockets.len(),
        all_closed_after,
        overflowed: stack
            .envoy
            .prometheus_counter("envoy_listener_downstream_global_cx_overflow")?,
        header_timeouts: stack
            .envoy
            .prometheus_counter("envoy_http_downstream_rq_header_timeout")?,
        liveness,
    })
}

/// Closed by the peer: end of stream, or an error other than "nothing yet".
fn closed(socket: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 1024];
    match socket.read(&mut buffer) {
        Ok(0) => true,
        Ok(_) => closed(socket),
        Err(error) => error.kind() != ErrorKind::WouldBlock,
    }
}

fn reconnects(stack: &Stack) -> anyhow::Result<u64> {
    let control_plane = stack
        .control_plane
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no control plane"))?;
    let body = livegate_tests::http::get(
        &format!("{}/health/readiness", control_plane.base_url()),
        &[],
    )?
    .json()?;
    Ok(body["reconnects"].as_u64().unwrap_or(0))
}

const FLOOD_THREADS: u64 = 32;

fn flood(stack: &Stack, plan: &FloodPlan) -> anyhow::Result<FloodReport> {
    let created = stack.admin("/key/generate", &json!({"key_alias": "bench-warmed"}))?;
    let warmed_key = created["key"].as_str().unwrap_or_default().to_string();
    let warmed_plan = ProbePlan {
        url: stack.url("/v1/models"),
        headers: vec![("authorization".into(), format!("Bearer {warmed_key}"))],
        clients: 1,
        period: Duration::from_millis(10),
        timeout: Duration::from_secs(2),
    };
    // Warm it: one allow in the caches.
    livegate_tests::http::get(
        &warmed_plan.url,
        &[("authorization", &format!("Bearer {warmed_key}"))],
    )?;
    let reconnects_before = reconnects(stack)?;

    let epoch = Instant::now();
    let liveness = Probers::start(&liveness_plan(stack), epoch);
    let warmed = Probers::start(&warmed_plan, epoch);
    let address = stack.envoy.url().trim_start_matches("http://").to_string();
    let flood = RandomKeyFlood::start(&address, FLOOD_THREADS, plan.flood_rate);
    std::thread::sleep(Duration::from_secs(plan.flood_seconds));
    let tally = flood.stop();
    let warmed_samples: Vec<Sample> = warmed.stop();
    let liveness = recorder::summarize(&liveness.stop());
    Ok(FloodReport {
        sent: tally.sent,
        requests_per_second: tally.requests_per_second(),
        statuses: tally.describe(),
        warmed: recorder::summarize(&warmed_samples),
        liveness,
        reconnects_before,
        reconnects_after: reconnects(stack)?,
    })
}

fn big_bodies_run(stack: &Stack, count: usize, credential: Credential) -> BigBodyReport {
    let watch = MemoryWatch::start(&stack.envoy.admin_url(), stack.envoy.pid());
    let liveness = Probers::start(&liveness_plan(stack), Instant::now());
    let started = Instant::now();
    let statuses = big_bodies::send(
        &stack.envoy.url(),
        "/v1/chat/completions",
        count,
        BIG_BODY,
        credential,
    );
    let seconds = started.elapsed().as_secs_f64();
    let peak = watch.stop();
    BigBodyReport {
        credential,
        statuses: big_bodies::describe(&statuses),
        seconds,
        peak,
        liveness: recorder::summarize(&liveness.stop()),
    }
}

fn big_table(plan: &FloodPlan, runs: &[BigBodyReport]) -> String {
    let limits = EnvoyLimits::default();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n**(c) Strangers with big bodies.** {} connections at once each send `POST \
         /v1/chat/completions` with an {} MiB body, first without a key, then each with a \
         `Bearer sk-…` nobody issued. Envoy's heap bound (`max_heap`, the overload manager's \
         `fixed_heap`) is {} MiB; its memory is read from admin `/memory` (heap in use: \
         `heap_size - pageheap_unmapped - pageheap_free`, what the overload manager measures) \
         and `/proc` (RSS, the Wasm VMs included) every 20 ms.\n",
        plan.big_bodies,
        BIG_BODY >> 20,
        limits.max_heap >> 20
    );
    let _ = writeln!(out, "| clients | answers | took | Envoy peak heap in use | peak allocated | peak RSS | liveness 2xx | liveness p99 | liveness max |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for run in runs {
        let who = match run.credential {
            Credential::None => "no key",
            Credential::RandomKey => "unknown keys",
        };
        let _ = writeln!(
            out,
            "| {who} | {} | {:.1} s | {} MiB | {} MiB | {} MiB | {} | {} | {} |",
            run.statuses,
            run.seconds,
            run.peak.heap_in_use >> 20,
            run.peak.allocated >> 20,
            run.peak.rss >> 20,
            percent(&run.liveness),
            ms(&run.liveness, |s| s.p99_ms),
            ms(&run.liveness, |s| s.max_ms),
        );
    }
    out
}

fn ms(summary: &Option<Summary>, pick: fn(&Summary) -> f64) -> String {
    summary
        .as_ref()
        .map_or("—".to_string(), |s| format!("{:.1} ms", pick(s)))
}

fn percent(summary: &Option<Summary>) -> String {
    summary.as_ref().map_or("—".to_string(), |s| {
        format!("{:.2} % of {}", s.percent_2xx, s.count)
    })
}

fn table(
    plan: &FloodPlan,
    headers_timeout: Duration,
    slow: &SlowReport,
    flood: &FloodReport,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Measured by `cargo xtask bench flood` on: {}; load average when it ended: {}.",
        super::machine::describe(),
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_string))
            .unwrap_or_else(|| "?".to_string())
    );
    let _ = writeln!(
        out,
        "The real stack in release mode on loopback, Envoy with 2 workers; the load generator, \
         Envoy, the control plane, Postgres and the demo upstream share the machine's cores. \
         Liveness is probed on Envoy's probe listener by 2 clients every 20 ms each (a 2 s \
         timeout counts as a failure).\n"
    );
    let _ = writeln!(
        out,
        "**(a) Slow sockets.** {} connections to the gateway's listener send the start of a \
         request's headers and never finish; connection limit {}, `request_headers_timeout` {} s.\n",
        plan.slow_sockets,
        plan.connection_limit,
        headers_timeout.as_secs()
    );
    let _ = writeln!(out, "| opened | closed by Envoy | all closed after | turned away at the limit | header timeouts | liveness 2xx | liveness p99 | liveness max |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    let _ = writeln!(
        out,
        "| {} | {} | {} | {:.0} | {:.0} | {} | {} | {} |\n",
        slow.opened,
        slow.closed,
        slow.all_closed_after
            .map_or("not within 60 s".to_string(), |d| format!(
                "{:.1} s",
                d.as_secs_f64()
            )),
        slow.overflowed,
        slow.header_timeouts,
        percent(&slow.liveness),
        ms(&slow.liveness, |s| s.p99_ms),
        ms(&slow.liveness, |s| s.max_ms),
    );
    let _ = writeln!(
        out,
        "**(b) Random-key flood.** {} s of random `Bearer sk-…` keys at {} requests/s asked \
         ({FLOOD_THREADS} keep-alive connections, paced), `GET /v1/models`; meanwhile a warmed key \
         requests every 10 ms.\n",
        plan.flood_seconds, plan.flood_rate
    );
    let _ = writeln!(out, "| flood requests/s achieved | flood answers | warmed key 2xx | warmed p50 | warmed p99 | liveness 2xx | liveness p99 | liveness max | readiness `reconnects` before → after |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    let _ = writeln!(
        out,
        "| {:.0} ({} sent) | {} | {} | {} | {} | {} | {} | {} | {} → {} |",
        flood.requests_per_second,
        flood.sent,
        flood.statuses,
        percent(&flood.warmed),
        ms(&flood.warmed, |s| s.p50_ms),
        ms(&flood.warmed, |s| s.p99_ms),
        percent(&flood.liveness),
        ms(&flood.liveness, |s| s.p99_ms),
        ms(&flood.liveness, |s| s.max_ms),
        flood.reconnects_before,
        flood.reconnects_after,
    );
    out
}
