//! The router in-process (`tower::ServiceExt::oneshot`), the database behind a fake engine
//! over `tokio::io::duplex`: every handler's success and error paths, without Postgres.
//!
//! Errors are asserted by status and by LiteLLM's `type` strings (`docs/architecture.md`).

// A test crate: its helpers state expectations with unwrap (clippy.toml covers `#[test]`
// functions only, not the helpers beside them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fake_engine;

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;

use fake_engine::{Fake, Harness, INTERNAL, MASTER};
use livegate_contract::headers::INTERNAL_TOKEN;

struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: Value,
}

/// A call as the filter (internal paths carry the shared token) or as a client.
async fn call(app: &Router, method: &str, path: &str, key: Option<&str>, body: &str) -> Answer {
    let token = path.starts_with("/v1/").then_some(INTERNAL);
    call_with(app, method, path, key, token, body).await
}

async fn call_with(
    app: &Router,
    method: &str,
    path: &str,
    key: Option<&str>,
    token: Option<&str>,
    body: &str,
) -> Answer {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        req = req.header(INTERNAL_TOKEN, token);
    }
    if let Some(key) = key {
        req = req.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let req = req
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)))
    };
    Answer {
        status,
        retry_after,
        body,
    }
}

async fn admin(h: &Harness, method: &str, path: &str, body: Value) -> Answer {
    call(&h.app, method, path, Some(MASTER), &body.to_string()).await
}

async fn auth_check(h: &Harness, key: Option<&str>) -> Answer {
    call(&h.app, "POST", "/v1/auth/check", key, "").await
}

/// Asserts an OpenAI-style error with this status, `type` and (if given) `param`.
fn assert_error(a: &Answer, status: u16, kind: &str, param: Option<&str>) {
    assert_eq!(a.status.as_u16(), status, "{}", a.body);
    assert_eq!(a.body["error"]["type"], kind, "{}", a.body);
    assert_eq!(a.body["error"]["code"], status.to_string(), "{}", a.body);
    if let Some(param) = param {
        assert_eq!(a.body["error"]["param"], param, "{}", a.body);
    }
}

async fn generate(h: &Harness, body: Value) -> Value {
    let a = admin(h, "POST", "/key/generate", body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.body
}

const KEY_ROUTES: &[(&str, &str)] = &[
    ("POST", "/key/generate"),
    ("GET", "/key/list"),
    ("GET", "/key/info?key=sk-0123456789abcdefghijklmnop"),
    ("POST", "/key/update"),
    ("POST", "/key/delete"),
    ("POST", "/key/block"),
    ("POST", "/key/unblock"),
];

#[tokio::test]
async fn every_key_handler_succeeds_against_the_engine() {
    let h = Harness::start(Fake::Up).await;
    let created = generate(
        &h,
        json!({"key_alias": "svc", "team_id": "t1", "models": ["m"]}),
    )
    .await;
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk-"), "{created}");
    assert_eq!(created["key_alias"], "svc");
    let token = created["token"].as_str().unwrap().to_owned();
    assert_eq!(h.store.len(), 1);

    let info = admin(&h, "GET", &format!("/key/info?key={key}"), json!({})).await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.body);
    assert_eq!(info.body["key"], token.as_str());
    assert_eq!(info.body["info"]["team_id"], "t1");

    let list = admin(
        &h,
        "GET",
        "/key/list?team_id=t1&return_full_object=true",
        json!({}),
    )
    .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert_eq!(list.body["total_count"], 1);
    assert_eq!(list.body["keys"][0]["key_alias"], "svc");

    let updated = admin(
        &h,
        "POST",
        "/key/update",
        json!({"key": key, "team_id": "t2"}),
    )
    .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.body["team_id"], "t2");

    let blocked = admin(&h, "POST", "/key/block", json!({"key": token})).await;
    assert_eq!(blocked.body["blocked"], true, "{}", blocked.body);
    let unblocked = admin(&h, "POST", "/key/unblock", json!({"key": token})).await;
    assert_eq!(unblocked.body["blocked"], false, "{}", unblocked.body);

    let deleted = admin(&h, "POST", "/key/delete", json!({"key_aliases": ["svc"]})).await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    assert_eq!(deleted.body["deleted_keys"], json!([token]));
    assert_eq!(h.store.len(), 0);
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_field() {
    let h = Harness::start(Fake::Up).await;
    for (path, body, param) in [
        ("/key/generate", json!({"max_budget": -1}), "max_budget"),
        (
            "/key/generate",
            json!({"max_parallel_requests": -1}),
            "max_parallel_requests",
        ),
        ("/key/generate", json!({"rpm_limt": 2}), "rpm_limt"),
        (
            "/team/new",
            json!({"model_max_budget": {"m": {"budget_limit": 1.0, "time_period": "1d"}}}),
            "model_max_budget",
        ),
        (
            "/key/generate",
            json!({"model_max_budget": {"m": {"budget_limit": 1.0}}}),
            "model_max_budget.m.time_period",
        ),
        (
            "/key/generate",
            json!({"model_max_budget": {"m": {"budget_limit": -1, "time_period": "1d"}}}),
            "model_max_budget.m.budget_limit",
        ),
        (
            "/key/generate",
            json!({"model_max_budget": {"m": {"budget_limit": 1, "time_period": "1d", "x": 1}}}),
            "model_max_budget.m.x",
        ),
        (
            "/key/generate",
            json!({"model_max_budget": {"m": 5}}),
            "model_max_budget.m",
        ),
        (
            "/key/generate",
            json!({"model_rpm_limit": {"gpt-4o": -1}}),
            "model_rpm_limit.gpt-4o",
        ),
        (
            "/key/generate",
            json!({"model_tpm_limit": {"gpt-4o": 1.5}}),
            "model_tpm_limit.gpt-4o",
        ),
        (
            "/key/generate",
            json!({"model_tpm_limit": {"gpt-4o": "10"}}),
            "model_tpm_limit.gpt-4o",
        ),
        (
            "/key/generate",
            json!({"model_rpm_limit": [1]}),
            "model_rpm_limit",
        ),
        (
            "/key/generate",
            json!({"model_rpm_limit": {" ": 1}}),
            "model_rpm_limit",
        ),
        (
            "/team/new",
            json!({"model_rpm_limit": {"gpt-4o": -2}}),
            "model_rpm_limit.gpt-4o",
        ),
        ("/key/generate", json!({"rpm_limit": -1}), "rpm_limit"),
        ("/key/generate", json!({"rpm_limit": 1.5}), "rpm_limit"),
        (
            "/key/update",
            json!({"key": "sk-0123456789abcdefghijklmnop", "tpm_limit": -1}),
            "tpm_limit",
        ),
        ("/key/generate", json!({"aliases": {"fast": ""}}), "aliases"),
        ("/key/generate", json!({"duration": "forever"}), "duration"),
        ("/key/generate", json!({"key": "not-a-key"}), "key"),
        ("/key/generate", json!({"models": "gpt-4"}), "models"),
        ("/key/generate", json!({"metadata": [1]}), "metadata"),
        ("/key/update", json!({}), "key"),
        ("/key/block", json!({"key": "zz"}), "key"),
        ("/key/delete", json!({}), "keys"),
    ] {
        let a = admin(&h, "POST", path, body.clone()).await;
        assert_error(&a, 400, "bad_request_error", Some(param));
    }
    let a = admin(&h, "GET", "/key/list?size=1000", json!({})).await;
    assert_error(&a, 400, "bad_request_error", Some("size"));
    let a = call(&h.app, "POST", "/key/generate", Some(MASTER), "{not json").await;
    assert_error(&a, 400, "bad_request_error", None);
    assert_eq!(h.store.len(), 0, "nothing invalid was written");
}

#[tokio::test]
async fn a_clashing_alias_is_a_400_naming_key_alias() {
    let h = Harness::start(Fake::Up).await;
    generate(&h, json!({"key_alias": "same"})).await;
    let a = admin(&h, "POST", "/key/generate", json!({"key_alias": "same"})).await;
    assert_error(&a, 400, "bad_request_error", Some("key_alias"));
}

#[tokio::test]
async fn admin_routes_need_the_master_key_and_count_wrong_ones() {
    let h = Harness::start(Fake::Up).await;
    for (method, path) in KEY_ROUTES {
        let none = call(&h.app, method, path, None, "{}").await;
        assert_error(&none, 401, "auth_error", None);
        let wrong = call(&h.app, method, path, Some(&format!("{MASTER}x")), "{}").await;
        assert_error(&wrong, 403, "auth_error", None);
    }
    let failures = h
        .metrics
        .master_key_failures
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        failures,
        KEY_ROUTES.len() as u64,
        "one per wrong key, none for no key"
    );
    let text = call(&h.metrics_app, "GET", "/metrics", None, "").await;
    assert!(
        text.body
            .as_str()
            .unwrap()
            .contains(&format!("livegate_master_key_failures_total {failures}\n")),
        "{}",
        text.body
    );
    assert_eq!(h.store.len(), 0);
}

#[tokio::test]
async fn unknown_keys_and_paths_are_404() {
    let h = Harness::start(Fake::Up).await;
    let unknown = "sk-0123456789abcdefghijklmnop";
    let a = admin(&h, "GET", &format!("/key/info?key={unknown}"), json!({})).await;
    assert_error(&a, 404, "not_found_error", None);
    for path in ["/key/update", "/key/block", "/key/unblock"] {
        let a = admin(&h, "POST", path, json!({"key": unknown})).await;
        assert_error(&a, 404, "not_found_error", None);
    }
    let a = admin(&h, "POST", "/key/delete", json!({"keys": [unknown]})).await;
    assert_error(&a, 404, "not_found_error", None);
    for path in ["/no/such/path", "/team/nothing", "/spend/nothing"] {
        let a = call(&h.app, "GET", path, None, "").await;
        assert_error(&a, 404, "not_found_error", None);
    }
}

#[tokio::test]
async fn wrong_methods_and_big_bodies_are_bad_requests() {
    let h = Harness::start(Fake::Up).await;
    let a = call(&h.app, "DELETE", "/key/generate", Some(MASTER), "").await;
    assert_error(&a, 405, "bad_request_error", None);
    let big = json!({"metadata": {"x": "a".repeat(100_000)}}).to_string();
    let a = call(&h.app, "POST", "/key/generate", Some(MASTER), &big).await;
    assert_error(&a, 413, "bad_request_error", None);
}

#[tokio::test]
async fn every_key_handler_is_a_503_with_retry_after_while_the_engine_is_away() {
    let h = Harness::start(Fake::Away).await;
    let bodies = [
        json!({}),
        json!({}),
        json!({}),
        json!({"key": "sk-0123456789abcdefghijklmnop"}),
        json!({"key_aliases": ["a"]}),
        json!({"key": "sk-0123456789abcdefghijklmnop"}),
        json!({"key": "sk-0123456789abcdefghijklmnop"}),
    ];
    for ((method, path), body) in KEY_ROUTES.iter().zip(bodies) {
        let a = admin(&h, method, path, body).await;
        assert_error(&a, 503, "no_db_connection", None);
        assert_eq!(a.retry_after.as_deref(), Some("5"), "{path}");
    }
}

#[tokio::test]
async fn a_stalled_engine_is_a_503_with_retry_after_not_a_hang() {
    let h = Harness::start(Fake::Stalled).await;
    let a = tokio::time::timeout(
        Duration::from_secs(10),
        admin(
            &h,
            "GET",
            "/key/info?key=sk-0123456789abcdefghijklmnop",
            json!({}),
        ),
    )
    .await
    .expect("the call outlived its deadline");
    assert_error(&a, 503, "no_db_connection", None);
    assert_eq!(a.retry_after.as_deref(), Some("5"));
}

#[tokio::test]
async fn the_auth_check_allows_a_good_key_and_says_who_it_is() {
    let h = Harness::start(Fake::Up).await;
    let created = generate(
        &h,
        json!({"key_alias": "svc", "team_id": "t", "user_id": "u"}),
    )
    .await;
    let a = auth_check(&h, created["key"].as_str()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["decision"], "allow");
    assert_eq!(a.body["key_hash"], created["token"]);
    assert_eq!(
        (&a.body["key_alias"], &a.body["team_id"], &a.body["user_id"]),
        (&json!("svc"), &json!("t"), &json!("u"))
    );
    assert!(a.body["cache_ttl_seconds"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn the_auth_check_denies_missing_unknown_blocked_and_expired_keys() {
    let h = Harness::start(Fake::Up).await;
    // The filter never asks without a key; if anything does, the contract's answer is
    // the unknown-key deny (the auth check has no finer reason to give).
    let none = auth_check(&h, None).await;
    assert_error(&none, 401, "token_not_found_in_db", None);
    assert_eq!(none.body["decision"], "deny");

    let unknown = auth_check(&h, Some("sk-0123456789abcdefghijklmnop")).await;
    assert_error(&unknown, 401, "token_not_found_in_db", None);
    assert_eq!(unknown.body["reason"], "invalid_key");

    let blocked = generate(&h, json!({"blocked": true})).await;
    let a = auth_check(&h, blocked["key"].as_str()).await;
    assert_error(&a, 403, "auth_error", None);
    assert_eq!(a.body["reason"], "key_blocked");

    // Time runs out on the key itself: polled until its second has passed.
    let expiring = generate(&h, json!({"duration": "1s"})).await;
    let mut a = auth_check(&h, expiring["key"].as_str()).await;
    for _ in 0..100 {
        if a.status != StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        a = auth_check(&h, expiring["key"].as_str()).await;
    }
    assert_error(&a, 403, "expired_key", None);
    assert_eq!(a.body["reason"], "key_expired");
}

#[tokio::test]
async fn the_auth_check_is_unavailable_for_an_unknown_key_while_the_engine_is_away() {
    for fake in [Fake::Away, Fake::Stalled] {
        let h = Harness::start(fake).await;
        let a = auth_check(&h, Some("sk-0123456789abcdefghijklmnop")).await;
        assert_error(&a, 503, "no_db_connection", None);
        assert_eq!(a.body["decision"], "unavailable");
        assert_eq!(a.body["reason"], "db_unavailable");
        assert_eq!(a.retry_after.as_deref(), Some("5"));
    }
}

#[tokio::test]
async fn a_known_key_keeps_working_when_the_engine_stalls() {
    let h = Harness::start(Fake::Up).await;
    let created = generate(&h, json!({})).await;
    assert_eq!(
        auth_check(&h, created["key"].as_str()).await.status,
        StatusCode::OK
    );
    h.store.stall();
    assert_eq!(
        auth_check(&h, created["key"].as_str()).await.status,
        StatusCode::OK
    );
    let unknown = auth_check(&h, Some("sk-0123456789abcdefghijklmnop")).await;
    assert_eq!(unknown.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn readiness_is_200_from_memory_and_503_only_when_strict() {
    let up = Harness::start(Fake::Up).await;
    let a = call(&up.app, "GET", "/health/readiness", None, "").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["db"], "connected");
    let strict = call(&up.app, "GET", "/health/readiness?strict=true", None, "").await;
    assert_eq!(strict.status, StatusCode::OK);

    let away = Harness::start(Fake::Away).await;
    let a = call(&away.app, "GET", "/health/readiness", None, "").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["db"], "disconnected");
    assert!(a.body["status"].is_string());
    let strict = call(&away.app, "GET", "/health/readiness?strict=true", None, "").await;
    assert_eq!(strict.status, StatusCode::SERVICE_UNAVAILABLE);
    for path in ["/health/liveliness", "/health/liveness"] {
        assert_eq!(
            call(&away.app, "GET", path, None, "").await.status,
            StatusCode::OK
        );
    }
}

const INTERNAL_ROUTES: [(&str, &str); 3] = [
    ("POST", "/v1/auth/check"),
    ("GET", "/v1/auth/changes"),
    ("POST", "/v1/spend/records"),
];

#[tokio::test]
async fn internal_routes_refuse_calls_without_the_shared_token_before_any_handler() {
    let h = Harness::start(Fake::Up).await;
    let key = "sk-0123456789abcdef";
    for (method, path) in INTERNAL_ROUTES {
        let none = call_with(&h.app, method, path, Some(key), None, "{}").await;
        assert_error(&none, 401, "auth_error", None);
        let wrong = format!("{INTERNAL}x");
        let bad = call_with(&h.app, method, path, Some(key), Some(&wrong), "{}").await;
        assert_error(&bad, 401, "auth_error", None);
        assert!(
            bad.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(INTERNAL_TOKEN),
            "{}",
            bad.body
        );
        let good = call_with(&h.app, method, path, Some(key), Some(INTERNAL), "{}").await;
        // Answered by the handler (an unknown key is the auth check's own 401).
        assert!(
            !good.body.to_string().contains(INTERNAL_TOKEN),
            "{path}: {}",
            good.body
        );
    }
    // The master key is no internal credential.
    let master = call_with(&h.app, "GET", "/v1/auth/changes", Some(MASTER), None, "").await;
    assert_error(&master, 401, "auth_error", None);
    let text = call(&h.metrics_app, "GET", "/metrics", None, "").await;
    assert!(
        text.body
            .as_str()
            .unwrap()
            .contains("livegate_internal_token_failures_total 7\n"),
        "{}",
        text.body
    );
}

#[tokio::test]
async fn metrics_are_served_on_their_own_listener_only() {
    let h = Harness::start(Fake::Up).await;
    let main = call(&h.app, "GET", "/metrics", None, "").await;
    assert_error(&main, 404, "not_found_error", None);
    let metrics = call(&h.metrics_app, "GET", "/metrics", None, "").await;
    assert_eq!(metrics.status, StatusCode::OK);
    for (method, path) in INTERNAL_ROUTES {
        let other = call(&h.metrics_app, method, path, None, "{}").await;
        assert_eq!(other.status.as_u16(), 404, "{path}");
    }
    let key_list = call(&h.metrics_app, "GET", "/key/list", Some(MASTER), "").await;
    assert_eq!(key_list.status.as_u16(), 404);
}

#[tokio::test]
async fn key_info_with_a_bearer_nobody_issued_reads_the_database_once_then_the_key_cache() {
    let h = Harness::start(Fake::Up).await;
    let stranger = "sk-nobody-issued-this-0123456789";
    for _ in 0..5 {
        let a = call(&h.app, "GET", "/key/info", Some(stranger), "").await;
        assert_error(&a, 401, "token_not_found_in_db", Some("key"));
    }
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    assert_eq!(h.metrics.gate.key_cache_misses.load(relaxed), 1, "one read");
    assert_eq!(
        h.metrics.gate.key_cache_hits.load(relaxed),
        4,
        "then the cache"
    );
}
