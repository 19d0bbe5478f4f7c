//! Identities survive the trip: a team id (and a key alias) outside ASCII, accepted by the
//! API, reaches the upstream percent-encoded and the spend records as it is, so the key's
//! spend reaches its team and the team's budget refuses it; an identity no record or
//! header can carry (control characters, too long) is refused at the API naming the field.

#![allow(clippy::unwrap_used, clippy::panic)] // a test file: failures are panics

use std::time::Duration;

use livegate_tests::http::{self, Response};
use livegate_tests::poll;
use livegate_tests::process::Scratch;
use livegate_tests::stack::{Stack, StackOptions};
use serde_json::{json, Value};

/// A request with a 4-character prompt costs 4 × 0.5 + 8 completion tokens × 0.25 = 4.
const PRICES: &str =
    r#"{"livegate-demo": {"input_cost_per_token": 0.5, "output_cost_per_token": 0.25}}"#;
const PATIENCE: Duration = Duration::from_secs(60);
const TEAM: &str = "équipe-研究 ✓";

fn start() -> (Stack, Scratch) {
    let dir = Scratch::new("livegate-identity-prices-").unwrap();
    let path = dir.path().join("prices.json");
    std::fs::write(&path, PRICES).unwrap();
    let mut options = StackOptions::full();
    options.control_plane_args = vec!["--prices-file".into(), path.display().to_string()];
    (Stack::start(options).unwrap(), dir)
}

/// `%XX` for every byte outside the unreserved set: a query value as a client sends it.
fn query_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn team_spend(stack: &Stack) -> f64 {
    let info = stack
        .admin_get(&format!("/team/info?team_id={}", query_encoded(TEAM)))
        .unwrap();
    info["team_info"]["spend"].as_f64().unwrap()
}

fn admin_post(stack: &Stack, path: &str, body: &Value) -> Response {
    let bearer = format!("Bearer {}", stack.master_key());
    http::post_json(&stack.url(path), &[("authorization", &bearer)], body).unwrap()
}

#[test]
fn a_team_id_outside_ascii_reaches_the_records_and_the_team_budget() {
    let (stack, _prices) = start();
    stack
        .admin("/team/new", &json!({"team_id": TEAM, "max_budget": 6.0}))
        .unwrap();
    let created = stack
        .admin(
            "/key/generate",
            &json!({"team_id": TEAM, "key_alias": "clé", "user_id": "ユーザー"}),
        )
        .unwrap();
    let key = created["key"].as_str().unwrap().to_string();

    let first = http::demo_chat(&stack.envoy.url(), &key, json!({})).unwrap();
    assert_eq!(first.status, 200, "{}", first.body);
    let seen = &first.json().unwrap()["livegate"]["identity_headers"];
    assert_eq!(
        seen["x-livegate-team-id"], "%C3%A9quipe-%E7%A0%94%E7%A9%B6 %E2%9C%93",
        "{seen}"
    );
    assert_eq!(seen["x-livegate-key-alias"], "cl%C3%A9", "{seen}");
    assert_eq!(
        seen["x-livegate-user-id"], "%E3%83%A6%E3%83%BC%E3%82%B6%E3%83%BC",
        "{seen}"
    );

    // The record names the team as the API knows it: the team's spend grows.
    poll::until("the spend to reach the team", PATIENCE, || {
        (team_spend(&stack) >= 4.0).then_some(())
    })
    .unwrap();
    let logs = stack.admin_get("/spend/logs").unwrap();
    let teams: Vec<&Value> = logs
        .as_array()
        .unwrap()
        .iter()
        .map(|log| &log["team_id"])
        .collect();
    assert!(teams.iter().any(|t| *t == TEAM), "{logs}");

    // A second request takes the team over its budget (8 > 6): then it refuses the key.
    let second = http::demo_chat(&stack.envoy.url(), &key, json!({})).unwrap();
    assert_eq!(second.status, 200, "{}", second.body);
    poll::until("the team's budget to refuse the key", PATIENCE, || {
        let r = http::demo_chat(&stack.envoy.url(), &key, json!({})).unwrap();
        (r.status == 400).then_some(r)
    })
    .map(|r| {
        let body = r.json().unwrap();
        assert_eq!(body["error"]["type"], "budget_exceeded", "{body}");
    })
    .unwrap();
}

#[test]
fn identities_no_record_or_header_can_carry_are_refused_naming_the_field() {
    let (stack, _prices) = start();
    let long = "x".repeat(257);
    let cases = [
        ("/team/new", json!({"team_id": "red\nteam"}), "team_id"),
        ("/team/new", json!({"team_id": long}), "team_id"),
        ("/key/generate", json!({"team_id": "a\u{0}b"}), "team_id"),
        (
            "/key/generate",
            json!({"user_id": "u\r\nx-livegate-team-id: t"}),
            "user_id",
        ),
        ("/key/generate", json!({"key_alias": "\u{7f}"}), "key_alias"),
        ("/key/generate", json!({"user_id": long}), "user_id"),
        ("/key/generate", json!({"user_id": "  "}), "user_id"),
    ];
    for (path, body, field) in cases {
        let response = admin_post(&stack, path, &body);
        assert_eq!(response.status, 400, "{path} {body}: {}", response.body);
        let error = response.json().unwrap();
        assert_eq!(error["error"]["param"], field, "{path} {body}: {error}");
        assert_eq!(error["error"]["type"], "bad_request_error", "{error}");
    }
    // A key's update is held to the same rule.
    let created = stack.admin("/key/generate", &json!({})).unwrap();
    let key = created["key"].as_str().unwrap();
    let response = admin_post(
        &stack,
        "/key/update",
        &json!({"key": key, "team_id": "t\u{85}"}),
    );
    assert_eq!(response.status, 400, "{}", response.body);
    assert_eq!(response.json().unwrap()["error"]["param"], "team_id");
}
