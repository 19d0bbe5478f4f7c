//! Shared helpers of the control-plane tests: start a real Postgres and control plane,
//! call the API, read metrics, inspect the engine processes in /proc.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use livegate_tests::control_plane::ControlPlane;
use livegate_tests::http::{self, Response};
pub use livegate_tests::internal_token;
use livegate_tests::lab::looplag::LagSnapshot;
use livegate_tests::postgres::Postgres;
use serde_json::Value;

pub const MASTER: &str = livegate_tests::control_plane::TEST_MASTER_KEY;
pub const ADMIN: &[(&str, &str)] = &[(
    "authorization",
    "Bearer sk-master-test-0123456789abcdef0123456789abcdef",
)];

/// What a blocked loop would look like: a blocking teardown stalls the runtime for at least
/// the engine's grace period (100 ms at the shortest in these tests, 500 ms by default), so
/// every tick and every readiness answer must come well inside it. This is a structural
/// bound, not a speed target: a shared CI machine's scheduling noise stays under it, and
/// the figures themselves (loop lag, readiness latency) are measured by
/// `cargo xtask bench outage`, not asserted here.
pub const STALL_BOUND: Duration = Duration::from_millis(100);
pub const READINESS_BOUND: Duration = STALL_BOUND;
/// Generous: how long recovery may take on a loaded CI machine.
pub const RECOVERY: Duration = Duration::from_secs(60);

/// A fresh Postgres and a control plane with a fast watchdog.
pub fn start(extra: &[&str]) -> (Postgres, ControlPlane) {
    let pg = Postgres::start().expect("postgres starts");
    let cp = start_cp(&pg.url(), extra);
    (pg, cp)
}

pub fn start_cp(url: &str, extra: &[&str]) -> ControlPlane {
    start_cp_on(url, None, extra)
}

pub fn start_cp_on(url: &str, port: Option<u16>, extra: &[&str]) -> ControlPlane {
    let mut b = ControlPlane::builder(url);
    if let Some(p) = port {
        b = b.port(p);
    }
    let mut b = b
        .arg("--heartbeat-interval-ms")
        .arg("200")
        .arg("--heartbeat-deadline-ms")
        .arg("500");
    for a in extra {
        b = b.arg(*a);
    }
    let cp = b.start().expect("control plane starts");
    wait_db(&cp, "connected");
    cp
}

/// An admin call (the master key) straight to the control plane.
pub fn post(cp: &ControlPlane, path: &str, body: Value) -> Response {
    http::post_json(&url(cp, path), ADMIN, &body).unwrap()
}

/// An admin read (the master key) straight to the control plane.
pub fn get(cp: &ControlPlane, path: &str) -> Response {
    http::get(&url(cp, path), ADMIN).unwrap()
}

/// The JSON of a 200.
pub fn ok(r: Response) -> Value {
    assert_eq!(r.status, 200, "{}", r.body);
    r.json().unwrap()
}

/// A 400 whose `param` names the field and whose message says why.
pub fn refused(r: &Response, param: &str, says: &str) {
    assert_eq!(r.status, 400, "{}", r.body);
    let e = &r.json().unwrap()["error"];
    assert_eq!(e["param"], param, "{}", r.body);
    assert_eq!(e["type"], "bad_request_error", "{}", r.body);
    assert!(e["message"].as_str().unwrap().contains(says), "{}", r.body);
}

pub fn url(cp: &ControlPlane, path: &str) -> String {
    format!("{}{path}", cp.base_url())
}

/// `GET /health/readiness`, timed from the client.
pub fn readiness(cp: &ControlPlane) -> (Response, Duration) {
    let t = Instant::now();
    let r = http::get_within(&url(cp, "/health/readiness"), Duration::from_secs(5))
        .expect("readiness answers");
    (r, t.elapsed())
}

pub fn db_state(cp: &ControlPlane) -> String {
    let (r, _) = readiness(cp);
    r.json().unwrap()["db"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Polls readiness until `db` is `state`; fails with the log if it never is.
pub fn wait_db(cp: &ControlPlane, state: &str) {
    let r = livegate_tests::poll::until(&format!("db {state}"), RECOVERY, || {
        (db_state(cp) == state).then_some(())
    });
    if let Err(e) = r {
        panic!("{e}\n--- control plane log ---\n{}", cp.log_text());
    }
}

pub fn generate(cp: &ControlPlane, body: Value) -> Value {
    http::admin_post(&cp.base_url(), MASTER, "/key/generate", &body).unwrap()
}

/// Creates a team (`/team/new`); a key's `team_id` must name one.
#[allow(dead_code)] // not every test binary that shares this module makes teams
pub fn new_team(cp: &ControlPlane, team_id: &str) -> Value {
    let body = serde_json::json!({ "team_id": team_id });
    http::admin_post(&cp.base_url(), MASTER, "/team/new", &body).unwrap()
}

/// One value from Postgres, as `psql -tA` prints it.
#[allow(dead_code)] // not every test binary that shares this module reads the database
pub fn psql(pg: &Postgres, sql: &str) -> String {
    let out = std::process::Command::new(livegate_tests::postgres::bin_dir().unwrap().join("psql"))
        .arg(pg.url())
        .args(["-tAc", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub fn auth_check(cp: &ControlPlane, key: &str) -> Response {
    let bearer = format!("Bearer {key}");
    http::post_raw(
        &url(cp, "/v1/auth/check"),
        &[("authorization", &bearer), internal_token::header()],
        "application/json",
        "",
    )
    .unwrap()
}

pub fn metrics(cp: &ControlPlane) -> String {
    http::get(&cp.metrics_url(), &[]).unwrap().body
}

/// The value of one exact series line (name with labels), e.g. `x_bucket{le="0.02"}`.
pub fn series(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The loop-lag histogram as it stands now.
pub fn loop_lag(cp: &ControlPlane) -> LagSnapshot {
    LagSnapshot::parse(&metrics(cp))
}

/// Live children and zombies of the control plane (its engines).
pub fn engines(cp: &ControlPlane) -> (Vec<u32>, Vec<u32>) {
    livegate_tests::procfs::children(cp.pid())
}

/// Waits until exactly one live engine and no zombie remain under the control plane.
pub fn wait_one_engine_no_zombie(cp: &ControlPlane) {
    let r = livegate_tests::poll::until("one engine, no zombie", RECOVERY, || {
        let (alive, zombies) = engines(cp);
        (alive.len() == 1 && zombies.is_empty()).then_some(())
    });
    if let Err(e) = r {
        panic!("{e}: {:?}\n{}", engines(cp), cp.log_text());
    }
}

pub fn process_exists(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// What a background prober saw while a fault ran.
#[derive(Debug, Default)]
pub struct Watch {
    pub samples: usize,
    pub max_latency: Duration,
    pub failures: usize,
    pub states: Vec<String>,
}

/// Probes readiness back to back on another thread while `fault` runs on this one (which
/// must stay the thread that spawned the processes), then checks the loop-lag histogram.
pub fn during<T>(cp: &ControlPlane, fault: impl FnOnce() -> T) -> (T, Watch) {
    let lag_before = loop_lag(cp);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let target = url(cp, "/health/readiness");
    let flag = stop.clone();
    let prober = std::thread::spawn(move || {
        let mut w = Watch::default();
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let t = Instant::now();
            match http::get_within(&target, Duration::from_secs(5)) {
                Ok(r) if r.status == 200 => {
                    w.max_latency = w.max_latency.max(t.elapsed());
                    let db = r
                        .json()
                        .ok()
                        .and_then(|v| v["db"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    if w.states.last() != Some(&db) {
                        w.states.push(db);
                    }
                }
                _ => w.failures += 1,
            }
            w.samples += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
        w
    });
    let out = fault();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let w = prober.join().unwrap();
    let lag = lag_before.until(&loop_lag(cp));
    assert!(lag.ticks > 0, "the loop-lag probe did not tick");
    let max =
        livegate_tests::envoy::prometheus_value(&metrics(cp), "livegate_loop_lag_max_seconds");
    let bound_ms = STALL_BOUND.as_secs_f64() * 1e3;
    assert!(
        lag.max_at_most_ms.is_some_and(|ms| ms <= bound_ms),
        "a loop-lag tick beyond {bound_ms} ms during the fault: {lag:?} (max since start {max:?} s)\n{}",
        cp.log_text()
    );
    assert!(
        w.samples > 0 && w.failures == 0,
        "readiness failed during the fault: {w:?}"
    );
    assert!(
        w.max_latency < READINESS_BOUND,
        "readiness took {:?} (> {STALL_BOUND:?}) during the fault: {w:?}",
        w.max_latency
    );
    (out, w)
}

/// Fault tests run one at a time: the loop-lag bound is about the control plane, and a
/// machine busy with several Postgres clusters at once starves every process alike.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}
