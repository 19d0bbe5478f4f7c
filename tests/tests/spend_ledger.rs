//! The spend ledger through the real control plane and Postgres: records posted to
//! `POST /v1/spend/records` (some twice) become exactly one row each in
//! `livegate_spend_logs`, with exact token and cost sums in `/spend/logs`, `/key/info`,
//! `/team/info` and `/global/spend`; records acknowledged while Postgres is frozen drain
//! after; records acknowledged before a SIGKILL drain after the restart, none twice.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

mod control_plane_support;

use control_plane_support::*;
use livegate_tests::control_plane::ControlPlane;
use livegate_tests::process::Scratch;
use livegate_tests::{http, internal_token};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// Prices that are powers of two, so every sum is exact in binary floating point.
const PRICES: &str =
    r#"{"m-priced": {"input_cost_per_token": 0.5, "output_cost_per_token": 0.25}}"#;

struct Setup {
    raw_key: String,
    key_hash: String,
    _dir: Scratch,
    prices: String,
}

fn prices_file() -> (Scratch, String) {
    let dir = Scratch::new("livegate-prices-").unwrap();
    let path = dir.path().join("prices.json");
    std::fs::write(&path, PRICES).unwrap();
    (dir, path.display().to_string())
}

fn key_and_team(cp: &ControlPlane, dir: Scratch, prices: String) -> Setup {
    new_team(cp, "ledger-team");
    let key = generate(cp, json!({"team_id": "ledger-team", "key_alias": "ledger"}));
    Setup {
        raw_key: key["key"].as_str().unwrap().to_string(),
        key_hash: key["token"].as_str().unwrap().to_string(),
        _dir: dir,
        prices,
    }
}

/// Record i: i prompt and 2i completion tokens on the priced model, except every fifth,
/// which is unpriced, and every seventh, which reported no usage.
fn record(s: &Setup, i: u64) -> Value {
    let usage = !i.is_multiple_of(7);
    let model = if i.is_multiple_of(5) {
        "m-unpriced"
    } else {
        "m-priced"
    };
    json!({
        "request_id": format!("req-{i:04}"),
        "key_hash": s.key_hash,
        "key_alias": "ledger",
        "team_id": "ledger-team",
        "model_requested": model,
        "model_returned": model,
        "prompt_tokens": usage.then_some(i),
        "completion_tokens": usage.then_some(2 * i),
        "total_tokens": usage.then_some(3 * i),
        "usage_known": usage,
        "status": 200,
        "streamed": i.is_multiple_of(2),
        "start_time_ms": base_ms() + i,
        "end_time_ms": base_ms() + 100 + i,
    })
}

const DAY_MS: u64 = 86_400_000;

/// Noon (UTC) yesterday: inside the window of times the intake takes around its clock,
/// and one known day for the per-day summary.
fn base_ms() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    (now / DAY_MS - 1) * DAY_MS + DAY_MS / 2
}

/// The UTC day `days` after the base's, as `YYYY-MM-DD` (Howard Hinnant's civil_from_days).
fn day(days: i64) -> String {
    let z = (base_ms() / DAY_MS) as i64 + days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// What records `ids` must add up to: (rows, total tokens, cost).
fn expected(ids: impl Iterator<Item = u64>) -> (usize, i64, f64) {
    let mut out = (0, 0, 0.0);
    for i in ids {
        out.0 += 1;
        if !i.is_multiple_of(7) {
            out.1 += 3 * i as i64;
            if !i.is_multiple_of(5) {
                out.2 += i as f64 * 0.5 + (2 * i) as f64 * 0.25;
            }
        }
    }
    out
}

/// Posts records `ids` as one batch; returns the ack.
fn post(cp: &ControlPlane, s: &Setup, ids: &[u64]) -> Value {
    let records: Vec<Value> = ids.iter().map(|i| record(s, *i)).collect();
    let r = http::post_json(
        &url(cp, "/v1/spend/records"),
        &[internal_token::header()],
        &json!({ "records": records }),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    r.json().unwrap()
}

fn get(cp: &ControlPlane, path: &str) -> Value {
    let r = http::get(&url(cp, path), ADMIN).unwrap();
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.json().unwrap()
}

/// Polls `/spend/logs` for the key until it holds `n` rows.
fn wait_rows(cp: &ControlPlane, s: &Setup, n: usize) -> Vec<Value> {
    let path = format!("/spend/logs?api_key={}", s.raw_key);
    let r = livegate_tests::poll::until(&format!("{n} spend rows"), RECOVERY, || {
        let r = http::get(&url(cp, &path), ADMIN).ok()?;
        let rows = r.json().ok()?.as_array()?.clone();
        (rows.len() >= n).then_some(rows)
    });
    r.unwrap_or_else(|e| panic!("{e}\n{}", cp.log_text()))
}

/// Checks every total against records `ids`, each exactly once.
fn assert_ledger(
    cp: &ControlPlane,
    pg: &livegate_tests::postgres::Postgres,
    s: &Setup,
    ids: &[u64],
) {
    let (n, tokens, cost) = expected(ids.iter().copied());
    let rows = wait_rows(cp, s, n);
    assert_eq!(rows.len(), n, "no row twice");
    let mut seen: Vec<&str> = rows
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), n);
    let row_tokens: i64 = rows
        .iter()
        .map(|r| r["total_tokens"].as_i64().unwrap())
        .sum();
    let row_cost: f64 = rows.iter().map(|r| r["spend"].as_f64().unwrap()).sum();
    assert_eq!(row_tokens, tokens);
    assert_eq!(row_cost, cost);
    assert_eq!(
        psql(pg, "SELECT count(*) FROM livegate_spend_logs"),
        n.to_string()
    );
    let key = get(cp, &format!("/key/info?key={}", s.raw_key));
    assert_eq!(key["info"]["spend"].as_f64().unwrap(), cost, "{key}");
    let team = get(cp, "/team/info?team_id=ledger-team");
    assert_eq!(team["team_info"]["spend"].as_f64().unwrap(), cost, "{team}");
    let global = get(cp, "/global/spend");
    assert_eq!(global, json!({"spend": cost, "max_budget": null}));
    // Spend is not policy: the key's version is the one /key/generate gave it.
    assert_eq!(
        psql(pg, "SELECT count(*) FROM livegate_key_changes"),
        "1",
        "a spend update logged a key change"
    );
    let metrics = metrics(cp);
    assert_eq!(series(&metrics, "livegate_spend_spool_records"), Some(0.0));
}

fn start_ledger(extra: &[&str]) -> (livegate_tests::postgres::Postgres, ControlPlane, Setup) {
    let (dir, prices) = prices_file();
    let mut args = vec!["--prices-file", prices.as_str()];
    args.extend_from_slice(extra);
    let (pg, cp) = start(&args);
    let s = key_and_team(&cp, dir, prices.clone());
    (pg, cp, s)
}

#[test]
fn every_record_is_in_the_ledger_once_with_exact_sums() {
    let (pg, cp, s) = start_ledger(&[]);
    let all: Vec<u64> = (1..=60).collect();
    for chunk in all.chunks(20) {
        let ack = post(&cp, &s, chunk);
        assert_eq!(
            ack["accepted"].as_u64().unwrap() as usize
                + ack["duplicates"].as_u64().unwrap() as usize,
            chunk.len()
        );
    }
    // A batch sent again (a filter retrying after a lost answer), with a duplicate inside.
    let ack = post(&cp, &s, &[3, 3, 41, 59]);
    assert_eq!(
        ack["accepted"].as_u64().unwrap() + ack["duplicates"].as_u64().unwrap(),
        4
    );
    assert_ledger(&cp, &pg, &s, &all);
    // Drained records sent again are refused by Postgres, never counted twice.
    post(&cp, &s, &[1, 2, 30]);
    let m = livegate_tests::poll::until("the resent records drained", RECOVERY, || {
        let m = metrics(&cp);
        (series(&m, "livegate_spend_duplicates_total")? >= 3.0).then_some(m)
    })
    .unwrap();
    assert_eq!(series(&m, "livegate_spend_drained_total"), Some(60.0));
    assert_eq!(series(&m, "livegate_spend_unpriced_total"), Some(12.0));
    assert_ledger(&cp, &pg, &s, &all);
    let one = get(&cp, "/spend/logs?request_id=req-0010");
    assert_eq!(one.as_array().unwrap().len(), 1, "{one}");
    assert_eq!(one[0]["model"], "m-unpriced");
    assert_eq!(one[0]["metadata"]["unpriced"], true);
    // LiteLLM's per-day summary: the base's day is the day of every record.
    let path = format!("/spend/logs?start_date={}&end_date={}", day(-1), day(1));
    let days = get(&cp, &path);
    let (_, _, cost) = expected(all.iter().copied());
    assert_eq!(days.as_array().unwrap().len(), 3, "{days}");
    assert_eq!(days[1]["startTime"], day(0));
    assert_eq!(days[1]["spend"].as_f64().unwrap(), cost);
    assert_eq!(days[1][&s.key_hash].as_f64().unwrap(), cost);
    assert_eq!(days[0]["spend"].as_f64().unwrap(), 0.0);
    let r = http::get(&url(&cp, "/spend/logs?user_id=x"), ADMIN).unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json().unwrap()["error"]["param"], "user_id");
}

#[test]
fn records_acknowledged_while_postgres_is_frozen_drain_after() {
    let _serial = serial();
    let (pg, cp, s) = start_ledger(&[]);
    let all: Vec<u64> = (1..=40).collect();
    post(&cp, &s, &all[..20]);
    pg.pause().unwrap();
    // Acknowledged during the outage: spooled, not yet in Postgres.
    post(&cp, &s, &all[20..]);
    post(&cp, &s, &all[15..25]);
    pg.resume().unwrap();
    assert_ledger(&cp, &pg, &s, &all);
}

#[test]
fn records_acknowledged_before_a_sigkill_are_drained_after_the_restart_once() {
    let _serial = serial();
    let spool_dir = Scratch::new("livegate-spool-").unwrap();
    let spool = spool_dir.path().join("spend.spool").display().to_string();
    let (pg, mut cp, s) = start_ledger(&["--spend-spool-path", &spool]);
    let all: Vec<u64> = (1..=50).collect();
    post(&cp, &s, &all[..10]);
    wait_rows(&cp, &s, 10);
    // Frozen Postgres: what follows is acknowledged but cannot be drained before the kill.
    pg.pause().unwrap();
    post(&cp, &s, &all[10..30]);
    post(&cp, &s, &all[30..]);
    cp.signal(Signal::SIGKILL).unwrap();
    cp.wait_exit(RECOVERY).unwrap();
    pg.resume().unwrap();
    let args = [
        "--prices-file",
        s.prices.as_str(),
        "--spend-spool-path",
        spool.as_str(),
    ];
    let cp = start_cp(&pg.url(), &args);
    assert_ledger(&cp, &pg, &s, &all);
}
