//! Local replies: their statuses, headers and JSON error bodies.

use super::*;
use serde_json::Value;

fn error(reply: &LocalReply) -> Value {
    match serde_json::from_str::<Value>(&reply.body) {
        Ok(v) => v["error"].clone(),
        Err(e) => panic!("reply body is not JSON: {e}"),
    }
}

#[test]
fn liveness_is_a_200_json_string() {
    let reply = LocalReply::liveness();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, r#""I'm alive!""#);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        serde_json::from_str::<String>(&reply.body).ok().as_deref(),
        Some("I'm alive!")
    );
}

#[test]
fn a_missing_key_is_a_401_with_a_bearer_challenge() {
    let reply = LocalReply::missing_credential(CredentialError::Missing);
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer realm="livegate""#)
    );
    let e = error(&reply);
    assert_eq!(e["type"], "auth_error");
    assert_eq!(e["param"], "key");
    assert_eq!(e["code"], "401");
    assert_eq!(e["reason"], "missing_credential");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("Bearer")));
}

#[test]
fn an_invalid_key_is_a_401_naming_the_reason() {
    let reply = LocalReply::denied(DenyReason::InvalidKey);
    assert_eq!(reply.status, 401);
    assert!(reply.header("www-authenticate").is_some());
    let e = error(&reply);
    assert_eq!(e["code"], "401");
    assert_eq!(e["reason"], "invalid_key");
    assert_eq!(e["type"], "token_not_found_in_db");
}

#[test]
fn blocked_and_expired_keys_are_403s_naming_the_reason() {
    for (reason, text, kind) in [
        (DenyReason::KeyBlocked, "key_blocked", "auth_error"),
        (DenyReason::KeyExpired, "key_expired", "expired_key"),
    ] {
        let reply = LocalReply::denied(reason);
        assert_eq!(reply.status, 403);
        assert_eq!(reply.header("www-authenticate"), None);
        let e = error(&reply);
        assert_eq!(e["code"], "403");
        assert_eq!(e["type"], kind);
        assert_eq!(e["param"], "key");
        assert_eq!(e["reason"], text);
    }
}

#[test]
fn unavailable_is_a_503_with_retry_after() {
    let reply = LocalReply::unavailable(7);
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("7"));
    let e = error(&reply);
    assert_eq!(e["code"], "503");
    assert_eq!(e["type"], "service_unavailable");
    assert_eq!(e["reason"], "control_plane_unavailable");
}

#[test]
fn a_wrong_method_on_liveness_is_a_405() {
    let reply = LocalReply::method_not_allowed();
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    assert_eq!(error(&reply)["code"], "405");
}

#[test]
fn every_error_reply_is_json_and_not_cacheable() {
    let replies = [
        LocalReply::missing_credential(CredentialError::NotBearer),
        LocalReply::denied(DenyReason::KeyBlocked),
        LocalReply::unavailable(5),
        LocalReply::method_not_allowed(),
    ];
    for reply in replies {
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        assert!(error(&reply)["message"].is_string());
    }
}

#[test]
fn a_key_over_budget_is_litellms_400_budget_exceeded_with_its_numbers() {
    let reply = LocalReply::over_budget(&livegate_contract::Budget {
        scope: livegate_contract::BudgetScope::Key,
        team_id: None,
        user_id: None,
        spend: 0.5,
        max_budget: 0.0,
        model: None,
    });
    assert_eq!(reply.status, 400);
    assert_eq!(reply.header("www-authenticate"), None);
    let e = error(&reply);
    assert_eq!(e["type"], "budget_exceeded");
    assert_eq!(e["code"], "400");
    assert_eq!(
        e["message"],
        "ExceededTokenBudget: Current spend for token: 0.5; Max Budget for Token: 0"
    );
}

#[test]
fn a_full_spend_spool_is_a_503_with_its_own_type_and_retry_after() {
    let reply = LocalReply::spend_spool_full(7);
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("7"));
    assert_eq!(error(&reply)["type"], "spend_spool_full");
}

fn limited(kind: livegate_contract::LimitKind) -> RateLimited {
    RateLimited {
        kind,
        scope: livegate_contract::BudgetScope::Team,
        team_id: Some("t1".into()),
        user_id: None,
        model: None,
        limit: 10,
        reset_at_ms: 61_500,
    }
}

#[test]
fn a_rate_limited_reply_is_a_429_with_the_contract_error_and_openai_headers() {
    let reply = LocalReply::rate_limited(&limited(livegate_contract::LimitKind::Requests), 60_000);
    assert_eq!(reply.status, 429);
    let e = error(&reply);
    assert_eq!(e["type"], "rate_limit_error");
    assert_eq!(e["code"], "429");
    assert_eq!(e["param"], "rpm_limit");
    assert_eq!(e["reason"], "rate_limited");
    assert!(e["message"]
        .as_str()
        .is_some_and(|m| m.contains("team_id: t1") && m.contains("Current limit: 10")));
    assert_eq!(reply.header("retry-after"), Some("2"));
    assert_eq!(reply.header("x-ratelimit-limit-requests"), Some("10"));
    assert_eq!(reply.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(reply.header("x-ratelimit-reset-requests"), Some("2s"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
}

#[test]
fn every_header_the_contract_gives_a_429_is_sent_for_every_kind() {
    for kind in [
        livegate_contract::LimitKind::Requests,
        livegate_contract::LimitKind::Tokens,
        livegate_contract::LimitKind::Parallel,
    ] {
        let limited = limited(kind);
        let reply = LocalReply::rate_limited(&limited, 0);
        for (name, value) in limited.headers(0) {
            assert_eq!(reply.header(&name), Some(value.as_str()), "{name}");
        }
    }
}

#[test]
fn a_parallel_429_carries_retry_after_alone() {
    let reply = LocalReply::rate_limited(&limited(livegate_contract::LimitKind::Parallel), 60_000);
    assert_eq!(reply.status, 429);
    let e = error(&reply);
    assert_eq!(e["type"], "rate_limit_error");
    assert_eq!(e["param"], "max_parallel_requests");
    assert!(e["message"]
        .as_str()
        .is_some_and(|m| m.contains("Max parallel request limit reached")));
    assert_eq!(reply.header("retry-after"), Some("2"));
    assert!(reply
        .headers
        .iter()
        .all(|(n, _)| !n.starts_with("x-ratelimit-")));
}
