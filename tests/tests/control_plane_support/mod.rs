//! Shared helpers of the control-plane tests: start a real Postgres and control plane,
//! call the API, read metrics, inspect the engine processes in /proc.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use livegate_tests::control_plane::ControlPlane;
use livegate_tests::http::{self, Response};
use livegate_tests::postgres::Postgres;
use serde_json::Value;

pub const MASTER: &str = "sk-master-test";
pub const ADMIN: &[(&str, &str)] = &[("authorization", "Bearer sk-master-test")];

/// The bound the issue sets on readiness latency during faults.
pub const READINESS_BOUND: Duration = Duration::from_millis(50);
/// The bound the issue sets on the control plane's loop lag during faults.
pub const LOOP_LAG_BOUND_SECONDS: f64 = 0.02;
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
    let r = http::post_json(&url(cp, "/key/generate"), ADMIN, &body).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    r.json().unwrap()
}

pub fn auth_check(cp: &ControlPlane, key: &str) -> Response {
    let bearer = format!("Bearer {key}");
    http::post_raw(
        &url(cp, "/v1/auth/check"),
        &[("authorization", &bearer)],
        "application/json",
        "",
    )
    .unwrap()
}

pub fn metrics(cp: &ControlPlane) -> String {
    http::get(&url(cp, "/metrics"), &[]).unwrap().body
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

/// Loop-lag ticks observed so far: (all, those later than 20 ms).
pub fn loop_lag_ticks(cp: &ControlPlane) -> (f64, f64) {
    let m = metrics(cp);
    let count = series(&m, "livegate_loop_lag_seconds_count").expect("loop lag count");
    let within = series(&m, "livegate_loop_lag_seconds_bucket{le=\"0.02\"}").expect("20 ms bucket");
    (count, count - within)
}

/// Live children and zombies of the control plane (its engines).
pub fn engines(cp: &ControlPlane) -> (Vec<u32>, Vec<u32>) {
    livegate_tests::lab::processes::children(cp.pid())
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
