//! A key's models, its team's models and its aliases, enforced by the filter on the model
//! routes through the real Envoy, control plane and Postgres: a refused model never
//! reaches the upstream, an alias reaches it as its model, and the policy holds with
//! Postgres frozen and with the control plane stopped.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use std::time::Duration;

use livegate_tests::fleet::{Fleet, FleetOptions};
use livegate_tests::http::{self, Response};
use livegate_tests::poll;
use livegate_tests::stack::{Stack, StackOptions};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// Short allow TTL, so the fault phases run on stale allows, not fresh ones.
const FILTER_CONFIG: &str =
    r#"{"cache": {"allow_ttl_ms": 500, "deny_ttl_ms": 200, "stale_if_error_ms": 120000}}"#;
const PATIENCE: Duration = Duration::from_secs(30);
/// Answers in a row that show a change applied at every worker (see the constant's reason).
const IN_A_ROW: usize = poll::EVERY_WORKER_IN_A_ROW;

fn start() -> Stack {
    Stack::start(StackOptions {
        filter_config: FILTER_CONFIG.to_string(),
        ..StackOptions::full()
    })
    .unwrap()
}

fn chat(stack: &Stack, key: &str, body: &str) -> Response {
    chat_at(&stack.envoy.url(), key, body)
}

/// A chat completion through the Envoy at `base` (its listener's URL).
fn chat_at(base: &str, key: &str, body: &str) -> Response {
    let bearer = format!("Bearer {key}");
    http::post_raw(
        &format!("{base}/v1/chat/completions"),
        &[("authorization", &bearer)],
        "application/json",
        body,
    )
    .unwrap()
}

fn with_model(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

/// 200 from the upstream, which saw `model`.
fn reached_as(response: &Response, model: &str) {
    assert_eq!(response.status, 200, "{}", response.body);
    let body = response.json().unwrap();
    assert_eq!(body["livegate"]["model"], model, "{body}");
}

/// Refused by the filter with LiteLLM's status and type, the model named; the upstream's
/// echo (`livegate`) is absent, so nothing reached it.
fn refused(response: &Response, status: u16, kind: &str, model: &str) {
    assert_eq!(response.status, status, "{}", response.body);
    let body = response.json().unwrap();
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains(model),
        "{body}"
    );
    assert!(
        body.get("livegate").is_none(),
        "reached the upstream: {body}"
    );
}

#[test]
fn models_teams_and_aliases_are_enforced_and_hold_through_outages() {
    let mut stack = start();
    stack
        .admin(
            "/team/new",
            &json!({"team_id": "research", "models": ["gpt-4o", "o1"]}),
        )
        .unwrap();
    let key = stack
        .generate_key(
            &json!({"models": ["gpt-4o", "claude-3"], "team_id": "research",
               "aliases": {"fast": "gpt-4o"}}),
        )
        .unwrap();
    let open = stack
        .generate_key(&json!({"key_alias": "every-model"}))
        .unwrap();

    let check = |stack: &Stack, phase: &str| {
        // Twice each: the first may be a miss (the check), the second a cached allow.
        for _ in 0..2 {
            reached_as(&chat(stack, &key, &with_model("gpt-4o")), "gpt-4o");
            reached_as(&chat(stack, &key, &with_model("fast")), "gpt-4o");
            refused(
                &chat(stack, &key, &with_model("o1")),
                401,
                "key_model_access_denied",
                "o1",
            );
            refused(
                &chat(stack, &key, &with_model("claude-3")),
                401,
                "team_model_access_denied",
                "claude-3",
            );
            reached_as(&chat(stack, &open, &with_model("anything")), "anything");
            let bad = chat(stack, &key, "not json");
            assert_eq!(bad.status, 400, "{phase}: {}", bad.body);
            let body = bad.json().unwrap();
            assert_eq!(body["error"]["param"], "model", "{phase}: {body}");
        }
    };
    check(&stack, "all up");
    // The model list under both spellings (LiteLLM's `lite models list` asks for `/models`).
    for path in ["/v1/models", "/models"] {
        let bearer = format!("Bearer {open}");
        let listed = http::get(&stack.url(path), &[("authorization", &bearer)]).unwrap();
        assert_eq!(listed.status, 200, "{path}: {}", listed.body);
        assert_eq!(
            listed.json().unwrap()["data"][0]["id"],
            "livegate-demo",
            "{path}"
        );
    }

    stack.postgres.as_ref().unwrap().pause().unwrap();
    check(&stack, "Postgres frozen");

    let control_plane = stack.control_plane.as_mut().unwrap();
    control_plane.signal(Signal::SIGSTOP).unwrap();
    // Wait until the filter serves the key stale: the policy comes from its cache alone.
    poll::until("a stale allow", PATIENCE, || {
        let response = chat(&stack, &key, &with_model("gpt-4o"));
        assert_eq!(response.status, 200, "{}", response.body);
        let stale = &response.json().unwrap()["livegate"]["identity_headers"]["x-livegate-stale"];
        (stale == "true").then_some(())
    })
    .unwrap();
    check(&stack, "control plane stopped");

    let control_plane = stack.control_plane.as_mut().unwrap();
    control_plane.signal(Signal::SIGCONT).unwrap();
    stack.postgres.as_ref().unwrap().resume().unwrap();
}

#[test]
fn a_policy_change_reaches_the_filter_like_a_revocation() {
    let stack = start();
    let key = stack.generate_key(&json!({"models": ["gpt-4o"]})).unwrap();
    reached_as(&chat(&stack, &key, &with_model("gpt-4o")), "gpt-4o");
    stack
        .admin("/key/update", &json!({"key": key, "models": ["o1"]}))
        .unwrap();
    poll::until("the new models to apply", PATIENCE, || {
        (chat(&stack, &key, &with_model("gpt-4o")).status == 401).then_some(())
    })
    .unwrap();
    reached_as(&chat(&stack, &key, &with_model("o1")), "o1");
}

/// Two Envoys (two workers each) and two control planes: a key's and its team's policy,
/// changed through either control plane, reaches every Envoy and holds there with
/// Postgres frozen and with both control planes stopped.
#[test]
fn model_policy_holds_on_two_envoys_and_two_control_planes_through_outages() {
    let fleet = Fleet::start(FleetOptions {
        filter_config: FILTER_CONFIG.to_string(),
        ..FleetOptions::new(2, 2)
    })
    .unwrap();
    let admin = |via: usize, path: &str, body: Value| fleet.admin_via(via, path, &body).unwrap();
    admin(
        0,
        "/team/new",
        json!({"team_id": "fleet", "models": ["gpt-4o", "o1"]}),
    );
    let created = admin(
        1,
        "/key/generate",
        json!({"team_id": "fleet", "models": ["gpt-4o"], "aliases": {"fast": "gpt-4o"}}),
    );
    let key = created["key"].as_str().unwrap().to_string();
    let open = admin(0, "/key/generate", json!({"key_alias": "fleet-open"}))["key"]
        .as_str()
        .unwrap()
        .to_string();
    let envoys: Vec<String> = fleet.envoys.iter().map(|e| e.url()).collect();
    // Each Envoy has two workers with a cache each: enough rounds reach both (a worker that
    // never saw the open key has nothing to serve it from once the control planes stop).
    let each_envoy = |check: &dyn Fn(&str)| {
        for base in &envoys {
            for _ in 0..IN_A_ROW {
                check(base);
            }
        }
    };
    let until_at_every_envoy = |what: &str, model: &str, status: u16| {
        for base in &envoys {
            poll::until(&format!("{what} at {base}"), PATIENCE, || {
                (0..IN_A_ROW)
                    .all(|_| chat_at(base, &key, &with_model(model)).status == status)
                    .then_some(())
            })
            .unwrap();
        }
    };

    each_envoy(&|base| {
        reached_as(&chat_at(base, &key, &with_model("gpt-4o")), "gpt-4o");
        reached_as(&chat_at(base, &key, &with_model("fast")), "gpt-4o");
        let o1 = chat_at(base, &key, &with_model("o1"));
        refused(&o1, 401, "key_model_access_denied", "o1");
    });

    // The key's models change through control plane 0; the team's through control plane 1.
    admin(0, "/key/update", json!({"key": key, "models": ["o1"]}));
    until_at_every_envoy("the key's new models", "o1", 200);
    admin(
        1,
        "/team/update",
        json!({"team_id": "fleet", "models": ["gpt-4o"]}),
    );
    until_at_every_envoy("the team's new models", "o1", 401);
    let after_changes = |base: &str| {
        let o1 = chat_at(base, &key, &with_model("o1"));
        refused(&o1, 401, "team_model_access_denied", "o1");
        let gpt = chat_at(base, &key, &with_model("gpt-4o"));
        refused(&gpt, 401, "key_model_access_denied", "gpt-4o");
        reached_as(&chat_at(base, &open, &with_model("any")), "any");
    };
    each_envoy(&after_changes);

    fleet.postgres.pause().unwrap();
    each_envoy(&after_changes);

    fleet.signal_control_planes(Signal::SIGSTOP).unwrap();
    // Every Envoy serves from its cache alone: the open key comes back marked stale.
    for base in &envoys {
        poll::until(&format!("a stale allow at {base}"), PATIENCE, || {
            let response = chat_at(base, &open, &with_model("any"));
            assert_eq!(response.status, 200, "{}", response.body);
            let body = response.json().unwrap();
            let stale = &body["livegate"]["identity_headers"]["x-livegate-stale"];
            (stale == "true").then_some(())
        })
        .unwrap();
    }
    each_envoy(&after_changes);

    fleet.signal_control_planes(Signal::SIGCONT).unwrap();
    fleet.postgres.resume().unwrap();
}

/// A team's `model_aliases` apply to its keys after the key's own (LiteLLM's order), the
/// allow-list is checked against the resolved model, a change reaches the filter like a
/// revocation, and the cached policy holds with Postgres frozen and the control plane
/// stopped.
#[test]
fn a_teams_model_aliases_resolve_after_the_keys_own_and_hold_through_outages() {
    let mut stack = start();
    let team = stack
        .admin(
            "/team/new",
            &json!({"team_id": "aliased", "models": ["gpt-4o", "o1"],
                    "model_aliases": {"smart": "o1", "fast": "o1", "old": "gpt-3.5"}}),
        )
        .unwrap();
    assert_eq!(team["model_aliases"]["smart"], "o1", "{team}");
    let key = stack
        .generate_key(&json!({"team_id": "aliased", "aliases": {"fast": "gpt-4o"}}))
        .unwrap();
    let bad = stack.admin(
        "/team/update",
        &json!({"team_id": "aliased", "model_aliases": {"": "gpt-4o"}}),
    );
    let refusal = bad.unwrap_err().to_string();
    assert!(refusal.contains("model_aliases"), "{refusal}");

    let check = |stack: &Stack| {
        for _ in 0..2 {
            // The key's alias wins over the team's of the same name.
            reached_as(&chat(stack, &key, &with_model("fast")), "gpt-4o");
            reached_as(&chat(stack, &key, &with_model("smart")), "o1");
            // Resolved first, then checked: the team does not allow what its alias names.
            refused(
                &chat(stack, &key, &with_model("old")),
                401,
                "team_model_access_denied",
                "gpt-3.5",
            );
            reached_as(&chat(stack, &key, &with_model("gpt-4o")), "gpt-4o");
        }
    };
    check(&stack);

    stack
        .admin(
            "/team/update",
            &json!({"team_id": "aliased", "model_aliases": {"smart": "gpt-4o", "old": "gpt-3.5"}}),
        )
        .unwrap();
    poll::until("the team's new alias at the filter", PATIENCE, || {
        let answered = chat(&stack, &key, &with_model("smart"));
        (answered.status == 200 && answered.json().ok()?["livegate"]["model"] == "gpt-4o")
            .then_some(())
    })
    .unwrap();
    let info = stack.admin_get("/team/info?team_id=aliased").unwrap();
    assert_eq!(
        info["team_info"]["model_aliases"],
        json!({"smart": "gpt-4o", "old": "gpt-3.5"}),
        "{info}"
    );

    let recheck = |stack: &Stack| {
        for _ in 0..2 {
            reached_as(&chat(stack, &key, &with_model("fast")), "gpt-4o");
            reached_as(&chat(stack, &key, &with_model("smart")), "gpt-4o");
            refused(
                &chat(stack, &key, &with_model("old")),
                401,
                "team_model_access_denied",
                "gpt-3.5",
            );
        }
    };
    stack.postgres.as_ref().unwrap().pause().unwrap();
    recheck(&stack);
    let control_plane = stack.control_plane.as_mut().unwrap();
    control_plane.signal(Signal::SIGSTOP).unwrap();
    poll::until("a stale allow", PATIENCE, || {
        let response = chat(&stack, &key, &with_model("gpt-4o"));
        assert_eq!(response.status, 200, "{}", response.body);
        let stale = &response.json().unwrap()["livegate"]["identity_headers"]["x-livegate-stale"];
        (stale == "true").then_some(())
    })
    .unwrap();
    recheck(&stack);
    let control_plane = stack.control_plane.as_mut().unwrap();
    control_plane.signal(Signal::SIGCONT).unwrap();
    stack.postgres.as_ref().unwrap().resume().unwrap();
}
