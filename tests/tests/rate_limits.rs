//! Rate limits through the real Envoy, filter, control planes and Postgres: a key (or its
//! team) uses its whole `rpm_limit` at once and is then refused with 429, `retry-after`,
//! OpenAI's `x-ratelimit-*` headers and LiteLLM's error, before anything reaches the
//! upstream; a `tpm_limit` refuses once the metered tokens reach it; the limit holds with
//! Postgres frozen (from the control plane's memory) and with the control plane stopped
//! (the filter's local share); two Envoys and two control planes admit a flooded key its
//! limit and no more.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use std::time::Duration;

use livegate_tests::fleet::{Fleet, FleetOptions};
use livegate_tests::http::{self, Response};
use livegate_tests::poll;
use livegate_tests::stack::{Stack, StackOptions};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(60);

/// The filter's local share while no control plane answers: a quarter of a key's limit per
/// worker.
const FILTER_CONFIG: &str = r#"{"rate_limits": {"outage_share": 0.25}}"#;

fn stack() -> Stack {
    let mut options = StackOptions::full();
    options.filter_config = FILTER_CONFIG.to_string();
    Stack::start(options).unwrap()
}

fn chat_at(base: &str, key: &str) -> Response {
    chat_held(base, key, 0)
}

/// A chat completion the demo upstream holds `delay_ms` before it answers (a slow model).
fn chat_held(base: &str, key: &str, delay_ms: u64) -> Response {
    http::demo_chat(base, key, json!({"livegate_delay_ms": delay_ms})).unwrap()
}

/// The upstream's answer (the demo upstream answers chat completions with `choices`).
fn reached_upstream(r: &Response) -> bool {
    r.status == 200 && r.json().is_ok_and(|b| b.get("choices").is_some())
}

/// The gateway's 429 for a limit of `kind` (`requests` or `tokens`); returns the
/// `retry-after` seconds.
fn assert_rate_limited(r: &Response, kind: &str, limit: u64) -> u64 {
    let field = if kind == "requests" {
        "rpm_limit"
    } else {
        "tpm_limit"
    };
    match livegate_tests::refusal::rate_limited(r, kind, field, limit) {
        Ok(limited) => limited.retry_after,
        Err(wrong) => panic!("{wrong}"),
    }
}

/// Sends `n` requests one after the other; how many reached the upstream. Every other
/// answer must be the gateway's 429.
fn admitted_of(base: &str, key: &str, n: usize, kind: &str, limit: u64) -> usize {
    (0..n)
        .filter(|_| {
            let r = chat_at(base, key);
            if reached_upstream(&r) {
                return true;
            }
            assert_rate_limited(&r, kind, limit);
            false
        })
        .count()
}

/// Asserts a requests 429 stating the control plane's `limit` or, for a check answered
/// later than the filter waits, the worker's share of it (`local`).
fn assert_limited_by_either(r: &Response, limit: u64, local: u64) {
    let stated = r.header("x-ratelimit-limit-requests").unwrap_or_default();
    let stated = if stated == local.to_string() {
        local
    } else {
        limit
    };
    assert_rate_limited(r, "requests", stated);
}

/// Like [`admitted_of`] when a 429 may be the control plane's or the worker's share.
fn admitted_of_any(base: &str, key: &str, n: usize, limit: u64, local: u64) -> usize {
    (0..n)
        .filter(|_| {
            let r = chat_at(base, key);
            if reached_upstream(&r) {
                return true;
            }
            assert_limited_by_either(&r, limit, local);
            false
        })
        .count()
}

/// Like [`admitted_of`] during an outage of a fleet, where a worker that never saw the key
/// has no allow to serve and answers 503 (as for any key): a 503 admits nothing either. A
/// 429 states the control plane's `limit` or, where a check went unanswered, the worker's
/// share of it (`local`). At least one answer must be a 429.
fn admitted_in_outage(envoys: &[String], key: &str, n: usize, limit: u64, local: u64) -> usize {
    let mut limited = 0;
    let admitted = (0..n)
        .filter(|i| {
            let r = chat_at(&envoys[i % envoys.len()], key);
            if reached_upstream(&r) {
                return true;
            }
            if r.status == 503 {
                assert_eq!(r.json().unwrap()["error"]["code"], "503", "{}", r.body);
            } else {
                assert_limited_by_either(&r, limit, local);
                limited += 1;
            }
            false
        })
        .count();
    assert!(limited > 0, "no 429 among {n} answers");
    admitted
}

#[test]
fn a_key_uses_its_limit_at_once_then_gets_429_with_openai_headers() {
    let stack = stack();
    let base = stack.envoy.url();
    let key = stack
        .generate_key(&json!({"rpm_limit": 3, "key_alias": "limited"}))
        .unwrap();
    let open = stack.generate_key(&json!({})).unwrap();
    assert_eq!(admitted_of(&base, &key, 10, "requests", 3), 3);
    // The 429 is cached at the filter until the window has room: still refused, and a key
    // without limits is untouched by its neighbour's.
    assert_rate_limited(&chat_at(&base, &key), "requests", 3);
    for _ in 0..10 {
        assert!(reached_upstream(&chat_at(&base, &open)));
    }
    let info = stack.admin_get(&format!("/key/info?key={key}")).unwrap();
    assert_eq!(info["info"]["rpm_limit"], 3, "{info}");
    assert!(
        stack
            .envoy
            .prometheus_counter("livegate_denied_rate_limited_total")
            .unwrap()
            >= 8.0
    );
    // Raising the limit reaches the filter like any key change: the key is let in again.
    stack
        .admin("/key/update", &json!({"key": key, "rpm_limit": 5}))
        .unwrap();
    poll::until("the raised limit at the filter", PATIENCE, || {
        reached_upstream(&chat_at(&base, &key)).then_some(())
    })
    .unwrap();
}

/// The control plane's allows so far.
fn allows(stack: &Stack) -> f64 {
    let url = stack.control_plane.as_ref().unwrap().metrics_url();
    let text = http::get(&url, &[]).unwrap().body;
    livegate_tests::envoy::prometheus_value(
        &text,
        "livegate_auth_decisions_total{outcome=\"allow\"}",
    )
    .unwrap_or(0.0)
}

/// Two requests held in flight by the upstream, a third refused with a parallel 429 while
/// they are, then a slot free again once their records have arrived.
fn parallel_round(stack: &Stack, key: &str) {
    let base = stack.envoy.url();
    // Every earlier request's end has reached the control plane (a slot frees when its
    // record arrives, a tick after the response).
    poll::until("the earlier requests' ends delivered", PATIENCE, || {
        let acknowledged = stack
            .envoy
            .prometheus_counter("livegate_spend_records_acknowledged_total")
            .ok()?;
        (acknowledged >= allows(stack)).then_some(())
    })
    .unwrap();
    let before = allows(stack);
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (base, key) = (base.clone(), key.to_string());
            std::thread::spawn(move || chat_held(&base, &key, 5_000))
        })
        .collect();
    poll::until("both held requests admitted", PATIENCE, || {
        (allows(stack) >= before + 2.0).then_some(())
    })
    .unwrap();
    let refused = chat_at(&base, key);
    assert_eq!(refused.status, 429, "{}", refused.body);
    let e = refused.json().unwrap()["error"].clone();
    assert_eq!(e["type"], "rate_limit_error", "{e}");
    assert_eq!(e["param"], "max_parallel_requests", "{e}");
    assert!(
        refused.header("retry-after").is_some(),
        "{:?}",
        refused.headers
    );
    assert!(refused.header("x-ratelimit-limit-requests").is_none());
    for request in held {
        assert!(reached_upstream(&request.join().unwrap()));
    }
    poll::until("a slot free once the ends are known", PATIENCE, || {
        reached_upstream(&chat_at(&base, key)).then_some(())
    })
    .unwrap();
}

#[test]
fn parallel_requests_beyond_the_limit_are_refused_until_one_ends_through_outages() {
    let stack = stack();
    let key = stack
        .generate_key(&json!({"max_parallel_requests": 2}))
        .unwrap();
    let info = stack.admin_get(&format!("/key/info?key={key}")).unwrap();
    assert_eq!(info["info"]["max_parallel_requests"], 2, "{info}");
    parallel_round(&stack, &key);
    // Postgres frozen: the control plane counts the starts and the ends in its memory.
    stack.postgres.as_ref().unwrap().pause().unwrap();
    parallel_round(&stack, &key);
    stack.postgres.as_ref().unwrap().resume().unwrap();

    // The control plane stopped: the worker holds max(1, ⌊0.25 · 2⌋) = 1 in flight.
    let base = stack.envoy.url();
    let stale = || {
        stack
            .envoy
            .prometheus_counter("livegate_stale_served_total")
            .unwrap()
    };
    let before = stale();
    let control_plane = stack.control_plane.as_ref().unwrap();
    control_plane.signal(Signal::SIGSTOP).unwrap();
    let held = {
        let (base, key) = (base.clone(), key.clone());
        std::thread::spawn(move || chat_held(&base, &key, 5_000))
    };
    poll::until("the held request admitted stale", PATIENCE, || {
        (stale() > before).then_some(())
    })
    .unwrap();
    let refused = chat_at(&base, &key);
    let admitted_after = reached_upstream(&held.join().unwrap());
    control_plane.signal(Signal::SIGCONT).unwrap();
    assert!(admitted_after);
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(
        refused.json().unwrap()["error"]["param"],
        "max_parallel_requests"
    );
    assert!(
        stack
            .envoy
            .prometheus_counter("livegate_rate_limited_local_total")
            .unwrap()
            >= 1.0
    );
}

#[test]
fn a_teams_limit_is_shared_by_its_keys() {
    let stack = stack();
    let base = stack.envoy.url();
    stack
        .admin("/team/new", &json!({"team_id": "small", "rpm_limit": 2}))
        .unwrap();
    let a = stack
        .generate_key(&json!({"team_id": "small", "rpm_limit": 10}))
        .unwrap();
    let b = stack.generate_key(&json!({"team_id": "small"})).unwrap();
    let admitted =
        admitted_of(&base, &a, 3, "requests", 2) + admitted_of(&base, &b, 3, "requests", 2);
    assert_eq!(admitted, 2);
    let r = chat_at(&base, &b);
    assert_rate_limited(&r, "requests", 2);
    let message = r.json().unwrap()["error"]["message"].clone();
    assert!(
        message.as_str().unwrap().contains("team_id: small"),
        "{message}"
    );
    let team = stack.admin_get("/team/info?team_id=small").unwrap();
    assert_eq!(team["team_info"]["rpm_limit"], 2, "{team}");
}

#[test]
fn a_token_limit_refuses_once_the_metered_tokens_reach_it() {
    let stack = stack();
    let base = stack.envoy.url();
    // The demo upstream counts a 4-character prompt as 4 tokens and answers 8: 12 a request.
    let key = stack.generate_key(&json!({"tpm_limit": 20})).unwrap();
    assert!(reached_upstream(&chat_at(&base, &key)));
    // Tokens are known after the response: charged when the filter's record arrives.
    let refused = poll::until("the tokens charged", PATIENCE, || {
        let r = chat_at(&base, &key);
        (!reached_upstream(&r)).then_some(r)
    })
    .unwrap();
    assert_rate_limited(&refused, "tokens", 20);
}

#[test]
fn the_limit_holds_with_postgres_frozen_and_with_the_control_plane_stopped() {
    let stack = stack();
    let base = stack.envoy.url();
    let key = stack.generate_key(&json!({"rpm_limit": 4})).unwrap();
    assert_eq!(admitted_of(&base, &key, 2, "requests", 4), 2);

    // Postgres frozen: the control plane decides from what it knows (one replica knows
    // everything): the rest of the limit. A check it answers later than the filter's
    // `auth_timeout_ms` is decided by the worker's share instead, max(1, ⌊0.25 · 4⌋) = 1
    // (the bound docs/operations.md states): at most 2 + 1, and never none.
    let postgres = stack.postgres.as_ref().unwrap();
    postgres.pause().unwrap();
    let admitted = admitted_of_any(&base, &key, 6, 4, 1);
    postgres.resume().unwrap();
    assert!((1..=3).contains(&admitted), "{admitted} admitted");
    // What it admitted meanwhile was written when the database came back: still full.
    assert_rate_limited(&chat_at(&base, &key), "requests", 4);

    // The control plane stopped: the filter's local share, max(1, ⌊0.25 · 8⌋) = 2 per
    // worker (the stack runs one), never unlimited and never none.
    let other = stack.generate_key(&json!({"rpm_limit": 8})).unwrap();
    assert_eq!(admitted_of(&base, &other, 1, "requests", 8), 1);
    let control_plane = stack.control_plane.as_ref().unwrap();
    control_plane.signal(Signal::SIGSTOP).unwrap();
    let admitted = admitted_of(&base, &other, 6, "requests", 2);
    control_plane.signal(Signal::SIGCONT).unwrap();
    assert_eq!(admitted, 2);
    assert!(
        stack
            .envoy
            .prometheus_counter("livegate_rate_limited_local_total")
            .unwrap()
            >= 4.0
    );
}

/// Two Envoys (two workers each) and two control planes: requests spread over every Envoy
/// and control plane are admitted exactly the limit; with Postgres frozen a fresh window
/// is admitted at most once per control plane.
#[test]
fn two_envoys_and_two_control_planes_admit_a_flooded_key_its_limit_and_no_more() {
    let fleet = Fleet::start(FleetOptions {
        filter_config: FILTER_CONFIG.to_string(),
        ..FleetOptions::new(2, 2)
    })
    .unwrap();
    let envoys: Vec<String> = fleet.envoys.iter().map(|e| e.url()).collect();
    let generate = |via: usize, body: Value| {
        fleet.admin_via(via, "/key/generate", &body).unwrap()["key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let key = generate(0, json!({"rpm_limit": 10}));
    // Ten times the limit, alternating Envoys (each balances over both control planes).
    let admitted: usize = (0..100)
        .map(|i| admitted_of(&envoys[i % 2], &key, 1, "requests", 10))
        .sum();
    assert_eq!(admitted, 10, "over-admission across the fleet");

    // Postgres frozen: each control plane knows only what it admitted.
    let fresh = generate(1, json!({"rpm_limit": 10}));
    fleet.postgres.pause().unwrap();
    let admitted = admitted_in_outage(&envoys, &fresh, 100, 10, 2);
    fleet.postgres.resume().unwrap();
    // At most the limit per control plane, plus each worker's share (2 × 2 workers ×
    // max(1, ⌊0.25 · 10⌋)) for checks answered later than the filter waits.
    assert!(
        admitted <= 2 * 10 + 4 * 2,
        "{admitted} admitted: at most the limit per control plane and the workers' shares"
    );

    // Both control planes stopped: each Envoy worker admits its local share.
    let stopped = poll::until("a key write with Postgres back", PATIENCE, || {
        let r = fleet.admin_via(0, "/key/generate", &json!({"rpm_limit": 8}));
        r.ok().map(|k| k["key"].as_str().unwrap().to_string())
    })
    .unwrap();
    // One admission through each Envoy, once both control planes have Postgres back (one
    // that has not yet reconnected answers 503 for a key it has not seen, admitting nothing).
    for base in &envoys {
        poll::until(&format!("the key admitted at {base}"), PATIENCE, || {
            reached_upstream(&chat_at(base, &stopped)).then_some(())
        })
        .unwrap();
    }
    fleet.signal_control_planes(Signal::SIGSTOP).unwrap();
    let admitted = admitted_in_outage(&envoys, &stopped, 40, 2, 2);
    fleet.signal_control_planes(Signal::SIGCONT).unwrap();
    // 2 Envoys × 2 workers × max(1, ⌊0.25 · 8⌋).
    assert!((1..=8).contains(&admitted), "{admitted} admitted");
}

/// A hot key: most of its admissions come from leases (the control planes' and the
/// filters' shares of them) with no round trip, and the fleet still admits its limit and
/// no more: every admission of the window is either served or held in a worker's share
/// (a share unused when it ends stays out of the window for its minute, as documented).
#[test]
fn a_hot_key_is_admitted_from_leases_and_still_exactly_its_limit_across_the_fleet() {
    let fleet = Fleet::start(FleetOptions {
        filter_config: FILTER_CONFIG.to_string(),
        ..FleetOptions::new(2, 2)
    })
    .unwrap();
    let envoys: Vec<String> = fleet.envoys.iter().map(|e| e.url()).collect();
    let key = fleet
        .admin_via(0, "/key/generate", &json!({"rpm_limit": 150}))
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let mut admitted: usize = (0..250)
        .map(|i| admitted_of(&envoys[(i / 10) % 2], &key, 1, "requests", 150))
        .sum();
    assert!(admitted <= 150, "{admitted} admitted: over-admission");
    let leased_at_filters = || -> usize {
        let used: f64 = fleet
            .envoys
            .iter()
            .map(|e| e.prometheus_counter("livegate_cache_leased_total").unwrap())
            .sum();
        used as usize
    };
    let control_planes = |name: &str| -> usize {
        let total: f64 = fleet
            .control_planes
            .iter()
            .flatten()
            .map(|cp| {
                let metrics = http::get(&cp.metrics_url(), &[]).unwrap().body;
                livegate_tests::envoy::prometheus_value(&metrics, name).unwrap_or(0.0)
            })
            .sum();
        total as usize
    };
    // What a control plane's lease did not serve comes back at its term's end: requests
    // go on until the window is wholly served or held in workers' shares.
    let mut sent = 0;
    let stranded = poll::until("the window served or held in shares", PATIENCE, || {
        let handed = control_planes("livegate_rate_limit_handed_admissions_total");
        let held = handed.checked_sub(leased_at_filters())?;
        if admitted + held == 150 {
            return Some(held);
        }
        admitted += admitted_of(&envoys[sent % 2], &key, 1, "requests", 150);
        sent += 1;
        None
    })
    .unwrap();
    assert!(admitted <= 150, "{admitted} admitted: over-admission");
    assert_eq!(
        admitted + stranded,
        150,
        "{admitted} admitted, {stranded} held in shares"
    );
    let after: usize = (0..20)
        .map(|i| admitted_of(&envoys[i % 2], &key, 1, "requests", 150))
        .sum();
    assert!(
        admitted + after <= 150,
        "{after} more admitted past {admitted}"
    );

    let leased_at_filters = leased_at_filters();
    let leased_at_control_planes = control_planes("livegate_rate_limit_leased_admissions_total");
    assert!(
        leased_at_filters > 0,
        "no admission served from a filter's share"
    );
    assert!(
        leased_at_filters + leased_at_control_planes >= 75,
        "{leased_at_filters} + {leased_at_control_planes} of 150 admissions from leases"
    );
}
