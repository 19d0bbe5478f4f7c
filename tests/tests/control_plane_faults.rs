//! Fault tests against a real Postgres: paused, killed and restarted; a wedged engine that
//! ignores SIGTERM; an engine that crashes; signals to the control plane. Throughout,
//! readiness answers and the loop ticks without a stall (`STALL_BOUND`; the latencies
//! themselves are `cargo xtask bench outage`'s to measure); afterwards the
//! reconnect has completed, reads work, and no zombie or orphan engine is left.

mod control_plane_support;

use std::time::Duration;

use control_plane_support::*;
use livegate_tests::control_plane::ControlPlane;
use livegate_tests::http;
use nix::sys::signal::Signal;
use serde_json::json;

fn engine_pid(cp: &ControlPlane) -> u64 {
    readiness(cp).0.json().unwrap()["engine_pid"]
        .as_u64()
        .expect("an engine pid")
}

/// The engine's pid when the database is connected, from one readiness answer: between
/// a teardown and the next spawn there is no engine, and that is not a failure.
fn connected_engine(cp: &ControlPlane) -> Option<u64> {
    let body = readiness(cp).0.json().unwrap();
    (body["db"] == "connected").then(|| body["engine_pid"].as_u64())?
}

/// After recovery: live reads and writes work, one engine, no zombie. `known` is a key
/// from before the fault (`None` when the fault may have lost it: the harness's Postgres
/// runs with `synchronous_commit=off`, so a crash can drop the last commits).
fn assert_recovered(cp: &ControlPlane, known: Option<&str>) {
    wait_db(cp, "connected");
    let fresh = generate(cp, json!({}));
    let token = fresh["token"].as_str().unwrap();
    let info = http::get(&url(cp, &format!("/key/info?key={token}")), ADMIN).unwrap();
    assert_eq!(info.status, 200, "{}", info.body);
    let list = http::get(&url(cp, "/key/list"), ADMIN).unwrap();
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(list.json().unwrap()["total_count"].as_u64().unwrap() >= 1);
    assert_eq!(auth_check(cp, fresh["key"].as_str().unwrap()).status, 200);
    if let Some(known) = known {
        assert_eq!(auth_check(cp, known).status, 200);
    }
    wait_one_engine_no_zombie(cp);
}

/// A key generated before the fault, to check it still works after.
fn known_key(cp: &ControlPlane) -> String {
    generate(cp, json!({}))["key"]
        .as_str()
        .expect("a generated key")
        .to_string()
}

fn wedged_engine_args() -> Vec<String> {
    let bin = livegate_tests::artifacts::control_plane_bin();
    vec![
        "--engine-command".into(),
        format!("sh -c 'trap \"\" TERM; exec {} engine'", bin.display()),
    ]
}

fn counter(cp: &ControlPlane, name: &str) -> f64 {
    series(&metrics(cp), name).unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn postgres_paused_then_resumed() {
    let _serial = serial();
    let (pg, cp) = start(&[]);
    let known = known_key(&cp);
    let before = engine_pid(&cp);
    let (_, w) = during(&cp, || {
        pg.pause().unwrap();
        wait_db(&cp, "reconnecting");
        pg.resume().unwrap();
        wait_db(&cp, "connected");
    });
    assert_eq!(
        w.states.first().map(String::as_str),
        Some("connected"),
        "{w:?}"
    );
    assert!(w.states.iter().any(|s| s == "reconnecting"), "{w:?}");
    assert_ne!(engine_pid(&cp), before, "the engine was not replaced");
    assert!(!process_exists(before as u32), "the old engine survived");
    assert!(counter(&cp, "livegate_db_reconnects_total") >= 1.0);
    assert_recovered(&cp, Some(&known));
}

#[test]
fn postgres_killed_then_restarted() {
    let _serial = serial();
    let (mut pg, cp) = start(&[]);
    let (_, w) = during(&cp, || {
        pg.kill().unwrap();
        wait_db(&cp, "reconnecting");
        pg.restart().unwrap();
        wait_db(&cp, "connected");
    });
    assert!(w.states.iter().any(|s| s == "reconnecting"), "{w:?}");
    assert_recovered(&cp, None);
}

#[test]
fn a_wedged_engine_that_ignores_sigterm_is_killed_without_stalling_the_loop() {
    let _serial = serial();
    let args = wedged_engine_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (pg, cp) = start(&args);
    let known = known_key(&cp);
    let wedged = engine_pid(&cp);
    let (_, w) = during(&cp, || {
        pg.pause().unwrap();
        wait_db(&cp, "reconnecting");
        livegate_tests::poll::until("the wedged engine to be SIGKILLed", RECOVERY, || {
            (!process_exists(wedged as u32)).then_some(())
        })
        .unwrap();
        pg.resume().unwrap();
        wait_db(&cp, "connected");
    });
    assert!(w.states.iter().any(|s| s == "reconnecting"), "{w:?}");
    assert!(
        counter(&cp, "livegate_engine_sigkill_total") >= 1.0,
        "SIGKILL was never needed: {}",
        cp.log_text()
    );
    assert_recovered(&cp, Some(&known));
}

#[test]
fn sighup_forces_a_reconnect_even_through_an_engine_that_ignores_sigterm() {
    let _serial = serial();
    let args = wedged_engine_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_pg, cp) = start(&args);
    let known = known_key(&cp);
    let old = engine_pid(&cp);
    let (_, _w) = during(&cp, || {
        cp.signal(Signal::SIGHUP).unwrap();
        livegate_tests::poll::until("a new engine", RECOVERY, || {
            connected_engine(&cp).filter(|&pid| pid != old)
        })
        .unwrap();
    });
    assert!(!process_exists(old as u32));
    assert_eq!(counter(&cp, "livegate_engine_sigkill_total"), 1.0);
    assert_eq!(counter(&cp, "livegate_db_reconnects_total"), 1.0);
    assert_recovered(&cp, Some(&known));
}

#[test]
fn an_engine_that_crashes_is_replaced() {
    let _serial = serial();
    let (_pg, cp) = start(&[]);
    let known = known_key(&cp);
    let old = engine_pid(&cp);
    let (_, w) = during(&cp, || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
        livegate_tests::poll::until("a new engine", RECOVERY, || {
            connected_engine(&cp).filter(|&pid| pid != old)
        })
        .unwrap();
    });
    assert!(
        readiness(&cp).0.json().unwrap()["last_error"]
            .as_str()
            .unwrap()
            .contains("exited"),
        "{w:?}"
    );
    assert_recovered(&cp, Some(&known));
}

#[test]
fn an_engine_that_never_answers_is_torn_down_again_and_again_without_leaking() {
    let _serial = serial();
    let pg = livegate_tests::postgres::Postgres::start().unwrap();
    let mut b = ControlPlane::builder(&pg.url());
    let silent = "sh -c 'trap \"\" TERM; exec sleep 3600'";
    for a in [
        "--engine-command",
        silent,
        "--engine-start-timeout-ms",
        "300",
        "--engine-grace-ms",
        "100",
        "--backoff-cap-ms",
        "200",
    ] {
        b = b.arg(a);
    }
    let cp = b.start().unwrap();
    let (_, w) = during(&cp, || {
        livegate_tests::poll::until("three engines killed", RECOVERY, || {
            (counter(&cp, "livegate_engine_sigkill_total") >= 3.0).then_some(())
        })
        .unwrap();
        let r = http::get(&url(&cp, "/key/list"), ADMIN).unwrap();
        assert_eq!(r.status, 503, "{}", r.body);
    });
    assert!(w.states.iter().all(|s| s == "disconnected"), "{w:?}");
    let (alive, zombies) = engines(&cp);
    assert!(
        alive.len() <= 1 && zombies.len() <= 1,
        "engines pile up: {alive:?} {zombies:?}"
    );
}

#[test]
fn killing_the_control_plane_with_sigkill_leaves_no_orphan_engine() {
    let _serial = serial();
    let (_pg, mut cp) = start(&[]);
    let engine = engine_pid(&cp) as u32;
    assert!(process_exists(engine));
    cp.signal(Signal::SIGKILL).unwrap();
    cp.wait_exit(Duration::from_secs(30)).unwrap();
    livegate_tests::poll::until("the engine to die with its parent", RECOVERY, || {
        (!process_exists(engine)).then_some(())
    })
    .unwrap();
}

#[test]
fn sigterm_shuts_down_gracefully_and_stops_the_engine() {
    let _serial = serial();
    let (_pg, mut cp) = start(&[]);
    let engine = engine_pid(&cp) as u32;
    cp.signal(Signal::SIGTERM).unwrap();
    let status = cp.wait_exit(RECOVERY).unwrap();
    assert!(status.success(), "{status:?}\n{}", cp.log_text());
    assert!(
        !process_exists(engine),
        "the engine outlived a graceful shutdown"
    );
    assert!(cp.log_text().contains("control plane stopped"));
}
