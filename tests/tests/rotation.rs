//! Key rotation (issue #20): `POST /key/regenerate` gives a key a new secret, the same
//! record (alias, policy, spend, ledger), with /key/update's fields applied at once. On
//! 2 Envoys × 2 control planes the old secret keeps working until its grace period ends,
//! then is refused at every Envoy a second later: with Postgres frozen, and with both
//! control planes stopped, because the end travels with the old secret's allow as its
//! expiry; afterwards its tombstone goes through the change feed. And the attacks: a
//! non-admin regenerate, a grace period that is no duration, a blocked or deleted key,
//! the new secret in a log.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use livegate_contract::KeyHash;
use livegate_tests::fleet::{Fleet, FleetOptions};
use livegate_tests::http::{self, Response};
use livegate_tests::stack::{Stack, StackOptions};
use livegate_tests::{internal_token, poll};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// Short allow TTLs (as revocation.rs): an allow a filter serves during the faults is a
/// stale one or a fresh answer, and a stale one is served for as long as two minutes.
const FILTER_CONFIG: &str =
    r#"{"cache": {"allow_ttl_ms": 1000, "deny_ttl_ms": 200, "stale_if_error_ms": 120000}}"#;
const PATIENCE: Duration = Duration::from_secs(30);
/// Long enough for the rotation to reach every Envoy before it ends (checked).
const GRACE: &str = "10s";
/// Requests per secret and Envoy in each fault phase.
const ROUNDS: usize = 15;
/// The model the rotation keeps, and the one it takes away (so each Envoy's worker shows
/// it holds the allow the rotation made).
const KEPT: &str = "livegate-demo";
const DROPPED: &str = "livegate-demo-retired";

fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

fn chat(fleet: &Fleet, envoy: usize, key: &str, model: &str) -> Response {
    http::demo_chat(&fleet.envoys[envoy].url(), key, json!({ "model": model })).unwrap()
}

/// Polls every Envoy until `key` asking for `model` gets `status` there 12 times in a row
/// (each Envoy has two workers; a new connection lands on either).
fn until_everywhere(fleet: &Fleet, key: &str, model: &str, status: u16, what: &str) {
    for envoy in 0..fleet.envoys.len() {
        poll::until(&format!("{what} at Envoy {envoy}"), PATIENCE, || {
            (0..poll::EVERY_WORKER_IN_A_ROW)
                .all(|_| chat(fleet, envoy, key, model).status == status)
                .then_some(())
        })
        .unwrap();
    }
}

/// The auth check straight at control plane `k`.
fn direct_check(fleet: &Fleet, k: usize, key: &str) -> Option<Response> {
    let cp = fleet.control_plane(k).ok()?;
    let url = format!("{}/v1/auth/check", cp.base_url());
    let bearer = format!("Bearer {key}");
    let headers = [("authorization", bearer.as_str()), internal_token::header()];
    http::post_raw(&url, &headers, "application/json", "").ok()
}

/// For `ROUNDS` rounds at every Envoy: the old secret is refused, the new one and a good
/// key are let in.
fn old_refused_new_served(fleet: &Fleet, old: &str, new: &str, good: &str, phase: &str) {
    for _ in 0..ROUNDS {
        for envoy in 0..fleet.envoys.len() {
            for key in [new, good] {
                let answer = chat(fleet, envoy, key, KEPT);
                assert_eq!(
                    answer.status, 200,
                    "{phase}: Envoy {envoy}: {}",
                    answer.body
                );
            }
            let answer = chat(fleet, envoy, old, KEPT);
            assert!(
                !(200..300).contains(&answer.status),
                "{phase}: the old secret got {} at Envoy {envoy} after its grace period",
                answer.status
            );
        }
    }
}

/// Regenerates `old` through control plane `via` with `GRACE`, keeping only `KEPT`;
/// waits until every Envoy and control plane serves the rotation; answers the new secret
/// and when the old one stops (Unix ms, from the old secret's allow).
fn rotate(fleet: &Fleet, via: usize, old: &str) -> (String, u64) {
    let answer = fleet
        .admin_via(
            via,
            "/key/regenerate",
            &json!({"key": old, "grace_period": GRACE, "models": [KEPT]}),
        )
        .unwrap();
    let new = answer["key"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert!(answer["previous_key_expires"].is_string(), "{answer}");
    // The model taken away is refused to both secrets everywhere: each worker holds an
    // allow made after the rotation, so the old secret's carries the grace's end.
    for key in [old, new.as_str()] {
        until_everywhere(fleet, key, DROPPED, 401, "the rotation's models");
        until_everywhere(fleet, key, KEPT, 200, "the rotated key");
    }
    let mut end = 0;
    for k in 0..fleet.control_planes.len() {
        let allow = poll::until("the control plane to know the grace", PATIENCE, || {
            let answer = direct_check(fleet, k, old)?.json().ok()?;
            answer["expires_at_ms"].as_u64().map(|e| (e, answer))
        })
        .unwrap();
        assert_eq!(allow.1["key_hash"], KeyHash::of_raw(old).as_str());
        assert!(end == 0 || end == allow.0, "both replicas name one end");
        end = allow.0;
    }
    assert!(
        now_ms() < end,
        "the grace period ({GRACE}) ended before the rotation reached every Envoy: raise GRACE"
    );
    (new, end)
}

/// Waits for the wall clock to pass `end_ms` by a second: the old secret is then used
/// "one second after grace".
fn one_second_after(end_ms: u64) {
    let wait = Duration::from_millis(end_ms.saturating_sub(now_ms()) + 5_000);
    poll::until("one second past the grace period", wait, || {
        (now_ms() >= end_ms + 1_000).then_some(())
    })
    .unwrap();
}

/// The change feed of control plane `k` lists `key`'s hash as deleted.
fn feed_says_deleted(fleet: &Fleet, k: usize, key: &str) -> bool {
    let Ok(cp) = fleet.control_plane(k) else {
        return false;
    };
    let url = format!("{}/v1/auth/changes?after=0", cp.base_url());
    let Ok(answer) = http::get(&url, &[internal_token::header()]) else {
        return false;
    };
    let hash = KeyHash::of_raw(key);
    let feed = answer.json().unwrap_or_default();
    feed["changes"].as_array().is_some_and(|changes| {
        changes
            .iter()
            .any(|c| c["key_hash"] == hash.as_str() && c["status"] == "deleted")
    })
}

#[test]
fn old_secrets_are_refused_on_time_everywhere_with_postgres_frozen_and_control_planes_stopped() {
    let fleet = Fleet::start(FleetOptions {
        filter_config: FILTER_CONFIG.to_string(),
        ..FleetOptions::new(2, 2)
    })
    .unwrap();
    let generate = |via: usize, alias: &str| {
        let body = json!({"key_alias": alias, "models": [KEPT, DROPPED]});
        let created = fleet.admin_via(via, "/key/generate", &body).unwrap();
        created["key"].as_str().unwrap().to_string()
    };
    let good = generate(0, "good");
    let a_old = generate(0, "rotated-while-frozen");
    let b_old = generate(1, "rotated-while-stopped");
    for key in [&good, &a_old, &b_old] {
        until_everywhere(&fleet, key, DROPPED, 200, "the key to be let in");
    }

    // A grace that ends while Postgres is frozen: every control plane holds the old
    // secret's record with its end as expiry, every filter its allow.
    let (a_new, a_end) = rotate(&fleet, 1, &a_old);
    fleet.postgres.pause().unwrap();
    one_second_after(a_end);
    old_refused_new_served(&fleet, &a_old, &a_new, &good, "Postgres frozen");
    for k in 0..2 {
        let status = direct_check(&fleet, k, &a_old).map(|r| r.status);
        assert_eq!(status, Some(403), "control plane {k} on the old secret");
    }
    fleet.postgres.resume().unwrap();
    for k in 0..2 {
        let cp = fleet.control_plane(k).unwrap();
        cp.wait_connected(PATIENCE).unwrap();
    }

    // A grace that ends while both control planes are stopped: the filters alone refuse
    // the old secret, by the expiry its allow carries, and serve the new one stale.
    let (b_new, b_end) = rotate(&fleet, 0, &b_old);
    fleet.signal_control_planes(Signal::SIGSTOP).unwrap();
    one_second_after(b_end);
    old_refused_new_served(&fleet, &b_old, &b_new, &good, "control planes stopped");
    fleet.signal_control_planes(Signal::SIGCONT).unwrap();

    // Back up: the grace ends went through the change feed as tombstones, and every Envoy
    // refuses both old secrets as unknown keys; the new secrets keep working.
    for (old, new) in [(&a_old, &a_new), (&b_old, &b_new)] {
        for k in 0..2 {
            poll::until("the grace's tombstone in the feed", PATIENCE, || {
                feed_says_deleted(&fleet, k, old).then_some(())
            })
            .unwrap();
        }
        until_everywhere(&fleet, old, KEPT, 401, "the tombstone");
        until_everywhere(&fleet, new, KEPT, 200, "the new secret");
    }
    let info = fleet
        .admin_via(0, "/key/block", &json!({"key": a_new}))
        .unwrap();
    assert_eq!(info["key_alias"], "rotated-while-frozen", "{info}");
    until_everywhere(&fleet, &a_new, KEPT, 403, "a block of the rotated key");
}

fn post(stack: &Stack, path: &str, bearer: &str, body: &Value) -> Response {
    let auth = format!("Bearer {bearer}");
    http::post_json(&stack.url(path), &[("authorization", &auth)], body).unwrap()
}

fn key_info(stack: &Stack, bearer: &str) -> Response {
    let auth = format!("Bearer {bearer}");
    http::get(&stack.url("/key/info"), &[("authorization", &auth)]).unwrap()
}

fn refused(answer: &Response, status: u16, param: Option<&str>) {
    assert_eq!(answer.status, status, "{}", answer.body);
    let body = answer.json().unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");
    if let Some(param) = param {
        assert_eq!(body["error"]["param"], param, "{body}");
    }
}

#[test]
fn regenerate_keeps_the_record_and_refuses_what_it_must() {
    let stack = Stack::start(StackOptions::full()).unwrap();
    let master = stack.master_key().to_string();
    let created = stack
        .admin(
            "/key/generate",
            &json!({"key_alias": "to-rotate", "max_budget": 10.0, "metadata": {"app": "a"}}),
        )
        .unwrap();
    let old = created["key"].as_str().unwrap().to_string();
    let chat = |key: &str| http::demo_chat(&stack.envoy.url(), key, json!({})).unwrap();
    assert_eq!(chat(&old).status, 200);
    // The request before the rotation is in the ledger, under the old secret's hash.
    let ledger = |key: &str| {
        let path = format!("/spend/logs?api_key={}", KeyHash::of_raw(key).as_str());
        let auth = format!("Bearer {master}");
        let answer = http::get(&stack.url(&path), &[("authorization", &auth)]).unwrap();
        answer.json().unwrap().as_array().map_or(0, Vec::len)
    };
    poll::until("the request in the ledger", PATIENCE, || {
        (ledger(&old) == 1).then_some(())
    })
    .unwrap();

    // Attacks first: a key may not rotate (even itself), a grace period must be a
    // duration, the master key is not rotated here, nothing of it is stored.
    refused(
        &post(&stack, "/key/regenerate", &old, &json!({"key": old})),
        403,
        None,
    );
    for (body, param) in [
        (
            json!({"key": old, "grace_period": "tomorrow"}),
            "grace_period",
        ),
        (json!({"key": old, "grace_period": 24}), "grace_period"),
        (
            json!({"key": old, "new_master_key": "sk-new-master-0123456789abcdefgh"}),
            "new_master_key",
        ),
        (json!({"key": old, "new_key": "not-a-key"}), "new_key"),
        (json!({"key": old, "new_key": old}), "new_key"),
        (json!({"key": old, "tags": ["x"]}), "tags"),
        (json!({}), "key"),
    ] {
        refused(
            &post(&stack, "/key/regenerate", &master, &body),
            400,
            Some(param),
        );
    }
    assert_eq!(
        chat(&old).status,
        200,
        "a refused regenerate changes nothing"
    );

    // Through the path, raw as LiteLLM's clients send it (the filter puts its hash in its
    // place, which keeps the secret out of Envoy's access log), with a grace period and an
    // update applied at the same time.
    let path = format!("/key/{old}/regenerate");
    let answer = post(
        &stack,
        &path,
        &master,
        &json!({"grace_period": "1h", "max_budget": 20.0}),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let rotated = answer.json().unwrap();
    let new = rotated["key"].as_str().unwrap().to_string();
    assert!(new.starts_with("sk-") && new != old);
    let new_hash = KeyHash::of_raw(&new);
    assert_eq!(rotated["token"], new_hash.as_str(), "{rotated}");
    assert_eq!(rotated["token_id"], new_hash.as_str(), "{rotated}");
    assert_eq!(rotated["key_alias"], "to-rotate");
    assert_eq!(rotated["max_budget"], 20.0);
    assert_eq!(rotated["metadata"]["app"], "a");
    assert!(rotated["previous_key_expires"].is_string(), "{rotated}");

    // Both secrets work during the grace; each reads the one record and when the old
    // secret stops.
    assert_eq!(chat(&new).status, 200);
    assert_eq!(chat(&old).status, 200);
    for key in [&old, &new] {
        let info = key_info(&stack, key);
        assert_eq!(info.status, 200, "{}", info.body);
        let info = info.json().unwrap();
        assert_eq!(info["key"], new_hash.as_str(), "{info}");
        assert_eq!(info["info"]["key_alias"], "to-rotate");
        assert_eq!(
            info["info"]["previous_key_expires"], rotated["previous_key_expires"],
            "{info}"
        );
    }
    // The ledger moved with the key: its history and the old secret's requests during
    // the grace are the key's, and so is their spend.
    poll::until("every request in the key's ledger", PATIENCE, || {
        (ledger(&new) == 4 && ledger(&old) == 0).then_some(())
    })
    .unwrap();

    // A rotation without a grace period revokes the old secret at once, as a delete; a
    // chosen new_key is used as given.
    let chosen = "sk-chosen-new-secret-0123456789abcdefgh";
    let answer = post(
        &stack,
        "/key/regenerate",
        &master,
        &json!({"key": new, "new_key": chosen}),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json().unwrap()["key"], chosen);
    poll::until("the old secret refused", PATIENCE, || {
        (chat(&new).status == 401).then_some(())
    })
    .unwrap();
    assert_eq!(chat(chosen).status, 200);
    // The first old secret is still in its grace, now as the chosen key's.
    assert_eq!(chat(&old).status, 200);
    let info = key_info(&stack, &old).json().unwrap();
    assert_eq!(info["key"], KeyHash::of_raw(chosen).as_str(), "{info}");
    // The old secret's grace does not make it a secret of its own: it cannot be rotated.
    refused(
        &post(&stack, "/key/regenerate", &master, &json!({"key": new})),
        404,
        None,
    );

    // A blocked key rotates as LiteLLM's does, and stays blocked under both secrets; a
    // deleted key is LiteLLM's 404.
    stack.admin("/key/block", &json!({"key": chosen})).unwrap();
    let answer = post(
        &stack,
        "/key/regenerate",
        &master,
        &json!({"key": chosen, "grace_period": "1h"}),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let last = answer.json().unwrap()["key"].as_str().unwrap().to_string();
    assert_eq!(answer.json().unwrap()["blocked"], true);
    for key in [&last, &old, &chosen.to_string()] {
        poll::until("the blocked key refused", PATIENCE, || {
            (chat(key).status == 403).then_some(())
        })
        .unwrap();
    }
    stack
        .admin("/key/delete", &json!({"keys": [last]}))
        .unwrap();
    refused(
        &post(&stack, "/key/regenerate", &master, &json!({"key": last})),
        404,
        None,
    );
    for key in [&last, &old, &chosen.to_string()] {
        poll::until("the deleted key's secrets refused", PATIENCE, || {
            (chat(key).status == 401).then_some(())
        })
        .unwrap();
    }

    // No secret, new or old (the old one was in a path), in any log.
    let logs = [
        stack.control_plane.as_ref().unwrap().log_text(),
        stack.envoy.log_text(),
        stack.postgres.as_ref().unwrap().log_text(),
    ];
    for secret in [&old, &new, &chosen.to_string(), &last] {
        for log in &logs {
            assert!(!log.contains(secret.as_str()), "a new secret in a log");
        }
    }
}

/// The attack: two secrets during a grace are not two allowances. A key with an
/// `rpm_limit` of 3 used once, then rotated, admits two more requests in the minute,
/// whichever secret asks; the window moved with the key.
#[test]
fn both_secrets_in_a_grace_share_the_keys_rate_limit() {
    let stack = Stack::start(StackOptions::full()).unwrap();
    let created = stack
        .admin(
            "/key/generate",
            &json!({"key_alias": "limited", "rpm_limit": 3}),
        )
        .unwrap();
    let old = created["key"].as_str().unwrap().to_string();
    let chat = |key: &str| http::demo_chat(&stack.envoy.url(), key, json!({})).unwrap();
    assert_eq!(chat(&old).status, 200);
    let answer = stack
        .admin(
            "/key/regenerate",
            &json!({"key": old, "grace_period": "1h"}),
        )
        .unwrap();
    let new = answer["key"].as_str().unwrap().to_string();
    let statuses: Vec<u16> = [&new, &old, &new, &old, &new, &old]
        .iter()
        .map(|key| chat(key).status)
        .collect();
    assert_eq!(statuses, [200, 200, 429, 429, 429, 429], "{statuses:?}");
}

/// The attack on money: two secrets during a grace are not two budgets. Spend made with
/// the old secret is the key's: once it has crossed `max_budget`, the new secret is
/// refused at its first request.
#[test]
fn both_secrets_in_a_grace_spend_the_keys_one_budget() {
    let prices = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/prices/model_prices.json"
    );
    let mut options = StackOptions::full();
    // Each request in flight reserves about its own cost (operations.md, "Requests in
    // flight"), not the default cent, which is more than this budget.
    options.control_plane_args = [
        "--prices-file",
        prices,
        "--budget-reservation-usd",
        "0.0003",
    ]
    .map(String::from)
    .to_vec();
    let stack = Stack::start(options).unwrap();
    // A demo chat costs 4 × $10/M + 8 × $30/M = $0.00028: a few fit under the budget.
    const COST: f64 = 0.000_28;
    const BUDGET: f64 = 0.002;
    let created = stack
        .admin(
            "/key/generate",
            &json!({"key_alias": "budgeted", "max_budget": BUDGET}),
        )
        .unwrap();
    let old = created["key"].as_str().unwrap().to_string();
    let answer = stack
        .admin(
            "/key/regenerate",
            &json!({"key": old, "grace_period": "1h"}),
        )
        .unwrap();
    let new = answer["key"].as_str().unwrap().to_string();
    let chat = |key: &str| http::demo_chat(&stack.envoy.url(), key, json!({})).unwrap();
    let auth = format!("Bearer {}", stack.master_key());
    let url = stack.url(&format!("/key/info?key={}", KeyHash::of_raw(&new).as_str()));
    let spend = || -> Option<f64> {
        let info = http::get(&url, &[("authorization", &auth)])
            .ok()?
            .json()
            .ok()?;
        info["info"]["spend"].as_f64()
    };
    // The old secret alone, until the key's drained spend has crossed its budget and it is
    // refused (a refusal for requests in flight alone passes once they are charged).
    let mut admitted = 0u32;
    poll::until(
        "the key's budget to refuse the old secret",
        PATIENCE,
        || {
            let answer = chat(&old);
            match answer.status {
                200 => admitted += 1,
                400 => {
                    let error = &answer.json().unwrap()["error"];
                    assert_eq!(error["type"], "budget_exceeded", "{}", answer.body);
                    return (spend()? >= BUDGET).then_some(());
                }
                other => panic!("unexpected status {other}: {}", answer.body),
            }
            None
        },
    )
    .unwrap();
    // Every request of the old secret is charged to the key, once...
    poll::until("every request charged to the key", PATIENCE, || {
        ((spend()? - f64::from(admitted) * COST).abs() < 1e-9).then_some(())
    })
    .unwrap();
    // ...and the new secret has no budget of its own left.
    let refused = chat(&new);
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.json().unwrap()["error"]["type"], "budget_exceeded");
}
