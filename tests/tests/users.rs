//! Users through the real control plane and Postgres, and through the real Envoy and filter:
//! LiteLLM's `/user/*` shapes (and its own `tests/test_users.py` assertions); a user's
//! `models`, budget and limits applying to every key of its, the tighter of key, user and
//! team winning; a user's budget crossed by two of its keys refusing both (also with the
//! control plane stopped) and reset by its `budget_duration`; a user's `rpm_limit` shared
//! by its keys; deleting a user revoking its keys at the filter through the change feed; a
//! known key keeping its user's policy with Postgres frozen; a key reading its own user's
//! info and no one else's; fields livegate does not enforce refused by name.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

mod control_plane_support;

use std::time::Duration;

use control_plane_support::*;
use livegate_tests::control_plane::ControlPlane;
use livegate_tests::http::{self, Response};
use livegate_tests::poll;
use livegate_tests::process::Scratch;
use livegate_tests::stack::{Stack, StackOptions};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(60);

fn as_key(cp: &ControlPlane, key: &str, path: &str) -> Response {
    let bearer = format!("Bearer {key}");
    http::get(&url(cp, path), &[("authorization", &bearer)]).unwrap()
}

#[test]
fn users_have_litellm_shapes_and_their_policy_reaches_their_keys() {
    let (_pg, cp) = start(&[]);
    // LiteLLM's own `new_user` body (tests/test_users.py), ten at once: all 200.
    let litellm_body = json!({
        "models": ["azure-models"], "aliases": {"mistral-7b": "gpt-3.5-turbo"},
        "duration": null, "max_budget": null, "budget_duration": null,
    });
    let created: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|_| s.spawn(|| ok(post(&cp, "/user/new", litellm_body.clone()))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let first = &created[0];
    assert_eq!(
        first["user_id"].as_str().unwrap().len(),
        36,
        "a UUID: {first}"
    );
    assert!(first["key"].as_str().unwrap().starts_with("sk-"), "{first}");
    assert_eq!(first["user_role"], "internal_user");
    assert_eq!(first["models"], json!(["azure-models"]));
    let allow = auth_check(&cp, first["key"].as_str().unwrap())
        .json()
        .unwrap();
    assert_eq!(allow["user_id"], first["user_id"], "{allow}");
    assert_eq!(allow["user_models"], json!(["azure-models"]), "{allow}");
    assert_eq!(allow["aliases"], json!({"mistral-7b": "gpt-3.5-turbo"}));

    let alice = ok(post(
        &cp,
        "/user/new",
        json!({"user_id": "alice", "user_email": "alice@example.com", "models": ["gpt-4o"],
               "max_budget": 10, "budget_duration": "30d", "rpm_limit": 5, "tpm_limit": 1000,
               "max_parallel_requests": 20, "metadata": {"team": "core"}, "key_alias": "alice-1"}),
    ));
    assert_eq!(alice["key_alias"], "alice-1");
    assert_eq!(alice["max_budget"], 10.0);
    refused(
        &post(&cp, "/user/new", json!({"user_id": "alice"})),
        "user_id",
        "already in use",
    );
    refused(
        &post(&cp, "/user/new", json!({"user_email": "alice@example.com"})),
        "user_email",
        "already in use",
    );
    // A refused key takes its new user back out: nothing of a refused call is stored.
    refused(
        &post(
            &cp,
            "/user/new",
            json!({"user_id": "carol", "key_alias": "alice-1"}),
        ),
        "key_alias",
        "already in use",
    );
    assert_eq!(get(&cp, "/user/info?user_id=carol").status, 404);
    let no_key = ok(post(
        &cp,
        "/user/new",
        json!({"user_id": "bob", "auto_create_key": false}),
    ));
    assert_eq!(no_key["key"], "", "{no_key}");

    let info = ok(get(&cp, "/user/info?user_id=alice"));
    assert_eq!(info["user_id"], "alice");
    assert_eq!(info["user_info"]["user_email"], "alice@example.com");
    assert_eq!(info["user_info"]["rpm_limit"], 5);
    assert_eq!(info["user_info"]["spend"], 0.0);
    assert!(info["user_info"]["budget_reset_at"].is_string(), "{info}");
    assert_eq!(info["keys"][0]["token"], alice["token"], "{info}");
    assert_eq!(info["teams"], json!([]));
    assert_eq!(ok(get(&cp, "/user/info?user_id=bob"))["keys"], json!([]));
    assert_eq!(get(&cp, "/user/info?user_id=nobody").status, 404);

    // A key generated for the user carries its policy: the tighter of key and user wins.
    let second = generate(&cp, json!({"user_id": "alice", "rpm_limit": 2}));
    let allow = auth_check(&cp, second["key"].as_str().unwrap())
        .json()
        .unwrap();
    assert_eq!(allow["user_models"], json!(["gpt-4o"]), "{allow}");
    assert_eq!(allow["limits"]["rpm_limit"], 2, "{allow}");
    assert_eq!(allow["limits"]["tpm_limit"], 1000, "{allow}");
    assert_eq!(allow["limits"]["max_parallel_requests"], 20, "{allow}");
    // A key naming a user_id no user holds works as before users: no user policy.
    let orphan = generate(&cp, json!({"user_id": "ghost"}));
    let allow = auth_check(&cp, orphan["key"].as_str().unwrap())
        .json()
        .unwrap();
    assert_eq!(allow["decision"], "allow", "{allow}");
    assert!(allow.get("user_models").is_none(), "{allow}");
    assert!(allow.get("limits").is_none(), "{allow}");

    // LiteLLM's pages.
    let page = ok(get(&cp, "/user/list?page=2&page_size=5"));
    assert_eq!(page["total"], 12, "{page}");
    assert_eq!(page["page"], 2);
    assert_eq!(page["page_size"], 5);
    assert_eq!(page["total_pages"], 3);
    assert_eq!(page["users"].as_array().unwrap().len(), 5);
    let listed = ok(get(&cp, "/user/list?user_ids=alice,bob"));
    assert_eq!(listed["total"], 2, "{listed}");
    let alice_row = listed["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user_id"] == "alice")
        .unwrap();
    assert_eq!(alice_row["key_count"], 2, "{listed}");

    // The user's change reaches each of its keys' next check.
    let updated = ok(post(
        &cp,
        "/user/update",
        json!({"user_id": "alice", "models": ["o1"], "rpm_limit": 50}),
    ));
    assert_eq!(updated["data"]["models"], json!(["o1"]), "{updated}");
    // The key's own 2 stays the tighter for the second key; the user's 50 for the first.
    for (key, rpm) in [(&alice, 50), (&second, 2)] {
        let allow = auth_check(&cp, key["key"].as_str().unwrap())
            .json()
            .unwrap();
        assert_eq!(allow["user_models"], json!(["o1"]), "{allow}");
        assert_eq!(allow["limits"]["rpm_limit"], rpm, "{allow}");
    }
    assert_eq!(
        post(&cp, "/user/update", json!({"user_id": "nobody"})).status,
        404
    );

    let gone = ok(post(
        &cp,
        "/user/delete",
        json!({"user_ids": ["alice", "bob"]}),
    ));
    let mut deleted_users = gone["deleted_users"].as_array().unwrap().clone();
    deleted_users.sort_by_key(|v| v.to_string());
    assert_eq!(deleted_users, [json!("alice"), json!("bob")]);
    assert_eq!(gone["deleted_keys"].as_array().unwrap().len(), 2, "{gone}");
    assert_eq!(auth_check(&cp, alice["key"].as_str().unwrap()).status, 401);
    assert_eq!(auth_check(&cp, second["key"].as_str().unwrap()).status, 401);
    assert_eq!(get(&cp, "/user/info?user_id=alice").status, 404);
    assert_eq!(
        post(&cp, "/user/delete", json!({"user_ids": ["alice"]})).status,
        404
    );
    // The orphan key is nobody's user's: deleting users left it alone.
    assert_eq!(auth_check(&cp, orphan["key"].as_str().unwrap()).status, 200);
}

/// LiteLLM's `test_user_info`: as admin, as the user itself, and as a random user (403).
#[test]
fn a_key_reads_its_own_users_info_and_no_one_elses() {
    let (_pg, cp) = start(&[]);
    let mine = ok(post(
        &cp,
        "/user/new",
        json!({"user_id": "krrish@berri.ai"}),
    ));
    let other = ok(post(&cp, "/user/new", json!({})));
    let key = mine["key"].as_str().unwrap();
    let random = other["key"].as_str().unwrap();

    ok(get(&cp, "/user/info?user_id=krrish%40berri.ai"));
    let own = ok(as_key(&cp, key, "/user/info?user_id=krrish%40berri.ai"));
    assert_eq!(own["user_info"]["user_id"], "krrish@berri.ai", "{own}");
    let implied = ok(as_key(&cp, key, "/user/info"));
    assert_eq!(implied["user_id"], "krrish@berri.ai");

    let r = as_key(&cp, random, "/user/info?user_id=krrish%40berri.ai");
    assert_eq!(r.status, 403, "{}", r.body);
    let e = &r.json().unwrap()["error"];
    assert_eq!(e["type"], "auth_error", "{}", r.body);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("key not allowed to access this user's info. user_id=krrish@berri.ai"),
        "{}",
        r.body
    );
    // A key of no user reads no user's info; no key is a 401.
    let plain = generate(&cp, json!({}));
    assert_eq!(
        as_key(&cp, plain["key"].as_str().unwrap(), "/user/info").status,
        403
    );
    let anonymous = http::get(&url(&cp, "/user/info?user_id=krrish%40berri.ai"), &[]).unwrap();
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    // Every other /user route wants the master key.
    assert_eq!(as_key(&cp, key, "/user/list").status, 403);
    let bearer = format!("Bearer {key}");
    for path in ["/user/new", "/user/update", "/user/delete"] {
        let body = json!({"user_id": "krrish@berri.ai", "user_ids": ["krrish@berri.ai"]});
        let r = http::post_json(&url(&cp, path), &[("authorization", &bearer)], &body).unwrap();
        assert_eq!(r.status, 403, "{path}: {}", r.body);
    }
    // A blocked key learns nothing, not even its own user's info.
    ok(post(&cp, "/key/block", json!({"key": key})));
    let r = as_key(&cp, key, "/user/info");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json().unwrap()["error"]["reason"], "key_blocked");
}

#[test]
fn user_fields_are_validated_and_unenforced_ones_refused_by_name() {
    let (pg, cp) = start(&[]);
    for (body, param, says) in [
        // A team that does not exist: refused, and the user is not left behind.
        (json!({"team_id": "t1"}), "team_id", "names no team"),
        (json!({"teams": ["t1"]}), "teams[0]", "names no team"),
        (
            json!({"model_max_budget": {"gpt-4o": {"budget_limit": 1}}}),
            "model_max_budget",
            "not supported",
        ),
        (
            json!({"user_role": "proxy_admin"}),
            "user_role",
            "not supported",
        ),
        (json!({"max_budget": -1}), "max_budget", "at least 0"),
        (
            json!({"budget_duration": "1w"}),
            "budget_duration",
            "duration",
        ),
        (json!({"rpm_limit": -1}), "rpm_limit", "0 or more"),
        (json!({"metadata": [1]}), "metadata", "JSON object"),
        (json!({"user_id": "a\nb"}), "user_id", "control characters"),
        (json!({"models": [""]}), "models", "1 to 256"),
        (json!({"rpm_limt": 1}), "rpm_limt", "unknown field"),
        (json!({"user_alias": "al"}), "user_alias", "not supported"),
        (
            json!({"auto_create_key": false, "key_alias": "k"}),
            "key_alias",
            "auto_create_key is false",
        ),
    ] {
        refused(&post(&cp, "/user/new", body.clone()), param, says);
    }
    ok(post(
        &cp,
        "/user/new",
        json!({"user_id": "u", "auto_create_key": false}),
    ));
    refused(
        &post(
            &cp,
            "/user/update",
            json!({"user_id": "u", "duration": "1h"}),
        ),
        "duration",
        "/key/update",
    );
    refused(&post(&cp, "/user/update", json!({})), "user_id", "required");
    refused(
        &post(&cp, "/user/delete", json!({})),
        "user_ids",
        "required",
    );
    refused(
        &get(&cp, "/user/list?page_size=101"),
        "page_size",
        "1 to 100",
    );
    refused(&get(&cp, "/user/list?search=a"), "search", "not supported");
    // Nothing refused was stored.
    assert_eq!(psql(&pg, "SELECT count(*) FROM livegate_users"), "1");
    assert_eq!(psql(&pg, "SELECT count(*) FROM livegate_keys"), "0");
}

// --- Through Envoy and the filter ---------------------------------------------------------

/// Powers of two, so every sum is exact: one demo request costs 4.
const PRICES: &str =
    r#"{"livegate-demo": {"input_cost_per_token": 0.5, "output_cost_per_token": 0.25}}"#;
const COST_PER_REQUEST: f64 = 4.0;

fn stack() -> (Stack, Scratch) {
    let dir = Scratch::new("livegate-user-prices-").unwrap();
    let path = dir.path().join("prices.json");
    std::fs::write(&path, PRICES).unwrap();
    let mut options = StackOptions::full();
    options.control_plane_args = vec!["--prices-file".into(), path.display().to_string()];
    (Stack::start(options).unwrap(), dir)
}

fn chat(stack: &Stack, key: &str) -> Response {
    http::demo_chat(&stack.envoy.url(), key, json!({})).unwrap()
}

fn reached_upstream(r: &Response) -> bool {
    r.status == 200 && r.json().is_ok_and(|b| b.get("choices").is_some())
}

/// A new user with `fields`, and `n` keys of its own (the first made by `/user/new`).
fn user_with_keys(stack: &Stack, fields: Value, n: usize) -> Vec<String> {
    let user = stack.admin("/user/new", &fields).unwrap();
    let user_id = user["user_id"].clone();
    let mut keys = vec![user["key"].as_str().unwrap().to_string()];
    while keys.len() < n {
        let key = stack
            .admin("/key/generate", &json!({"user_id": user_id}))
            .unwrap();
        keys.push(key["key"].as_str().unwrap().to_string());
    }
    keys
}

fn user_spend(stack: &Stack, user_id: &str) -> f64 {
    let info = stack
        .admin_get(&format!("/user/info?user_id={user_id}"))
        .unwrap();
    info["user_info"]["spend"].as_f64().unwrap()
}

/// LiteLLM's 400 for a user's budget, from the filter (nothing reached the upstream).
fn assert_user_over_budget(r: &Response, user_id: &str, max_budget: &str) {
    assert_eq!(r.status, 400, "{}", r.body);
    let e = &r.json().unwrap()["error"];
    assert_eq!(e["type"], "budget_exceeded", "{}", r.body);
    let message = e["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "ExceededBudget: User={user_id} over budget. Spend="
        )) && message.ends_with(&format!(", Budget={max_budget}")),
        "{message}"
    );
}

#[test]
fn a_users_budget_crossed_by_two_of_its_keys_refuses_both() {
    let (stack, _dir) = stack();
    let keys = user_with_keys(&stack, json!({"user_id": "spender", "max_budget": 10}), 2);
    // The attack: spread the spending over two keys with no budget of their own. Each
    // admitted request costs 4; the user's spend is the sum over both keys.
    let mut admitted = 0;
    let mut turn = 0;
    poll::until("the user's budget refusing a key", PATIENCE, || {
        let r = chat(&stack, &keys[turn % 2]);
        turn += 1;
        if reached_upstream(&r) {
            admitted += 1;
            return None;
        }
        assert_user_over_budget(&r, "spender", "10");
        Some(())
    })
    .unwrap();
    assert!(admitted >= 3, "spend 0, 4 and 8 are under 10: {admitted}");
    // Both keys are refused now, whichever crossed it.
    for key in &keys {
        assert_user_over_budget(&chat(&stack, key), "spender", "10");
    }
    // Every admitted request is charged to the user once, through both keys.
    let expected = f64::from(admitted) * COST_PER_REQUEST;
    poll::until(
        "the user's spend is every admitted request",
        PATIENCE,
        || (user_spend(&stack, "spender") == expected).then_some(()),
    )
    .unwrap();
    // Also with the control plane stopped: the crossing was a change of each of the user's
    // keys, so the filter holds no allow of either to serve stale.
    let control_plane = stack.control_plane.as_ref().unwrap();
    control_plane.signal(Signal::SIGSTOP).unwrap();
    let answers: Vec<Response> = keys.iter().map(|k| chat(&stack, k)).collect();
    control_plane.signal(Signal::SIGCONT).unwrap();
    for r in answers {
        assert!(!reached_upstream(&r), "never admitted: {}", r.body);
        assert_eq!(r.status, 503, "{}", r.body);
    }
    // Raising the user's budget lets both in again (the update relogs its keys).
    stack
        .admin(
            "/user/update",
            &json!({"user_id": "spender", "max_budget": 1000}),
        )
        .unwrap();
    for key in &keys {
        poll::until("a key admitted again", PATIENCE, || {
            reached_upstream(&chat(&stack, key)).then_some(())
        })
        .unwrap();
    }
}

#[test]
fn a_users_rpm_limit_is_shared_by_its_keys() {
    let (stack, _dir) = stack();
    let keys = user_with_keys(&stack, json!({"user_id": "chatty", "rpm_limit": 3}), 3);
    // One request per key, then the user's window is full for all of them.
    for key in &keys {
        let r = chat(&stack, key);
        assert!(reached_upstream(&r), "{}", r.body);
    }
    for key in &keys {
        let r = chat(&stack, key);
        assert_eq!(r.status, 429, "{}", r.body);
        let e = &r.json().unwrap()["error"];
        assert_eq!(e["type"], "rate_limit_error", "{}", r.body);
        assert_eq!(e["param"], "rpm_limit", "{}", r.body);
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .starts_with("Rate limit exceeded for user: chatty."),
            "{}",
            r.body
        );
        assert_eq!(r.header("x-ratelimit-limit-requests"), Some("3"));
    }
    // A key of another user is not in that window.
    let other = user_with_keys(&stack, json!({"rpm_limit": 3}), 1);
    assert!(reached_upstream(&chat(&stack, &other[0])));
}

#[test]
fn a_users_models_restrict_its_keys_and_deleting_it_revokes_them_at_the_filter() {
    let (stack, _dir) = stack();
    let keys = user_with_keys(&stack, json!({"user_id": "picky", "models": ["gpt-4o"]}), 2);
    let r = chat(&stack, &keys[0]);
    assert_eq!(r.status, 401, "{}", r.body);
    let e = &r.json().unwrap()["error"];
    assert_eq!(e["type"], "user_model_access_denied", "{}", r.body);
    assert!(
        e["message"].as_str().unwrap().contains("livegate-demo"),
        "{}",
        r.body
    );
    stack
        .admin(
            "/user/update",
            &json!({"user_id": "picky", "models": ["livegate-demo"]}),
        )
        .unwrap();
    for key in &keys {
        poll::until(
            "the key admitted for the model now listed",
            PATIENCE,
            || reached_upstream(&chat(&stack, key)).then_some(()),
        )
        .unwrap();
    }
    // Both keys' allows are cached by the filter now (60 s by default). Deleting the user
    // deletes its keys, and the tombstones reach the filter through the change feed: well
    // inside the allow's TTL.
    stack
        .admin("/user/delete", &json!({"user_ids": ["picky"]}))
        .unwrap();
    for key in &keys {
        poll::until(
            "the deleted user's key refused",
            Duration::from_secs(20),
            || (chat(&stack, key).status == 401).then_some(()),
        )
        .unwrap();
    }
}

#[test]
fn with_postgres_frozen_a_known_key_keeps_its_users_policy() {
    let (stack, _dir) = stack();
    let broke = user_with_keys(&stack, json!({"user_id": "broke", "max_budget": 0}), 1);
    let picky = user_with_keys(&stack, json!({"user_id": "picky", "models": ["gpt-4o"]}), 1);
    let fine = user_with_keys(&stack, json!({"user_id": "fine"}), 1);
    assert_user_over_budget(&chat(&stack, &broke[0]), "broke", "0");
    assert_eq!(chat(&stack, &picky[0]).status, 401);
    assert!(reached_upstream(&chat(&stack, &fine[0])));

    let pg = stack.postgres.as_ref().unwrap();
    pg.pause().unwrap();
    for _ in 0..5 {
        assert_user_over_budget(&chat(&stack, &broke[0]), "broke", "0");
        let r = chat(&stack, &picky[0]);
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(
            r.json().unwrap()["error"]["type"],
            "user_model_access_denied"
        );
        assert!(reached_upstream(&chat(&stack, &fine[0])));
    }
    pg.resume().unwrap();
    assert_user_over_budget(&chat(&stack, &broke[0]), "broke", "0");
}

#[test]
fn a_users_budget_duration_resets_its_spend_and_lets_its_keys_in_again() {
    let (stack, _dir) = stack();
    let keys = user_with_keys(
        &stack,
        json!({"user_id": "monthly", "max_budget": 4, "budget_duration": "10s"}),
        2,
    );
    let info = stack.admin_get("/user/info?user_id=monthly").unwrap();
    let first_reset = info["user_info"]["budget_reset_at"]
        .as_str()
        .unwrap()
        .to_string();
    // One request spends the whole budget; once drained (within a second or two, well
    // inside the 10 s), both keys are refused...
    poll::until("the user's budget refusing its other key", PATIENCE, || {
        let r = chat(&stack, &keys[0]);
        (r.status == 400).then_some(())
    })
    .unwrap();
    assert_user_over_budget(&chat(&stack, &keys[1]), "monthly", "4");
    // ...until the user's budget resets, which the filters learn as a change of its keys.
    for key in &keys {
        poll::until("a key admitted after the user's reset", PATIENCE, || {
            reached_upstream(&chat(&stack, key)).then_some(())
        })
        .unwrap();
    }
    let info = stack.admin_get("/user/info?user_id=monthly").unwrap();
    let next_reset = info["user_info"]["budget_reset_at"].as_str().unwrap();
    assert!(next_reset > first_reset.as_str(), "{info}");
}
