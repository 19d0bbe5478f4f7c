//! Budgets through the real Envoy, filter, control plane and Postgres: a key or a team whose
//! spend has reached its `max_budget` is refused with LiteLLM's 400 `budget_exceeded` and
//! its numbers, before anything reaches the upstream; priced traffic is admitted until the
//! drained spend crosses the budget, then refused at the gateway (the crossing is logged as
//! a key change, so the filter's cached allow goes); raising a team's budget lets its keys
//! in again; a `budget_duration` resets the spend; `/key/info` shows the budget fields and
//! the spend; at the spool's bound budgeted keys are refused (503 `spend_spool_full`), and
//! every key that asks with `--spend-spool-full refuse-all` (none with `admit`); a budget
//! crossed while Postgres is frozen is charged and enforced once it is back, and by the
//! control plane that spooled it while Postgres is still away; a crossed key is refused with
//! the control plane stopped, and at every Envoy of 2 Envoys × 2 control planes.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use std::time::Duration;

use livegate_tests::envoy::prometheus_value;
use livegate_tests::fleet::{Fleet, FleetOptions};
use livegate_tests::http::{self, Response};
use livegate_tests::poll;
use livegate_tests::process::Scratch;
use livegate_tests::stack::{Stack, StackOptions};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// Powers of two, so every sum is exact: a request with a 4-character prompt costs
/// 4 × 0.5 + 8 completion tokens × 0.25 = 4.
const PRICES: &str =
    r#"{"livegate-demo": {"input_cost_per_token": 0.5, "output_cost_per_token": 0.25}}"#;
const COST_PER_REQUEST: f64 = 4.0;
const PATIENCE: Duration = Duration::from_secs(60);

fn stack() -> (Stack, Scratch) {
    stack_with(&[])
}

fn stack_with(extra: &[&str]) -> (Stack, Scratch) {
    stack_configured(extra, "{}")
}

/// The prices file, in a directory that lives as long as the returned `Scratch`.
fn prices() -> (Scratch, String) {
    let dir = Scratch::new("livegate-budget-prices-").unwrap();
    let path = dir.path().join("prices.json");
    std::fs::write(&path, PRICES).unwrap();
    let path = path.display().to_string();
    (dir, path)
}

fn stack_configured(extra: &[&str], filter_config: &str) -> (Stack, Scratch) {
    let (dir, path) = prices();
    let mut options = StackOptions::full();
    options.filter_config = filter_config.to_string();
    options.control_plane_args = vec!["--prices-file".into(), path];
    options
        .control_plane_args
        .extend(extra.iter().map(|a| a.to_string()));
    (Stack::start(options).unwrap(), dir)
}

fn chat(stack: &Stack, key: &str) -> Response {
    chat_at(&stack.envoy.url(), key)
}

fn chat_at(base: &str, key: &str) -> Response {
    http::demo_chat(base, key, json!({})).unwrap()
}

fn key_info(stack: &Stack, key: &str) -> Value {
    let bearer = format!("Bearer {}", stack.master_key());
    let r = http::get(
        &stack.url(&format!("/key/info?key={key}")),
        &[("authorization", &bearer)],
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    r.json().unwrap()["info"].clone()
}

/// LiteLLM's refusal: 400, `budget_exceeded`, the message as given; and it is the filter's
/// reply, not the upstream's (the demo upstream answers chat completions with 200).
fn assert_over_budget(r: &Response, message: &str) {
    assert_eq!(r.status, 400, "{}", r.body);
    let e = &r.json().unwrap()["error"];
    assert_eq!(e["type"], "budget_exceeded", "{}", r.body);
    assert_eq!(e["code"], "400", "{}", r.body);
    assert_eq!(e["message"], message, "{}", r.body);
    assert!(r.json().unwrap().get("choices").is_none(), "{}", r.body);
}

/// The spend a key's refusal states, its message checked against LiteLLM's.
fn spend_in_refusal(r: &Response, max_budget: &str) -> f64 {
    let message = r.json().unwrap()["error"]["message"].clone();
    let spend: f64 = message
        .as_str()
        .and_then(|m| m.strip_prefix("ExceededTokenBudget: Current spend for token: "))
        .and_then(|m| m.strip_suffix(&format!("; Max Budget for Token: {max_budget}")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("LiteLLM's message with the numbers: {message}"));
    assert_over_budget(r, message.as_str().unwrap());
    spend
}

#[test]
fn a_key_with_a_budget_of_zero_is_refused_and_nothing_reaches_the_upstream() {
    let (stack, _dir) = stack();
    let key = stack.generate_key(&json!({"max_budget": 0})).unwrap();
    assert_over_budget(
        &chat(&stack, &key),
        "ExceededTokenBudget: Current spend for token: 0; Max Budget for Token: 0",
    );
    // A refused request is never metered: nothing went upstream, so no spend row exists.
    let bearer = format!("Bearer {}", stack.master_key());
    let rows = http::get(
        &stack.url(&format!("/spend/logs?api_key={key}")),
        &[("authorization", &bearer)],
    )
    .unwrap();
    assert_eq!(rows.status, 200, "{}", rows.body);
    assert_eq!(rows.json().unwrap(), json!([]));
    // A key over budget still reads its own info.
    let own = http::get(
        &stack.url("/key/info"),
        &[("authorization", &format!("Bearer {key}"))],
    )
    .unwrap();
    assert_eq!(own.status, 200, "{}", own.body);
    assert_eq!(own.json().unwrap()["info"]["max_budget"], 0.0);
}

#[test]
fn priced_traffic_is_admitted_until_the_spend_crosses_the_budget_then_refused() {
    let (stack, _dir) = stack();
    let key = stack
        .generate_key(&json!({"max_budget": 10, "soft_budget": 6}))
        .unwrap();
    let info = key_info(&stack, &key);
    assert_eq!(info["max_budget"], 10.0);
    assert_eq!(info["soft_budget"], 6.0);
    assert_eq!(info["soft_budget_cooldown"], false);
    assert_eq!(info["budget_reset_at"], Value::Null);

    // Spend 0, 4 and 8 are under 10: three requests must get through.
    for _ in 0..3 {
        let r = chat(&stack, &key);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Then requests go on until one is refused; each admitted one adds 4 once drained.
    let mut admitted = 3;
    let refused = poll::until("a budget refusal", PATIENCE, || {
        let r = chat(&stack, &key);
        if r.status == 200 {
            admitted += 1;
            return None;
        }
        Some(r)
    })
    .unwrap();
    assert!(spend_in_refusal(&refused, "10") >= 10.0);
    // Every admitted request is charged, once: the over-spend is what was admitted past
    // the crossing, and all of it is accounted for.
    let expected = f64::from(admitted) * COST_PER_REQUEST;
    let info = poll::until("every admitted request charged", PATIENCE, || {
        let info = key_info(&stack, &key);
        (info["spend"].as_f64() == Some(expected)).then_some(info)
    })
    .unwrap();
    assert_eq!(info["soft_budget_cooldown"], true, "{info}");
    // And it stays refused.
    assert_eq!(chat(&stack, &key).status, 400);
    // Also with the control plane stopped: the crossing was a change of the key, so the
    // filter holds no allow of it to serve stale (and never caches a budget refusal).
    let control_plane = stack.control_plane.as_ref().unwrap();
    control_plane.signal(Signal::SIGSTOP).unwrap();
    let r = chat(&stack, &key);
    control_plane.signal(Signal::SIGCONT).unwrap();
    assert_eq!(r.status, 503, "never admitted: {}", r.body);
}

#[test]
fn a_team_budget_refuses_its_keys_until_it_is_raised() {
    let (stack, _dir) = stack();
    stack
        .admin(
            "/team/new",
            &json!({"team_id": "frugal", "max_budget": 0, "soft_budget": 0}),
        )
        .unwrap();
    let key = stack
        .generate_key(&json!({"team_id": "frugal", "max_budget": 100}))
        .unwrap();
    assert_over_budget(
        &chat(&stack, &key),
        "Budget has been exceeded! Team=frugal Current cost: 0, Max budget: 0",
    );
    let bearer = format!("Bearer {}", stack.master_key());
    let team = http::get(
        &stack.url("/team/info?team_id=frugal"),
        &[("authorization", &bearer)],
    )
    .unwrap()
    .json()
    .unwrap();
    assert_eq!(team["team_info"]["max_budget"], 0.0, "{team}");
    assert_eq!(team["team_info"]["soft_budget"], 0.0, "{team}");
    assert_eq!(
        team["team_info"]["soft_budget_cooldown"], true,
        "a spend of 0 has reached a soft budget of 0: {team}"
    );
    assert_eq!(team["team_info"]["spend"], 0.0, "{team}");

    // Raising the team's budget is logged as a change of each of its keys.
    stack
        .admin(
            "/team/update",
            &json!({"team_id": "frugal", "max_budget": 1000}),
        )
        .unwrap();
    poll::until("the key admitted again", PATIENCE, || {
        (chat(&stack, &key).status == 200).then_some(())
    })
    .unwrap();
}

#[test]
fn a_budget_duration_resets_the_spend_and_lets_the_key_in_again() {
    let (stack, _dir) = stack();
    let key = stack
        .generate_key(&json!({"max_budget": 4, "budget_duration": "5s"}))
        .unwrap();
    let info = key_info(&stack, &key);
    assert_eq!(info["budget_duration"], "5s");
    let first_reset = info["budget_reset_at"].as_str().unwrap().to_string();
    // One request spends the whole budget; once drained, the key is refused...
    poll::until("a budget refusal", PATIENCE, || {
        (chat(&stack, &key).status == 400).then_some(())
    })
    .unwrap();
    // ...until its budget resets, which the filter learns like any key change.
    poll::until("the key admitted after the reset", PATIENCE, || {
        (chat(&stack, &key).status == 200).then_some(())
    })
    .unwrap();
    let info = key_info(&stack, &key);
    let next_reset = info["budget_reset_at"].as_str().unwrap();
    assert!(next_reset > first_reset.as_str(), "{info}");
}

#[test]
fn budget_fields_are_validated_by_name() {
    let (stack, _dir) = stack();
    let bearer = format!("Bearer {}", stack.master_key());
    for (path, body, param) in [
        ("/key/generate", json!({"max_budget": -1}), "max_budget"),
        (
            "/key/generate",
            json!({"soft_budget": "a lot"}),
            "soft_budget",
        ),
        ("/team/new", json!({"max_budget": -0.5}), "max_budget"),
        (
            "/key/generate",
            json!({"budget_duration": "1w"}),
            "budget_duration",
        ),
        (
            "/team/new",
            json!({"budget_duration": "0s"}),
            "budget_duration",
        ),
    ] {
        let r = http::post_json(&stack.url(path), &[("authorization", &bearer)], &body).unwrap();
        assert_eq!(r.status, 400, "{path} {body}: {}", r.body);
        assert_eq!(r.json().unwrap()["error"]["param"], param, "{}", r.body);
    }
}

/// A stack whose spool holds one record, with `--spend-spool-full` set to `policy`. The
/// filter sends one record a batch: a batch larger than the bound would never fit.
fn one_record_spool(policy: &str) -> (Stack, Scratch) {
    stack_configured(
        &[
            "--spend-spool-max-records",
            "1",
            "--spend-spool-full",
            policy,
        ],
        r#"{"metering": {"batch_records": 1}}"#,
    )
}

/// Freezes Postgres and fills the spool with `key`'s answers: one record fits, nothing
/// drains, so the second batch is refused at the bound.
fn freeze_and_fill_the_spool(stack: &Stack, key: &str) {
    let cp_metrics = stack.control_plane.as_ref().unwrap().metrics_url();
    let refused_batches = || {
        let text = http::get(&cp_metrics, &[]).ok()?.body;
        prometheus_value(&text, "livegate_spend_spool_full_total")
    };
    stack.postgres.as_ref().unwrap().pause().unwrap();
    assert_eq!(chat(stack, key).status, 200);
    assert_eq!(chat(stack, key).status, 200);
    poll::until("a spend batch refused at the bound", PATIENCE, || {
        (refused_batches()? > 0.0).then_some(())
    })
    .unwrap();
}

fn assert_spool_full(r: &Response) {
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json().unwrap()["error"]["type"], "spend_spool_full");
    assert!(r.header("retry-after").is_some(), "{r:?}");
}

#[test]
fn at_the_spool_bound_keys_with_a_budget_are_refused_and_others_admitted() {
    let (stack, _dir) = one_record_spool("refuse-budgeted");
    let plain = stack.generate_key(&json!({})).unwrap();
    let budgeted = stack.generate_key(&json!({"max_budget": 1000})).unwrap();
    let other = stack.generate_key(&json!({})).unwrap();
    freeze_and_fill_the_spool(&stack, &plain);
    // The budgeted key asks now (it was never cached by the filter): refused, fail-closed.
    assert_spool_full(&chat(&stack, &budgeted));
    // A key without a budget is admitted (from the control plane's cached record).
    let r = chat(&stack, &other);
    assert_eq!(r.status, 200, "{}", r.body);
    // Postgres back: the drain frees room and the budgeted key is admitted again.
    stack.postgres.as_ref().unwrap().resume().unwrap();
    poll::until(
        "the budgeted key admitted after the drain",
        PATIENCE,
        || (chat(&stack, &budgeted).status == 200).then_some(()),
    )
    .unwrap();
}

#[test]
fn at_the_spool_bound_refuse_all_refuses_every_key_that_asks() {
    // What operations.md offers an operator who would rather refuse than serve unbilled.
    let (stack, _dir) = one_record_spool("refuse-all");
    let plain = stack.generate_key(&json!({})).unwrap();
    let other = stack.generate_key(&json!({})).unwrap();
    freeze_and_fill_the_spool(&stack, &plain);
    let upstream_before = stack.envoy.cluster_requests("livegate_upstream").unwrap();
    assert!(upstream_before >= 2.0, "the filling answers went upstream");
    // A key without a budget, never cached by the filter, asks now: refused all the same,
    // and nothing reaches the upstream unbilled.
    assert_spool_full(&chat(&stack, &other));
    assert_eq!(
        stack.envoy.cluster_requests("livegate_upstream").unwrap(),
        upstream_before
    );
    // Postgres back: the drain frees room and the key is admitted again.
    stack.postgres.as_ref().unwrap().resume().unwrap();
    poll::until("the key admitted after the drain", PATIENCE, || {
        (chat(&stack, &other).status == 200).then_some(())
    })
    .unwrap();
}

#[test]
fn at_the_spool_bound_admit_refuses_no_key() {
    let (stack, _dir) = one_record_spool("admit");
    let plain = stack.generate_key(&json!({})).unwrap();
    let budgeted = stack.generate_key(&json!({"max_budget": 1000})).unwrap();
    freeze_and_fill_the_spool(&stack, &plain);
    // Even a key with a budget, never cached by the filter: admitted, though its spend
    // cannot be counted until the drain frees room.
    let r = chat(&stack, &budgeted);
    assert_eq!(r.status, 200, "{}", r.body);
    stack.postgres.as_ref().unwrap().resume().unwrap();
}

#[test]
fn a_budget_crossed_while_postgres_is_frozen_is_charged_and_enforced_after() {
    // As docs/operations.md says: with Postgres away the drain stops, so the spend it knows
    // does not grow and the key is admitted from the caches; its cost waits in the spool.
    let (stack, _dir) = stack();
    let key = stack.generate_key(&json!({"max_budget": 8})).unwrap();
    stack.postgres.as_ref().unwrap().pause().unwrap();
    for _ in 0..3 {
        let r = chat(&stack, &key);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    stack.postgres.as_ref().unwrap().resume().unwrap();
    // Every request is charged once the drain runs again, and the crossing it sees is
    // logged, so the key is refused from then on.
    let info = poll::until("the spooled spend charged", PATIENCE, || {
        let info = key_info(&stack, &key);
        (info["spend"].as_f64() == Some(3.0 * COST_PER_REQUEST)).then_some(info)
    })
    .unwrap();
    assert_eq!(info["max_budget"], 8.0);
    let refused = poll::until("a budget refusal", PATIENCE, || {
        let r = chat(&stack, &key);
        (r.status == 400).then_some(r)
    })
    .unwrap();
    // 12, or more if a request was admitted from a cached allow before the change the
    // crossing logged reached the filter (the bound docs/operations.md states).
    assert!(spend_in_refusal(&refused, "8") >= 12.0);
}

#[test]
fn a_budget_crossed_while_postgres_is_frozen_is_enforced_from_the_spooled_spend() {
    // The filter asks on every request (no cached allow): the control plane decides each
    // one on the drained spend plus what it holds spooled, Postgres or not.
    let (stack, _dir) = stack_configured(&[], r#"{"cache": {"allow_ttl_ms": 0}}"#);
    let key = stack.generate_key(&json!({"max_budget": 8})).unwrap();
    stack.postgres.as_ref().unwrap().pause().unwrap();
    for _ in 0..2 {
        let r = chat(&stack, &key);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Once their records are spooled (8 of 8 spent), refused with Postgres still frozen.
    let refused = poll::until("a refusal from the spooled spend", PATIENCE, || {
        let r = chat(&stack, &key);
        (r.status == 400).then_some(r)
    })
    .unwrap();
    assert!(spend_in_refusal(&refused, "8") >= 8.0);
    stack.postgres.as_ref().unwrap().resume().unwrap();
    // Drained, the spend Postgres holds refuses it as well.
    let info = poll::until("the spooled spend charged", PATIENCE, || {
        let info = key_info(&stack, &key);
        (info["spend"].as_f64() >= Some(8.0)).then_some(info)
    })
    .unwrap();
    assert_eq!(info["max_budget"], 8.0);
    assert_eq!(chat(&stack, &key).status, 400);
}

/// Two Envoys (two workers each) and two control planes over one Postgres: traffic through
/// both Envoys crosses a key's budget, and whichever control plane drains the crossing logs
/// it as a change of the key, so every worker of every Envoy refuses it.
#[test]
fn a_budget_crossed_on_two_envoys_and_two_control_planes_is_refused_everywhere() {
    let (_dir, path) = prices();
    let fleet = Fleet::start(FleetOptions {
        control_plane_args: vec!["--prices-file".into(), path],
        ..FleetOptions::new(2, 2)
    })
    .unwrap();
    let created = fleet
        .admin_via(1, "/key/generate", &json!({"max_budget": 10}))
        .unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    let envoys: Vec<String> = fleet.envoys.iter().map(|e| e.url()).collect();
    for (i, base) in envoys.iter().enumerate() {
        // Requests through this Envoy (and, for the second, after the first crossed it):
        // refusals in a row, so both workers learned it.
        let refused = poll::until(&format!("the crossing at Envoy {i}"), PATIENCE, || {
            let answers: Vec<Response> = (0..poll::EVERY_WORKER_IN_A_ROW)
                .map(|_| chat_at(base, &key))
                .collect();
            answers
                .iter()
                .all(|r| r.status == 400)
                .then(|| answers.into_iter().next())
                .flatten()
        })
        .unwrap();
        assert!(spend_in_refusal(&refused, "10") >= 10.0);
    }
}

/// The attack of issue 24 (item 9): many parallel requests against a nearly spent budget,
/// each admitted before any answer's cost is known (without reservations all 8 pass). With
/// a reservation of 3 per request in flight and a budget of 9, at most 3 are in flight at
/// once; an answer costs 4, so its record adds more than it frees and nothing is admitted
/// after them: of 8 parallel requests at most 3 pass, the others are refused. No stale
/// allow may stand in for a slow check (the filter's stale-if-error is off here): the
/// bound is the control plane's.
#[test]
fn parallel_requests_against_a_nearly_spent_budget_are_refused_beyond_the_reservations() {
    let (stack, _dir) = stack_configured(
        &["--budget-reservation-usd", "3"],
        r#"{"auth_timeout_ms": 5000, "cache": {"stale_if_error_ms": 0}}"#,
    );
    let key = stack.generate_key(&json!({"max_budget": 9})).unwrap();
    let answers: Vec<Response> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..8).map(|_| s.spawn(|| chat(&stack, &key))).collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert!((1..=3).contains(&admitted), "{statuses:?}");
    let over: Vec<&Response> = answers.iter().filter(|r| r.status == 400).collect();
    assert!(over.len() >= 8 - 3 - statuses.iter().filter(|s| **s == 503).count());
    assert!(!over.is_empty(), "{statuses:?}");
    for r in over {
        assert_eq!(
            r.json().unwrap()["error"]["type"],
            "budget_exceeded",
            "{}",
            r.body
        );
    }
    // Charged exactly what was admitted.
    let charged = admitted as f64 * COST_PER_REQUEST;
    poll::until("the admitted answers charged", PATIENCE, || {
        (key_info(&stack, &key)["spend"].as_f64()? == charged).then_some(())
    })
    .unwrap();
    if admitted == 3 {
        poll::until("refused once drained", PATIENCE, || {
            (chat(&stack, &key).status == 400).then_some(())
        })
        .unwrap();
    }
}
