//! One record never stops the ledger (issue 24, item 1), through the real Envoy, filter,
//! control plane and Postgres: a model name with a NUL byte, sent through Envoy, is billed
//! (made storable) and the next request reaches `/spend/logs`; the intake refuses such a
//! record, and times far from now, with a 400 naming the field; a poison record already
//! in a spool (written there by an older build) is kept as a dead letter while every
//! other record drains, with Postgres frozen and thawed around it.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

mod control_plane_support;

use std::io::Write;
use std::time::Duration;

use control_plane_support::*;
use livegate_control_plane::spool::frame::{self, Entry, Frame};
use livegate_tests::artifacts::demo_prices_file;
use livegate_tests::control_plane::ControlPlane;
use livegate_tests::http;
use livegate_tests::process::Scratch;
use livegate_tests::stack::{Stack, StackOptions};
use livegate_tests::{internal_token, poll};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(60);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A record as the filter sends it (and, with `cost` and `unpriced`, as the spool holds it).
fn record(id: &str, key_hash: &str, model: &str, start: u64) -> Value {
    json!({
        "request_id": id,
        "key_hash": key_hash,
        "key_alias": null,
        "team_id": null,
        "model_requested": model,
        "model_returned": null,
        "prompt_tokens": null,
        "completion_tokens": null,
        "total_tokens": null,
        "usage_known": false,
        "status": 200,
        "streamed": false,
        "start_time_ms": start,
        "end_time_ms": start,
    })
}

fn spooled(id: &str, key_hash: &str, model: &str, start: u64) -> Vec<u8> {
    let mut v = record(id, key_hash, model, start);
    v["cost"] = json!(0.0);
    v["unpriced"] = json!(true);
    serde_json::to_vec(&v).unwrap()
}

fn post_records(cp: &ControlPlane, records: Vec<Value>) -> http::Response {
    http::post_json(
        &url(cp, "/v1/spend/records"),
        &[internal_token::header()],
        &json!({ "records": records }),
    )
    .unwrap()
}

fn spend_rows(cp: &ControlPlane, raw_key: &str) -> Option<Vec<Value>> {
    let r = http::get(&url(cp, &format!("/spend/logs?api_key={raw_key}")), ADMIN).ok()?;
    (r.status == 200).then_some(())?;
    r.json().ok()?.as_array().cloned()
}

fn wait_rows(cp: &ControlPlane, raw_key: &str, n: usize) -> Vec<Value> {
    poll::until(&format!("{n} spend rows"), RECOVERY, || {
        spend_rows(cp, raw_key).filter(|r| r.len() >= n)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cp.log_text()))
}

#[test]
fn the_intake_refuses_a_nul_and_times_far_from_now_naming_the_field() {
    let (_pg, cp) = start(&[]);
    let key = generate(&cp, json!({}));
    let hash = key["token"].as_str().unwrap();
    let cases = [
        (
            record("nul", hash, "x\u{0}", now_ms()),
            "records[0].model_requested",
        ),
        (record("far", hash, "m", u64::MAX), "records[0].end_time_ms"),
        (record("old", hash, "m", 1), "records[0].start_time_ms"),
    ];
    for (bad, param) in cases {
        let r = post_records(&cp, vec![bad]);
        assert_eq!(r.status, 400, "{}", r.body);
        let error = &r.json().unwrap()["error"];
        assert_eq!(error["param"], param, "{error}");
        assert_eq!(error["type"], "bad_request_error", "{error}");
    }
    let r = post_records(&cp, vec![record("fine", hash, "m", now_ms())]);
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_nul_model_through_envoy_is_billed_and_the_next_request_reaches_the_ledger() {
    let stack = Stack::start(StackOptions {
        filter_config: r#"{"metering": {"send_timeout_ms": 500}}"#.to_string(),
        control_plane_args: vec![
            "--prices-file".into(),
            demo_prices_file().display().to_string(),
        ],
        ..StackOptions::full()
    })
    .unwrap();
    let created = stack
        .admin("/key/generate", &json!({"key_alias": "poison"}))
        .unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {key}");
    // The JSON escape reaches the filter as written: `"model": "x\u0000"`.
    let hostile = r#"{"model": "x\u0000", "messages": [{"role": "user", "content": "hi"}]}"#;
    let r = http::post_raw(
        &stack.url("/v1/chat/completions"),
        &[("authorization", bearer.as_str())],
        "application/json",
        hostile,
    )
    .unwrap();
    let hostile_status = r.status;
    let r = http::demo_chat(&stack.envoy.url(), &key, json!({})).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let cp = stack.control_plane.as_ref().unwrap();
    let rows = poll::until("the normal request in /spend/logs", PATIENCE, || {
        let rows = spend_rows(cp, &key)?;
        rows.iter()
            .any(|r| r["model_group"] == "livegate-demo")
            .then_some(rows)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cp.log_text()));
    for row in &rows {
        let model = row["model_group"].as_str().unwrap_or_default();
        assert!(!model.contains('\0'), "{row}");
    }
    if hostile_status == 200 {
        // Answered, so billed: its record carries the model made storable.
        let billed = poll::until("the hostile request billed", PATIENCE, || {
            spend_rows(cp, &key)?
                .into_iter()
                .find(|r| r["model_group"] == "x\u{FFFD}")
        });
        billed.unwrap_or_else(|e| panic!("{e}\n{}", cp.log_text()));
    }
    let m = metrics(cp);
    assert_eq!(series(&m, "livegate_spend_dead_letters_total"), Some(0.0));
}

#[test]
fn a_poison_record_in_the_spool_is_a_dead_letter_and_the_rest_drains_around_a_freeze() {
    let _serial = serial();
    let dir = Scratch::new("livegate-spool-").unwrap();
    let spool = dir.path().join("spend.spool").display().to_string();
    let args = ["--spend-spool-path", spool.as_str()];
    let (pg, mut cp) = start(&args);
    let key = generate(&cp, json!({}));
    let (raw, hash) = (
        key["key"].as_str().unwrap().to_string(),
        key["token"].as_str().unwrap().to_string(),
    );
    let good = |i: usize| record(&format!("good-{i}"), &hash, "m", now_ms());
    assert_eq!(post_records(&cp, (0..5).map(good).collect()).status, 200);
    wait_rows(&cp, &raw, 5);

    // Postgres frozen: five more acknowledged into the spool, then the control plane
    // killed, and poison appended as an older build (without validation) would have.
    pg.pause().unwrap();
    assert_eq!(post_records(&cp, (5..10).map(good).collect()).status, 200);
    cp.signal(Signal::SIGKILL).unwrap();
    cp.wait_exit(RECOVERY).unwrap();
    let now = now_ms();
    let poison = Frame::Batch(vec![
        Entry {
            seq: 1_000_000,
            id: "poison-nul".into(),
            data: spooled("poison-nul", &hash, "x\u{0}", now),
        },
        Entry {
            seq: 1_000_001,
            id: "poison-unreadable".into(),
            data: b"not a ledger entry".to_vec(),
        },
        Entry {
            seq: 1_000_002,
            id: "poison-time".into(),
            data: spooled("poison-time", &hash, "m", u64::MAX),
        },
        Entry {
            seq: 1_000_003,
            id: "good-after".into(),
            data: spooled("good-after", &hash, "m", now),
        },
    ]);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&spool)
        .unwrap();
    file.write_all(&frame::encode(&poison)).unwrap();
    file.sync_all().unwrap();
    drop(file);
    pg.resume().unwrap();

    let cp = start_cp(&pg.url(), &args);
    let rows = wait_rows(&cp, &raw, 11);
    assert_eq!(rows.len(), 11, "every good record once, no poison");
    assert!(rows.iter().any(|r| r["request_id"] == "good-after"));
    assert!(!rows
        .iter()
        .any(|r| r["request_id"].as_str().unwrap().starts_with("poison")));
    assert_eq!(
        psql(
            &pg,
            "SELECT string_agg(request_id, ',' ORDER BY request_id) FROM livegate_spend_dead_letters"
        ),
        "poison-nul,poison-time,poison-unreadable"
    );
    // Kept as spooled, byte for byte.
    assert_eq!(
        psql(
            &pg,
            "SELECT convert_from(data, 'UTF8') FROM livegate_spend_dead_letters \
             WHERE request_id = 'poison-unreadable'"
        ),
        "not a ledger entry"
    );
    let m = metrics(&cp);
    assert_eq!(series(&m, "livegate_spend_dead_letters_total"), Some(3.0));
    assert_eq!(series(&m, "livegate_spend_spool_records"), Some(0.0));
    let (r, _) = readiness(&cp);
    assert_eq!(r.json().unwrap()["spend_dead_letters"], 3, "{}", r.body);
    assert!(
        cp.log_text().contains("livegate_spend_dead_letters"),
        "the dead letters are logged"
    );

    // Not retried in a loop, and the drain goes on: frozen, thawed, drained.
    pg.pause().unwrap();
    assert_eq!(post_records(&cp, (20..22).map(good).collect()).status, 200);
    pg.resume().unwrap();
    wait_rows(&cp, &raw, 13);
    let m = metrics(&cp);
    assert_eq!(series(&m, "livegate_spend_dead_letters_total"), Some(3.0));
}
