//! Per-model limits (`model_rpm_limit`, `model_tpm_limit`) through the real Envoy, filter,
//! control planes and Postgres: a key's (or its team's) limit for one model refuses that
//! model alone, with the 429, headers and LiteLLM's wording naming the model, however the
//! request spells the model (an alias, case and whitespace, an Azure path, percent
//! escapes); it holds with Postgres frozen and with the control plane stopped; and two
//! Envoys and two control planes admit a flooded key×model its limit and no more.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use std::time::Duration;

use livegate_tests::fleet::{Fleet, FleetOptions};
use livegate_tests::http::{self, Response};
use livegate_tests::poll;
use livegate_tests::process::Scratch;
use livegate_tests::stack::{Stack, StackOptions};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(60);

/// The filter's local share while no control plane answers: a quarter of a limit per
/// worker.
const FILTER_CONFIG: &str = r#"{"rate_limits": {"outage_share": 0.25}}"#;

fn stack() -> Stack {
    let mut options = StackOptions::full();
    options.filter_config = FILTER_CONFIG.to_string();
    Stack::start(options).unwrap()
}

/// A chat completion naming `model` in its body.
fn chat(base: &str, key: &str, model: &str) -> Response {
    http::demo_chat(base, key, json!({"model": model})).unwrap()
}

/// A POST of `body` to `path` as written (no client-side normalisation of the path).
fn post(base: &str, path: &str, key: &str, body: &str) -> Response {
    let bearer = format!("Bearer {key}");
    let headers = [("authorization", bearer.as_str())];
    http::post_raw(&format!("{base}{path}"), &headers, "application/json", body).unwrap()
}

/// The upstream answered (the demo upstream answers every route it is sent).
fn reached_upstream(r: &Response) -> bool {
    r.status == 200
        && r.json()
            .is_ok_and(|b| b.get("choices").is_some() || b.get("livegate").is_some())
}

/// The gateway's 429 for a per-model limit of `kind` (`requests` or `tokens`) naming
/// `model`.
fn assert_model_limited(r: &Response, kind: &str, model: &str, limit: u64) {
    let field = if kind == "requests" {
        "model_rpm_limit"
    } else {
        "model_tpm_limit"
    };
    match livegate_tests::refusal::rate_limited(r, kind, field, limit) {
        Ok(limited) => assert!(limited.message.contains(model), "{}", limited.message),
        Err(wrong) => panic!("{wrong}"),
    }
}

/// Sends `n` chat requests for `model` one after the other through `envoys` in turn; how
/// many reached the upstream. Every other answer must be a 429 for the model (stating the
/// limit or, for a check the filter stopped waiting for, the worker's share `local`), or,
/// with `outage`, a 503 (a worker with no allow to serve).
fn admitted(envoys: &[String], key: &str, model: &str, n: usize, limit: u64, local: u64) -> usize {
    (0..n)
        .filter(|i| {
            let r = chat(&envoys[i % envoys.len()], key, model);
            if reached_upstream(&r) {
                return true;
            }
            if r.status == 503 {
                assert_eq!(r.json().unwrap()["error"]["code"], "503", "{}", r.body);
                return false;
            }
            let stated = r.header("x-ratelimit-limit-requests").unwrap_or_default();
            let stated = if stated == local.to_string() {
                local
            } else {
                limit
            };
            assert_model_limited(&r, "requests", model, stated);
            false
        })
        .count()
}

#[test]
fn a_keys_model_limit_refuses_that_model_however_it_is_spelled_and_no_other() {
    let stack = stack();
    let base = stack.envoy.url();
    let key = stack
        .generate_key(&json!({"model_rpm_limit": {"gpt-4o": 2}, "aliases": {"fast": "gpt-4o"}}))
        .unwrap();
    let one = [base.clone()];
    assert_eq!(admitted(&one, &key, "gpt-4o", 2, 2, 2), 2);
    assert_model_limited(&chat(&base, &key, "gpt-4o"), "requests", "gpt-4o", 2);
    // The attacks: every other spelling of the same model meets the same window.
    for model in ["fast", "GPT-4o", " gpt-4o ", "Gpt-4O\t"] {
        let r = chat(&base, &key, model);
        assert_model_limited(&r, "requests", "gpt-4o", 2);
    }
    let escaped = r#"{"model": "gpt\u002d4o", "messages": [{"role": "user", "content": "hi"}]}"#;
    let r = post(&base, "/v1/chat/completions", &key, escaped);
    assert_model_limited(&r, "requests", "gpt-4o", 2);
    for path in [
        "/openai/deployments/gpt-4o/chat/completions?api-version=2024-06-01",
        "/openai/deployments/GPT-4o/chat/completions?api-version=2024-06-01",
        "/openai/deployments/fast/chat/completions?api-version=2024-06-01",
        "/openai/deployments/gpt%2D4o/chat/completions?api-version=2024-06-01",
    ] {
        let r = post(&base, path, &key, "{}");
        assert!(!reached_upstream(&r), "{path} escaped: {}", r.body);
        assert_model_limited(&r, "requests", "gpt-4o", 2);
    }
    // A body that names no model is refused as before, never counted nor forwarded.
    let r = post(&base, "/v1/chat/completions", &key, r#"{"messages": []}"#);
    assert_eq!(r.status, 400, "{}", r.body);
    // Another model, and a route without a model, are untouched by the model's limit.
    for _ in 0..5 {
        assert!(reached_upstream(&chat(&base, &key, "livegate-demo")));
    }
    let bearer = format!("Bearer {key}");
    let models = http::get(&format!("{base}/v1/models"), &[("authorization", &bearer)]).unwrap();
    assert_eq!(models.status, 200, "{}", models.body);

    let info = stack.admin_get(&format!("/key/info?key={key}")).unwrap();
    assert_eq!(
        info["info"]["model_rpm_limit"],
        json!({"gpt-4o": 2}),
        "{info}"
    );
    let list = stack
        .admin_get("/key/list?return_full_object=true")
        .unwrap();
    assert_eq!(
        list["keys"][0]["model_rpm_limit"],
        json!({"gpt-4o": 2}),
        "{list}"
    );
    // Raising the limit reaches the filter like any key change.
    stack
        .admin(
            "/key/update",
            &json!({"key": key, "model_rpm_limit": {"gpt-4o": 50}}),
        )
        .unwrap();
    poll::until("the raised model limit", PATIENCE, || {
        reached_upstream(&chat(&base, &key, "gpt-4o")).then_some(())
    })
    .unwrap();
}

#[test]
fn a_teams_model_limit_is_shared_by_its_keys_and_names_the_team() {
    let stack = stack();
    let base = stack.envoy.url();
    stack
        .admin(
            "/team/new",
            &json!({"team_id": "small", "model_rpm_limit": {"gpt-4o": 2}}),
        )
        .unwrap();
    let a = stack.generate_key(&json!({"team_id": "small"})).unwrap();
    let b = stack.generate_key(&json!({"team_id": "small"})).unwrap();
    let one = [base.clone()];
    let both = admitted(&one, &a, "gpt-4o", 3, 2, 2) + admitted(&one, &b, "gpt-4o", 3, 2, 2);
    assert_eq!(both, 2);
    let r = chat(&base, &b, "gpt-4o");
    assert_model_limited(&r, "requests", "gpt-4o", 2);
    let message = r.json().unwrap()["error"]["message"].clone();
    assert!(
        message
            .as_str()
            .unwrap()
            .contains("model_per_team: small:gpt-4o"),
        "{message}"
    );
    assert!(reached_upstream(&chat(&base, &a, "livegate-demo")));
    let team = stack.admin_get("/team/info?team_id=small").unwrap();
    assert_eq!(
        team["team_info"]["model_rpm_limit"],
        json!({"gpt-4o": 2}),
        "{team}"
    );
}

#[test]
fn a_model_token_limit_refuses_once_that_models_metered_tokens_reach_it() {
    let stack = stack();
    let base = stack.envoy.url();
    // The demo upstream counts a 4-character prompt as 4 tokens and answers 8: 12 a request.
    let key = stack
        .generate_key(&json!({"model_tpm_limit": {"gpt-4o": 20}}))
        .unwrap();
    assert!(reached_upstream(&chat(&base, &key, "gpt-4o")));
    let refused = poll::until("the model's tokens charged", PATIENCE, || {
        let r = chat(&base, &key, "gpt-4o");
        (!reached_upstream(&r)).then_some(r)
    })
    .unwrap();
    assert_model_limited(&refused, "tokens", "gpt-4o", 20);
    // The key's other models have no token limit.
    for _ in 0..3 {
        assert!(reached_upstream(&chat(&base, &key, "livegate-demo")));
    }
}

#[test]
fn the_model_limit_holds_with_postgres_frozen_and_with_the_control_plane_stopped() {
    let stack = stack();
    let base = stack.envoy.url();
    let one = [base.clone()];
    let key = stack
        .generate_key(&json!({"model_rpm_limit": {"gpt-4o": 4}}))
        .unwrap();
    assert_eq!(admitted(&one, &key, "gpt-4o", 2, 4, 1), 2);

    // Postgres frozen: the control plane decides from what it knows (the rest of the
    // limit); a model check it answers later than the filter waits is decided by the
    // worker's share, max(1, ⌊0.25 · 4⌋) = 1: at most 2 + 1 in all, never none.
    let postgres = stack.postgres.as_ref().unwrap();
    postgres.pause().unwrap();
    let during = admitted(&one, &key, "gpt-4o", 6, 4, 1);
    postgres.resume().unwrap();
    assert!((1..=3).contains(&during), "{during} admitted");
    assert_model_limited(&chat(&base, &key, "gpt-4o"), "requests", "gpt-4o", 4);

    // The control plane stopped: the worker's share of the key×model, max(1, ⌊0.25 · 8⌋)
    // = 2 (the stack runs one worker), never unlimited and never none.
    let other = stack
        .generate_key(&json!({"model_rpm_limit": {"gpt-4o": 8}}))
        .unwrap();
    assert_eq!(admitted(&one, &other, "gpt-4o", 1, 8, 2), 1);
    let control_plane = stack.control_plane.as_ref().unwrap();
    control_plane.signal(Signal::SIGSTOP).unwrap();
    let stopped = admitted(&one, &other, "gpt-4o", 6, 8, 2);
    // Another model of the same key is served from its stale allow, unlimited.
    let free = (0..4)
        .filter(|_| reached_upstream(&chat(&base, &other, "livegate-demo")))
        .count();
    control_plane.signal(Signal::SIGCONT).unwrap();
    assert_eq!(stopped, 2);
    assert_eq!(free, 4);
}

/// Two Envoys (two workers each) and two control planes: a key×model flooded over every
/// Envoy and control plane is admitted exactly its limit; with Postgres frozen, at most
/// the limit per control plane and the workers' shares.
#[test]
fn two_envoys_and_two_control_planes_admit_a_flooded_model_its_limit_and_no_more() {
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
    let key = generate(0, json!({"model_rpm_limit": {"gpt-4o": 10}}));
    let flooded = admitted(&envoys, &key, "gpt-4o", 100, 10, 2);
    assert_eq!(flooded, 10, "over-admission across the fleet");

    let fresh = generate(1, json!({"model_rpm_limit": {"gpt-4o": 10}}));
    // Each Envoy has seen the key once (its allow), so an outage has an allow to serve.
    for base in &envoys {
        assert!(reached_upstream(&chat(base, &fresh, "livegate-demo")));
    }
    fleet.postgres.pause().unwrap();
    let frozen = admitted(&envoys, &fresh, "gpt-4o", 100, 10, 2);
    fleet.postgres.resume().unwrap();
    // At most the limit per control plane, plus each worker's share (2 Envoys × 2 workers
    // × max(1, ⌊0.25 · 10⌋)) for checks answered later than the filter waits.
    assert!(
        (1..=2 * 10 + 4 * 2).contains(&frozen),
        "{frozen} admitted: at most the limit per control plane and the workers' shares"
    );
}

/// LiteLLM's refusal of a key's budget for a model.
fn assert_model_over_budget(r: &Response, key: &str, model: &str) {
    assert_eq!(r.status, 400, "{}", r.body);
    let body = r.json().unwrap();
    let e = &body["error"];
    assert_eq!(e["type"], "budget_exceeded", "{}", r.body);
    assert_eq!(e["code"], "400", "{}", r.body);
    assert_eq!(e["param"], "model_max_budget", "{}", r.body);
    let hash = livegate_contract::KeyHash::of_raw(key);
    let expected = format!(
        "LiteLLM Virtual Key: {}, key_alias: None, exceeded budget for model={model}",
        hash.as_str()
    );
    assert_eq!(e["message"], expected, "{}", r.body);
}

/// The model the prices file prices: powers of two, so every sum is exact (a request with
/// a 4-character prompt costs 4 × 0.5 + 8 completion tokens × 0.25 = 4).
const DEMO_MODEL: &str = "livegate-demo";
const PRICES: &str =
    r#"{"livegate-demo": {"input_cost_per_token": 0.5, "output_cost_per_token": 0.25}}"#;

/// A stack whose control plane prices the demo's model (the prices file lives as long as
/// the returned `Scratch`).
fn priced_stack() -> (Stack, Scratch) {
    priced_stack_with(&[], FILTER_CONFIG)
}

/// [`priced_stack`] with more control-plane flags and this filter configuration.
fn priced_stack_with(extra: &[&str], filter_config: &str) -> (Stack, Scratch) {
    let dir = Scratch::new("livegate-model-budget-prices-").unwrap();
    let path = dir.path().join("prices.json");
    std::fs::write(&path, PRICES).unwrap();
    let mut options = StackOptions::full();
    options.filter_config = filter_config.to_string();
    options.control_plane_args = vec!["--prices-file".into(), path.display().to_string()];
    options
        .control_plane_args
        .extend(extra.iter().map(|a| a.to_string()));
    (Stack::start(options).unwrap(), dir)
}

#[test]
fn a_keys_model_budget_is_crossed_for_that_model_alone_and_resets_with_its_period() {
    let (stack, _prices) = priced_stack();
    let base = stack.envoy.url();
    // Two answers (8) pass it: LiteLLM refuses once the spend is past the budget.
    let budget = json!({DEMO_MODEL: {"budget_limit": 6.0, "time_period": "1d"}});
    let key = stack
        .generate_key(&json!({"model_max_budget": budget}))
        .unwrap();
    let info = stack.admin_get(&format!("/key/info?key={key}")).unwrap();
    assert_eq!(info["info"]["model_max_budget"], budget, "{info}");
    // Spend is known once the answers' records reach a control plane: each request is
    // admitted until then, and refused once the key's spend for the model passes it.
    let mut admitted = 0;
    let refused = poll::until("the model's budget crossed", PATIENCE, || {
        let r = chat(&base, &key, DEMO_MODEL);
        if reached_upstream(&r) {
            admitted += 1;
            return None;
        }
        Some(r)
    })
    .unwrap();
    assert!(admitted >= 2, "refused before the spend passed the budget");
    assert_model_over_budget(&refused, &key, DEMO_MODEL);
    // Every spelling of the model is the same budget; another model is not.
    assert_model_over_budget(&chat(&base, &key, " LIVEGATE-demo"), &key, DEMO_MODEL);
    assert!(reached_upstream(&chat(&base, &key, "gpt-4o")));
    assert_model_over_budget(&chat(&base, &key, DEMO_MODEL), &key, DEMO_MODEL);

    // A period of 3 s: crossed, then let in again when the next period starts.
    let short = json!({DEMO_MODEL: {"budget_limit": 6.0, "time_period": "3s"}});
    let renewed = stack
        .generate_key(&json!({"model_max_budget": short}))
        .unwrap();
    poll::until("the short budget crossed", PATIENCE, || {
        let r = chat(&base, &renewed, DEMO_MODEL);
        (r.status == 400).then_some(())
    })
    .unwrap();
    assert_model_over_budget(&chat(&base, &renewed, DEMO_MODEL), &renewed, DEMO_MODEL);
    poll::until("the budget's next period", PATIENCE, || {
        reached_upstream(&chat(&base, &renewed, DEMO_MODEL)).then_some(())
    })
    .unwrap();
}

/// The attack: parallel requests for a model against a nearly spent model budget, each
/// admitted before any answer's cost is known. With a reservation of 3 per request in
/// flight and a budget of 9 (LiteLLM refuses past it: 9 is still within), at most 4 are in
/// flight at once; an answer costs 4, so nothing is admitted after them. No stale allow
/// stands in for a slow check: the bound is the control plane's.
#[test]
fn parallel_requests_against_a_model_budget_are_refused_beyond_the_reservations() {
    let dir = Scratch::new("livegate-model-budget-prices-").unwrap();
    let path = dir.path().join("prices.json");
    std::fs::write(&path, PRICES).unwrap();
    let mut options = StackOptions::full();
    options.filter_config =
        r#"{"auth_timeout_ms": 5000, "cache": {"stale_if_error_ms": 0}}"#.to_string();
    options.control_plane_args = vec![
        "--prices-file".into(),
        path.display().to_string(),
        "--budget-reservation-usd".into(),
        "3".into(),
    ];
    let stack = Stack::start(options).unwrap();
    let base = stack.envoy.url();
    let budget = json!({DEMO_MODEL: {"budget_limit": 9.0, "time_period": "1d"}});
    let key = stack
        .generate_key(&json!({"model_max_budget": budget}))
        .unwrap();
    let answers: Vec<Response> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..10)
            .map(|_| {
                s.spawn(|| {
                    let extra = json!({"model": DEMO_MODEL, "livegate_delay_ms": 500});
                    http::demo_chat(&base, &key, extra).unwrap()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    let admitted = answers.iter().filter(|r| reached_upstream(r)).count();
    assert!((1..=4).contains(&admitted), "{statuses:?}");
    let over: Vec<&Response> = answers.iter().filter(|r| r.status == 400).collect();
    assert_eq!(over.len(), 10 - admitted, "{statuses:?}");
    for r in over {
        assert_model_over_budget(r, &key, DEMO_MODEL);
    }
    // Once the answers are drained, the spend alone refuses.
    poll::until("refused once drained", PATIENCE, || {
        (chat(&base, &key, DEMO_MODEL).status == 400).then_some(())
    })
    .unwrap();
}

/// With Postgres frozen the control plane counts what it last read of the key's drained
/// spend for the model, what it has spooled since and its reservations for the requests
/// in flight (4, an answer's cost): a budget is still crossed, late by the answers drained
/// after its last read, and no more. No stale allow stands in for a slow check (as with
/// every control plane away, a budget is then not checked): the bound is the control
/// plane's.
#[test]
fn a_model_budget_is_crossed_with_postgres_frozen() {
    let (stack, _prices) = priced_stack_with(
        &["--budget-reservation-usd", "4"],
        r#"{"auth_timeout_ms": 5000, "cache": {"stale_if_error_ms": 0}}"#,
    );
    let base = stack.envoy.url();
    let budget = json!({DEMO_MODEL: {"budget_limit": 10.0, "time_period": "1d"}});
    let key = stack
        .generate_key(&json!({"model_max_budget": budget}))
        .unwrap();
    let spend = |stack: &Stack| {
        let info = stack.admin_get(&format!("/key/info?key={key}")).unwrap();
        info["info"]["spend"].as_f64().unwrap_or(-1.0)
    };
    // Two answers drained (8 of 10), the second checked after the first was drained.
    for drained in [4.0, 8.0] {
        assert!(reached_upstream(&chat(&base, &key, DEMO_MODEL)));
        poll::until("the answer drained", PATIENCE, || {
            (spend(&stack) == drained).then_some(())
        })
        .unwrap();
    }
    let postgres = stack.postgres.as_ref().unwrap();
    postgres.pause().unwrap();
    let mut admitted = 0;
    let refused = poll::until("the budget crossed with Postgres frozen", PATIENCE, || {
        let r = chat(&base, &key, DEMO_MODEL);
        if reached_upstream(&r) {
            admitted += 1;
            return None;
        }
        Some(r)
    });
    postgres.resume().unwrap();
    let refused = refused.unwrap();
    assert_model_over_budget(&refused, &key, DEMO_MODEL);
    // Read 4 drained before the second answer (8 in truth): one answer more than exact
    // (its 4 pending then passes 10), and no more.
    assert!(
        (1..=2).contains(&admitted),
        "{admitted} admitted while frozen"
    );
    poll::until("still refused with Postgres back", PATIENCE, || {
        (chat(&base, &key, DEMO_MODEL).status == 400).then_some(())
    })
    .unwrap();
}
