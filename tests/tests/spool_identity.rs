//! The spend spool belongs to one database (issue 23), with real Postgres A and B and the
//! real control plane: records spooled while A is frozen, the control plane then started
//! against B (after a SIGTERM, or a SIGKILL), never reach B: the spool is set aside,
//! readiness and metrics say so, B gets a fresh spool of its own; `spool drain` refuses B
//! and puts every set-aside record into A exactly once.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

mod control_plane_support;

use std::process::Command;

use control_plane_support::*;
use livegate_tests::control_plane::ControlPlane;
use livegate_tests::http;
use livegate_tests::postgres::Postgres;
use livegate_tests::process::Scratch;
use livegate_tests::{internal_token, poll};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn post(cp: &ControlPlane, hash: &str, ids: std::ops::Range<u32>, tag: &str) {
    let records: Vec<Value> = ids
        .map(|i| {
            json!({
                "request_id": format!("{tag}-{i}"), "key_hash": hash, "key_alias": null,
                "team_id": null, "model_requested": "m", "model_returned": null,
                "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2,
                "usage_known": true, "status": 200, "streamed": false,
                "start_time_ms": now_ms(), "end_time_ms": now_ms(),
            })
        })
        .collect();
    let r = http::post_json(
        &url(cp, "/v1/spend/records"),
        &[internal_token::header()],
        &json!({ "records": records }),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
}

fn rows(pg: &Postgres) -> u64 {
    psql(pg, "SELECT count(*) FROM livegate_spend_logs")
        .parse()
        .unwrap()
}

fn identity(pg: &Postgres) -> String {
    psql(
        pg,
        "SELECT current_database() || '/' || id FROM livegate_database_identity",
    )
}

/// `livegate-control-plane spool drain --file F` against `url`: (success, output).
fn spool_drain(file: &str, url: &str) -> (bool, String) {
    let out = Command::new(livegate_tests::artifacts::control_plane_bin())
        .args(["spool", "drain", "--file", file])
        .env("DATABASE_URL", url)
        .env_remove("LIVEGATE_MASTER_KEY")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn records_for_a_frozen_database_never_reach_another(signal: Signal) {
    let _serial = serial();
    let dir = Scratch::new("livegate-spool-").unwrap();
    let spool = dir.path().join("spend.spool").display().to_string();
    let args = ["--spend-spool-path", spool.as_str()];
    let pg_b = Postgres::start().unwrap();
    let (pg_a, mut cp) = start(&args);
    let key = generate(&cp, json!({}));
    let hash = key["token"].as_str().unwrap().to_string();
    post(&cp, &hash, 0..5, "a");
    poll::until("five rows in A", RECOVERY, || {
        (rows(&pg_a) == 5).then_some(())
    })
    .unwrap();

    // A frozen: ten records acknowledged into the spool, which cannot drain.
    pg_a.pause().unwrap();
    post(&cp, &hash, 5..15, "a");
    cp.signal(signal).unwrap();
    cp.wait_exit(RECOVERY).unwrap();

    // Started against B with the same spool file.
    let cp = start_cp(&pg_b.url(), &args);
    pg_a.resume().unwrap(); // thawed to read its identity; nothing connects to it
    let (id_a, id_b) = (identity(&pg_a), identity(&pg_b));
    assert_ne!(id_a, id_b);
    let aside = poll::until("the spool set aside", RECOVERY, || {
        let (r, _) = readiness(&cp);
        let list = r.json().ok()?["spend_spools_set_aside"].as_array()?.clone();
        (list.len() == 1).then(|| list[0].clone())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cp.log_text()));
    assert_eq!(aside["database"], id_a.as_str(), "{aside}");
    assert_eq!(aside["records"], 10, "{aside}");
    let file = aside["file"].as_str().unwrap().to_string();
    assert!(file.starts_with(&format!("{spool}.db-")), "{file}");
    let m = metrics(&cp);
    assert_eq!(series(&m, "livegate_spend_spools_set_aside"), Some(1.0));
    assert_eq!(
        series(&m, "livegate_spend_spool_set_aside_records"),
        Some(10.0)
    );
    assert_eq!(
        series(&m, "livegate_spend_spool_database_mismatches_total"),
        Some(1.0)
    );
    let log = cp.log_text();
    assert!(
        log.contains(&id_a) && log.contains(&id_b),
        "the warning names both databases:\n{log}"
    );
    // B's own records drain into B through a fresh spool; A's never do.
    post(&cp, &hash, 0..3, "b");
    poll::until("B's three rows", RECOVERY, || {
        (rows(&pg_b) == 3).then_some(())
    })
    .unwrap();
    // The rows are visible in B a moment before the drain marks them drained.
    poll::until("B's spool drained", RECOVERY, || {
        let pending = series(&metrics(&cp), "livegate_spend_spool_records");
        (pending == Some(0.0)).then_some(())
    })
    .unwrap();
    assert_eq!(
        psql(
            &pg_b,
            "SELECT count(*) FROM livegate_spend_logs WHERE request_id LIKE 'a-%'"
        ),
        "0"
    );

    // The operator's command: refused against B, all of it into A exactly once.
    let (ok, out) = spool_drain(&file, &pg_b.url());
    assert!(!ok, "{out}");
    assert!(out.contains("refused"), "{out}");
    assert_eq!(rows(&pg_b), 3);
    let (ok, out) = spool_drain(&file, &pg_a.url());
    assert!(ok, "{out}");
    assert!(out.contains("drained 10 records: 10 inserted"), "{out}");
    assert_eq!(rows(&pg_a), 15);
    let (ok, out) = spool_drain(&file, &pg_a.url());
    assert!(ok, "{out}");
    assert!(out.contains("drained 0 records"), "{out}");
    assert_eq!(rows(&pg_a), 15, "exactly once");
    assert!(std::path::Path::new(&file).exists(), "never deleted");
}

#[test]
fn records_spooled_while_a_is_frozen_never_drain_into_b_and_spool_drain_puts_them_into_a() {
    records_for_a_frozen_database_never_reach_another(Signal::SIGTERM);
}

#[test]
fn the_same_after_a_sigkill_while_a_is_frozen() {
    records_for_a_frozen_database_never_reach_another(Signal::SIGKILL);
}
