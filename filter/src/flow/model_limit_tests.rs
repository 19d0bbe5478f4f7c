//! Per-model limits: a request whose resolved model has one is checked again with that
//! model; the control plane's 429 names it and is not cached for the key; with no
//! answer, the worker holds the key×model to its outage share.

use super::mock::*;
use super::{RequestFlow, Verdict};
use crate::config::Config;
use crate::metrics::Metric;
use livegate_contract::{
    Allow, AuthCheckResponse, BudgetScope, KeyHash, LimitKind, ModelAccess, ModelLimits,
    RateLimited, RateLimits,
};

const CHAT: &str = "/v1/chat/completions";
const NOW: u64 = 1_000_000;

fn per_model(model: &str, rpm: u64) -> ModelLimits {
    let mut limits = ModelLimits::new();
    let entry = RateLimits {
        rpm_limit: Some(rpm),
        ..RateLimits::default()
    };
    limits.insert(model.to_owned(), entry);
    limits
}

fn allow_with(access: ModelAccess, model_limits: ModelLimits) -> String {
    let answer = AuthCheckResponse::Allow(Allow {
        key_hash: KeyHash::of_raw(KEY),
        key_alias: None,
        team_id: None,
        user_id: None,
        cache_ttl_seconds: 60,
        expires_at_ms: None,
        version: 1,
        access,
        limits: RateLimits::default(),
        model_limits,
        lease: None,
    });
    serde_json::to_string(&answer).unwrap()
}

fn model_429(model: &str) -> String {
    let limited = RateLimited {
        kind: LimitKind::Requests,
        scope: BudgetScope::Key,
        team_id: None,
        user_id: None,
        model: Some(model.to_owned()),
        limit: 2,
        reset_at_ms: NOW + 3_000,
    };
    serde_json::to_string(&AuthCheckResponse::rate_limited(limited)).unwrap()
}

/// A chat request with `body`, its key allowed with `allow` (by the control plane, or
/// from the cache): the flow once the key is admitted and its body read.
fn admitted(p: &std::rc::Rc<super::Plugin>, body: &str, allow: &str) -> (MockHost, RequestFlow) {
    let host = keyed(CHAT);
    *host.body.borrow_mut() = body.as_bytes().to_vec();
    let mut flow = RequestFlow::new(p.clone());
    assert_eq!(flow.on_request_headers(&host, Some(NOW)), Verdict::Stop);
    let verdict = flow.on_request_body(&host, true);
    if flow.pending_check().is_some() {
        assert_eq!(verdict, Verdict::Stop);
        let _ = respond(&mut flow, &host, "200", allow, NOW);
    }
    (host, flow)
}

fn aliased(alias: &str, model: &str) -> ModelAccess {
    let mut access = ModelAccess::default();
    access.aliases.insert(alias.to_owned(), model.to_owned());
    access
}

#[test]
fn a_model_with_a_limit_is_checked_again_with_the_model_it_resolved_to() {
    let p = plugin(Config::default());
    let allow = allow_with(aliased("fast", "gpt-4o"), per_model("gpt-4o", 2));
    let (host, mut flow) = admitted(&p, r#"{"model": "fast"}"#, &allow);
    let dispatched = host.dispatched.borrow().clone();
    assert_eq!(dispatched.len(), 2, "the key's check, then the model's");
    assert_eq!(dispatched[0].model, None);
    assert_eq!(dispatched[1].model.as_deref(), Some("gpt-4o"));
    assert!(host.replies.borrow().is_empty(), "held for the answer");
    assert_eq!(
        respond(&mut flow, &host, "200", &allow, NOW),
        Verdict::Continue
    );
    assert_eq!(host.count(Metric::Allowed), 1);
    let body = String::from_utf8(host.body.borrow().clone()).unwrap();
    assert!(
        body.contains("\"gpt-4o\""),
        "the alias is still resolved: {body}"
    );
}

#[test]
fn a_spelling_of_the_model_in_another_case_is_checked_as_the_model() {
    let p = plugin(Config::default());
    let allow = allow_with(ModelAccess::default(), per_model("gpt-4o", 2));
    let (host, _flow) = admitted(&p, r#"{"model": " GPT-4o "}"#, &allow);
    let dispatched = host.dispatched.borrow().clone();
    assert_eq!(dispatched.len(), 2, "checked for the limit of gpt-4o");
    assert_eq!(dispatched[1].model.as_deref(), Some("gpt-4o"));
}

#[test]
fn another_model_goes_on_without_a_second_check() {
    let p = plugin(Config::default());
    let allow = allow_with(ModelAccess::default(), per_model("gpt-4o", 2));
    let (host, _flow) = admitted(&p, r#"{"model": "gpt-4o-mini"}"#, &allow);
    assert_eq!(host.dispatched.borrow().len(), 1);
    assert_eq!(host.count(Metric::Allowed), 1);
}

#[test]
fn a_model_429_reaches_the_client_naming_the_model_and_leaves_the_key_uncached() {
    let p = plugin(Config::default());
    let allow = allow_with(ModelAccess::default(), per_model("gpt-4o", 2));
    let (host, mut flow) = admitted(&p, r#"{"model": "gpt-4o"}"#, &allow);
    assert_eq!(
        respond(&mut flow, &host, "429", &model_429("gpt-4o"), NOW),
        Verdict::Stop
    );
    let reply = host.last_reply().unwrap();
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("3"));
    assert_eq!(reply.header("x-ratelimit-limit-requests"), Some("2"));
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body["error"]["param"], "model_rpm_limit");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("model_per_key: gpt-4o"), "{message}");
    // Another model of the same key is served from the cached allow, unrefused.
    let (host, _flow) = admitted(&p, r#"{"model": "gpt-4o-mini"}"#, &allow);
    assert_eq!(host.count(Metric::CacheHit), 1);
    assert!(host.dispatched.borrow().is_empty());
    assert_eq!(host.count(Metric::Allowed), 1);
}

#[test]
fn with_no_answer_the_worker_holds_the_model_to_its_share() {
    let p = plugin(Config::default());
    let share = p.with_local(|l| l.local_limit(4)).unwrap();
    let allow = allow_with(ModelAccess::default(), per_model("gpt-4o", 4));
    let mut admitted_n: u64 = 0;
    for i in 0..10 {
        let (host, mut flow) = admitted(&p, r#"{"model": "gpt-4o"}"#, &allow);
        match reset(&mut flow, &host, NOW + i) {
            Verdict::Continue => admitted_n += 1,
            Verdict::Stop => {
                let reply = host.last_reply().unwrap();
                assert_eq!(reply.status, 429);
                let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
                assert!(body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("gpt-4o"));
            }
        }
    }
    assert_eq!(admitted_n, share);
    assert!(share < 10, "the outage share held some back");
}

#[test]
fn with_no_answer_and_no_stale_allow_the_model_check_fails_closed() {
    let mut config = Config::default();
    config.cache.stale_if_error_ms = 0;
    config.cache.allow_ttl_ms = 0;
    let p = plugin(config);
    let allow = allow_with(ModelAccess::default(), per_model("gpt-4o", 4));
    let (host, mut flow) = admitted(&p, r#"{"model": "gpt-4o"}"#, &allow);
    assert_eq!(host.dispatched.borrow().len(), 2);
    assert_eq!(reset(&mut flow, &host, NOW + 1), Verdict::Stop);
    assert_eq!(host.last_reply().unwrap().status, 503);
    assert_eq!(host.count(Metric::Allowed), 0);
}
