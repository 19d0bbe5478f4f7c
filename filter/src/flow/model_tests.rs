//! Model access on the model routes: the body's `model` against the key's policy, in
//! every order the body and the auth answer can arrive, with nothing refused forwarded.

use super::mock::*;
use super::{RequestFlow, Verdict};
use crate::config::Config;
use crate::metrics::Metric;
use livegate_contract::ModelAccess;

const CHAT: &str = "/v1/chat/completions";
const NOW: u64 = 1_000_000;

fn only(models: &[&str]) -> ModelAccess {
    ModelAccess {
        models: models.iter().map(|m| m.to_string()).collect(),
        ..ModelAccess::default()
    }
}

fn with_body(path: &str, body: &str) -> MockHost {
    let host = keyed(path);
    *host.body.borrow_mut() = body.as_bytes().to_vec();
    host
}

fn reply_json(host: &MockHost) -> serde_json::Value {
    let reply = host.last_reply().unwrap();
    serde_json::from_str(&reply.body).unwrap()
}

/// A miss whose body arrives before the auth answer (the usual order: Envoy's buffer
/// filter hands the whole body over right after the headers).
fn body_first(access: ModelAccess, body: &str) -> (MockHost, Verdict) {
    let host = with_body(CHAT, body);
    let mut flow = RequestFlow::new(plugin(Config::default()));
    assert_eq!(flow.on_request_headers(&host, Some(NOW)), Verdict::Stop);
    assert_eq!(flow.on_request_body(&host, true), Verdict::Stop);
    let verdict = respond(&mut flow, &host, "200", &allow_body_with(access), NOW);
    (host, verdict)
}

#[test]
fn a_listed_model_goes_on_and_another_is_refused_naming_it() {
    let (host, verdict) = body_first(only(&["gpt-4o"]), r#"{"model": "gpt-4o"}"#);
    assert_eq!(verdict, Verdict::Continue);
    assert_eq!(host.count(Metric::Allowed), 1);
    assert!(host.replies.borrow().is_empty());

    let (host, verdict) = body_first(only(&["gpt-4o"]), r#"{"model": "claude-3"}"#);
    assert_eq!(verdict, Verdict::Stop, "nothing refused is forwarded");
    assert_eq!(host.last_reply().unwrap().status, 401);
    let error = &reply_json(&host)["error"];
    assert_eq!(error["type"], "key_model_access_denied");
    assert!(error["message"].as_str().unwrap().contains("claude-3"));
    assert_eq!(host.count(Metric::Allowed), 0);
    assert_eq!(host.count(Metric::DeniedModel), 1);
}

#[test]
fn the_team_list_refuses_with_the_team_type() {
    let access = ModelAccess {
        team_models: vec!["gpt-4o".into()],
        ..ModelAccess::default()
    };
    let (host, verdict) = body_first(access, r#"{"model": "o1"}"#);
    assert_eq!(verdict, Verdict::Stop);
    assert_eq!(
        reply_json(&host)["error"]["type"],
        "team_model_access_denied"
    );
}

#[test]
fn an_answer_before_the_body_waits_for_the_body() {
    let host = with_body(CHAT, r#"{"model": "claude-3"}"#);
    let mut flow = RequestFlow::new(plugin(Config::default()));
    assert_eq!(flow.on_request_headers(&host, Some(NOW)), Verdict::Stop);
    let allow = allow_body_with(only(&["gpt-4o"]));
    assert_eq!(respond(&mut flow, &host, "200", &allow, NOW), Verdict::Stop);
    assert!(
        host.replies.borrow().is_empty(),
        "no decision before the body"
    );
    assert_eq!(flow.on_request_body(&host, true), Verdict::Stop);
    assert_eq!(host.last_reply().unwrap().status, 401);
}

#[test]
fn a_cached_key_is_checked_on_its_body_too() {
    let plugin = plugin(Config::default());
    let first = with_body(CHAT, r#"{"model": "gpt-4o"}"#);
    let mut flow = RequestFlow::new(plugin.clone());
    flow.on_request_headers(&first, Some(NOW));
    flow.on_request_body(&first, true);
    let allow = allow_body_with(only(&["gpt-4o"]));
    assert_eq!(
        respond(&mut flow, &first, "200", &allow, NOW),
        Verdict::Continue
    );

    let host = with_body(CHAT, r#"{"model": "claude-3"}"#);
    let mut flow = RequestFlow::new(plugin.clone());
    assert_eq!(flow.on_request_headers(&host, Some(NOW + 1)), Verdict::Stop);
    assert_eq!(host.count(Metric::CacheHit), 1);
    assert!(host.dispatched.borrow().is_empty());
    assert_eq!(flow.on_request_body(&host, true), Verdict::Stop);
    assert_eq!(host.last_reply().unwrap().status, 401);

    let host = with_body(CHAT, r#"{"model": "gpt-4o"}"#);
    let mut flow = RequestFlow::new(plugin);
    assert_eq!(flow.on_request_headers(&host, Some(NOW + 2)), Verdict::Stop);
    assert_eq!(flow.on_request_body(&host, true), Verdict::Continue);
}

#[test]
fn an_alias_reaches_the_upstream_as_its_model_with_the_new_length() {
    let access = ModelAccess {
        models: vec!["gpt-4o-mini".into()],
        aliases: [("fast".to_string(), "gpt-4o-mini".to_string())].into(),
        ..ModelAccess::default()
    };
    let (host, verdict) = body_first(access, r#"{"model":"fast","n":1}"#);
    assert_eq!(verdict, Verdict::Continue);
    let body = String::from_utf8(host.body.borrow().clone()).unwrap();
    assert_eq!(body, r#"{"model":"gpt-4o-mini","n":1}"#);
    assert_eq!(host.header("content-length"), Some(body.len().to_string()));
}

#[test]
fn a_body_without_a_model_is_a_400_and_is_not_forwarded() {
    for body in ["not json", r#"{"messages": []}"#, r#"{"model": 7}"#] {
        let (host, verdict) = body_first(ModelAccess::default(), body);
        assert_eq!(verdict, Verdict::Stop, "{body}");
        assert_eq!(host.last_reply().unwrap().status, 400, "{body}");
        assert_eq!(reply_json(&host)["error"]["param"], "model");
    }
    // No body at all.
    let host = keyed(CHAT);
    let mut flow = RequestFlow::new(plugin(Config::default()));
    assert_eq!(
        flow.on_request_headers_with(&host, Some(NOW), true),
        Verdict::Stop
    );
    respond(&mut flow, &host, "200", &allow_body(), NOW);
    assert_eq!(host.last_reply().unwrap().status, 400);
}

#[test]
fn a_refused_key_is_refused_for_the_key_whatever_its_body() {
    let host = with_body(CHAT, "not json");
    let mut flow = RequestFlow::new(plugin(Config::default()));
    flow.on_request_headers(&host, Some(NOW));
    flow.on_request_body(&host, true);
    let deny = deny_body(crate::decision::DenyReason::KeyBlocked);
    assert_eq!(respond(&mut flow, &host, "403", &deny, NOW), Verdict::Stop);
    assert_eq!(host.last_reply().unwrap().status, 403);
}

#[test]
fn other_routes_never_wait_for_a_body() {
    let host = with_body("/v1/models", "");
    let mut flow = RequestFlow::new(plugin(Config::default()));
    flow.on_request_headers(&host, Some(NOW));
    let allow = allow_body_with(only(&["gpt-4o"]));
    assert_eq!(
        respond(&mut flow, &host, "200", &allow, NOW),
        Verdict::Continue
    );
}
