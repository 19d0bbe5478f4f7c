//! Keys with rate limits: the control plane counts every request while it answers (its
//! 429s reach the client; those for requests or tokens are cached until the window has
//! room, a parallel one is not); while it does not, each worker holds a stale allow to
//! its share of the key's limits.

use super::mock::*;
use super::*;
use crate::decision::DenyReason;
use livegate_contract::RateLimited;
use livegate_contract::{BudgetScope, LimitKind, RateLimits};

const T0: u64 = 1_000_000;

fn limits(rpm: Option<u64>, tpm: Option<u64>) -> RateLimits {
    RateLimits {
        rpm_limit: rpm,
        tpm_limit: tpm,
        max_parallel_requests: None,
    }
}

fn parallel(n: u64) -> RateLimits {
    RateLimits {
        max_parallel_requests: Some(n),
        ..RateLimits::default()
    }
}

fn limited_allow(limits: RateLimits) -> String {
    allow_body_limited(ModelAccess::default(), limits)
}

fn limited(reset_at_ms: u64) -> RateLimited {
    RateLimited {
        kind: LimitKind::Requests,
        scope: BudgetScope::Team,
        team_id: Some("t1".into()),
        user_id: None,
        model: None,
        limit: 10,
        reset_at_ms,
    }
}

fn rate_limited_body(reset_at_ms: u64) -> String {
    let answer = livegate_contract::AuthCheckResponse::rate_limited(limited(reset_at_ms));
    serde_json::to_string(&answer).unwrap()
}

/// A keyed request at `now` that the control plane answers with `status` and `body`.
fn asked(p: &Rc<Plugin>, now: u64, status: &str, body: &str) -> (MockHost, Verdict) {
    let host = keyed("/v1/models");
    let mut flow = RequestFlow::new(p.clone());
    assert_eq!(flow.on_request_headers(&host, Some(now)), Verdict::Stop);
    assert_eq!(
        host.dispatched.borrow().len(),
        1,
        "the control plane is asked"
    );
    let verdict = respond(&mut flow, &host, status, body, now);
    (host, verdict)
}

/// A keyed request at `now` while no control plane answers (the check is reset).
fn in_outage(p: &Rc<Plugin>, now: u64) -> (MockHost, Verdict) {
    let host = keyed("/v1/models");
    let mut flow = RequestFlow::new(p.clone());
    assert_eq!(flow.on_request_headers(&host, Some(now)), Verdict::Stop);
    let verdict = reset(&mut flow, &host, now);
    (host, verdict)
}

#[test]
fn a_429_from_the_control_plane_reaches_the_client_with_its_headers() {
    let p = plugin(Config::default());
    let (host, verdict) = asked(&p, T0, "429", &rate_limited_body(T0 + 1_500));
    assert_eq!(verdict, Verdict::Stop);
    let reply = host.last_reply().unwrap();
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("2"));
    assert_eq!(reply.header("x-ratelimit-limit-requests"), Some("10"));
    assert_eq!(reply.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(reply.header("x-ratelimit-reset-requests"), Some("2s"));
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        body["error"],
        serde_json::to_value(limited(0).error()).unwrap()
    );
    assert_eq!(host.count(Metric::DeniedRateLimited), 1);
    assert_eq!(host.count(Metric::RateLimitedLocal), 0);
}

fn parallel_body(reset_at_ms: u64) -> String {
    let answer = livegate_contract::AuthCheckResponse::rate_limited(RateLimited {
        kind: LimitKind::Parallel,
        scope: BudgetScope::Key,
        team_id: None,
        user_id: None,
        model: None,
        limit: 3,
        reset_at_ms,
    });
    serde_json::to_string(&answer).unwrap()
}

/// The reply was a parallel 429: `retry-after: 1` alone, no `x-ratelimit-*` (OpenAI has
/// none for it). Its `error` object.
fn parallel_429(host: &MockHost) -> serde_json::Value {
    let reply = host.last_reply().unwrap();
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert!(reply
        .headers
        .iter()
        .all(|(n, _)| !n.starts_with("x-ratelimit-")));
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body["error"]["param"], "max_parallel_requests");
    body["error"].clone()
}

#[test]
fn a_parallel_429_reaches_the_client_with_retry_after_alone_and_is_not_cached() {
    let p = plugin(Config::default());
    let (host, verdict) = asked(&p, T0, "429", &parallel_body(T0 + 1_000));
    assert_eq!(verdict, Verdict::Stop);
    let error = parallel_429(&host);
    assert!(error["message"]
        .as_str()
        .is_some_and(|m| m.contains("max_parallel_requests: 3")));
    assert_eq!(host.count(Metric::DeniedRateLimited), 1);
    // A slot may free at any moment: the next request asks again, and may be admitted.
    let (host, verdict) = asked(&p, T0 + 1, "200", &limited_allow(parallel(3)));
    assert_eq!(verdict, Verdict::Continue);
    assert_eq!(host.count(Metric::CacheMiss), 1);
}

#[test]
fn a_key_with_limits_asks_the_control_plane_on_every_request() {
    let p = plugin(Config::default());
    for i in 0..3 {
        let (host, verdict) = asked(&p, T0 + i, "200", &limited_allow(limits(Some(10), None)));
        assert_eq!(verdict, Verdict::Continue);
        assert_eq!(host.count(Metric::CacheMiss), 1);
        assert_eq!(host.count(Metric::Allowed), 1);
    }
}

#[test]
fn a_key_with_only_a_parallel_limit_asks_the_control_plane_on_every_request() {
    let p = plugin(Config::default());
    for i in 0..3 {
        let (host, verdict) = asked(&p, T0 + i, "200", &limited_allow(parallel(2)));
        assert_eq!(verdict, Verdict::Continue);
        assert_eq!(host.count(Metric::CacheMiss), 1);
    }
}

#[test]
fn a_key_without_limits_is_still_admitted_from_the_cache() {
    let p = plugin(Config::default());
    asked(&p, T0, "200", &allow_body());
    let host = keyed("/v1/models");
    let mut flow = RequestFlow::new(p);
    assert_eq!(
        flow.on_request_headers(&host, Some(T0 + 1)),
        Verdict::Continue
    );
    assert!(host.dispatched.borrow().is_empty());
}

#[test]
fn a_cached_429_is_served_until_its_reset_then_the_control_plane_is_asked_again() {
    let p = plugin(Config::default());
    let reset_at = T0 + 20_000;
    asked(&p, T0, "429", &rate_limited_body(reset_at));
    for now in [T0 + 1, reset_at - 1] {
        let host = keyed("/v1/models");
        let mut flow = RequestFlow::new(p.clone());
        assert_eq!(flow.on_request_headers(&host, Some(now)), Verdict::Stop);
        assert!(host.dispatched.borrow().is_empty(), "served from the cache");
        let reply = host.last_reply().unwrap();
        assert_eq!(reply.status, 429);
        let wait = reset_at.saturating_sub(now).div_ceil(1000).max(1);
        assert_eq!(reply.header("retry-after"), Some(wait.to_string().as_str()));
        assert_eq!(host.count(Metric::CacheHit), 1);
        assert_eq!(host.count(Metric::DeniedRateLimited), 1);
    }
    let (host, verdict) = asked(&p, reset_at, "200", &limited_allow(limits(Some(10), None)));
    assert_eq!(verdict, Verdict::Continue);
    assert_eq!(host.count(Metric::Allowed), 1);
}

#[test]
fn a_change_to_the_key_drops_its_cached_429() {
    let p = plugin(Config::default());
    asked(&p, T0, "429", &rate_limited_body(T0 + 50_000));
    let change = livegate_contract::KeyChange {
        seq: 9,
        key_hash: KeyHash::of_raw(KEY),
        status: livegate_contract::KeyStatus::Active,
    };
    p.with_cache(|c| c.apply_change(&change, T0 + 1));
    asked(&p, T0 + 2, "200", &limited_allow(limits(Some(100), None)));
}

#[test]
fn a_rate_limited_429_without_its_limit_is_an_error_and_is_not_cached() {
    let p = plugin(Config::default());
    let (host, verdict) = asked(&p, T0, "429", &deny_body(DenyReason::RateLimited));
    assert_eq!(verdict, Verdict::Stop);
    assert_eq!(host.last_reply().map(|r| r.status), Some(503));
    assert_eq!(host.count(Metric::ControlPlaneError), 1);
    assert_eq!(host.count(Metric::DeniedRateLimited), 0);
    asked(&p, T0 + 1, "200", &allow_body());
}

#[test]
fn in_an_outage_a_limited_key_gets_its_share_then_a_429_until_the_window_has_room() {
    // rpm 10 at the default share of 0.25: max(1, ⌊2.5⌋) = 2 per worker per 60 s.
    let p = plugin(Config::default());
    asked(&p, T0, "200", &limited_allow(limits(Some(10), None)));
    let start = T0 + 1_000;
    for now in [start, start + 500] {
        let (host, verdict) = in_outage(&p, now);
        assert_eq!(verdict, Verdict::Continue, "admitted at {now}");
        assert_eq!(host.header("x-livegate-stale").as_deref(), Some("true"));
        assert_eq!(host.count(Metric::StaleServed), 1);
    }
    let (host, verdict) = in_outage(&p, start + 2_000);
    assert_eq!(verdict, Verdict::Stop);
    let reply = host.last_reply().unwrap();
    assert_eq!(reply.status, 429);
    // Both local admissions fall in one second of the window and leave it together, with
    // the later of them, at start + 60.5 s: 58.5 s from now.
    assert_eq!(reply.header("retry-after"), Some("59"));
    assert_eq!(reply.header("x-ratelimit-limit-requests"), Some("2"));
    assert_eq!(reply.header("x-ratelimit-reset-requests"), Some("59s"));
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(host.count(Metric::RateLimitedLocal), 1);
    assert_eq!(host.count(Metric::DeniedRateLimited), 1);
    assert_eq!(host.count(Metric::StaleServed), 0);
    assert_eq!(host.count(Metric::ControlPlaneError), 1);

    let (_, verdict) = in_outage(&p, start + 60_500 - 1);
    assert_eq!(verdict, Verdict::Stop);
    let (_, verdict) = in_outage(&p, start + 60_500);
    assert_eq!(verdict, Verdict::Continue, "the window has room again");
}

#[test]
fn admissions_by_the_control_plane_do_not_count_toward_the_outage_limit() {
    let p = plugin(Config::default());
    for i in 0..5 {
        asked(&p, T0 + i, "200", &limited_allow(limits(Some(4), None)));
    }
    let (_, verdict) = in_outage(&p, T0 + 10);
    assert_eq!(
        verdict,
        Verdict::Continue,
        "max(1, ⌊0.25 × 4⌋) = 1 is still free"
    );
    let (host, verdict) = in_outage(&p, T0 + 11);
    assert_eq!(verdict, Verdict::Stop);
    assert_eq!(host.last_reply().map(|r| r.status), Some(429));
}

#[test]
fn in_an_outage_a_key_without_limits_is_served_stale_without_a_count() {
    let p = plugin(Config::default());
    asked(&p, T0, "200", &allow_body());
    for i in 0..50 {
        let (host, verdict) = in_outage(&p, T0 + 60_000 + i);
        assert_eq!(verdict, Verdict::Continue);
        assert_eq!(host.count(Metric::RateLimitedLocal), 0);
    }
    assert!(p.with_local(|l| l.is_empty()).unwrap());
}

#[test]
fn the_outage_share_is_configured() {
    let config = Config::parse(Some(br#"{"rate_limits": {"outage_share": 0.5}}"#)).unwrap();
    let p = plugin(config);
    asked(&p, T0, "200", &limited_allow(limits(Some(4), None)));
    for i in 0..2 {
        assert_eq!(in_outage(&p, T0 + 1 + i).1, Verdict::Continue);
    }
    assert_eq!(in_outage(&p, T0 + 3).1, Verdict::Stop);
}

/// An admitted request of the key whose response reports `total` tokens, at `now`.
fn metered(p: &Rc<Plugin>, now: u64, total: u64, outage: bool) -> Verdict {
    let host = MockHost::request(
        "GET",
        "/v1/models",
        &[("authorization", "Bearer sk-test"), ("x-request-id", "r-1")],
    );
    let mut flow = RequestFlow::new(p.clone());
    flow.on_request_headers(&host, Some(now));
    let verdict = if outage {
        reset(&mut flow, &host, now)
    } else {
        let body = limited_allow(limits(None, Some(100)));
        respond(&mut flow, &host, "200", &body, now)
    };
    if verdict == Verdict::Continue {
        *host.response_headers.borrow_mut() = vec![
            (":status".into(), b"200".to_vec()),
            ("content-type".into(), b"application/json".to_vec()),
        ];
        flow.on_response_headers(&host, false, Some(now));
        let usage = format!(
            r#"{{"usage": {{"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": {total}}}}}"#
        );
        *host.response_chunk.borrow_mut() = usage.into_bytes();
        flow.on_response_body(&host, true, Some(now + 100));
    }
    verdict
}

#[test]
fn in_an_outage_the_tokens_this_worker_metered_hold_the_key_to_its_share_of_tpm() {
    // tpm 100 at 0.25: refused once this worker metered 25 tokens in the window.
    let p = plugin(Config::default());
    assert_eq!(metered(&p, T0, 20, false), Verdict::Continue);
    assert_eq!(metered(&p, T0 + 1_000, 4, true), Verdict::Continue);
    assert_eq!(metered(&p, T0 + 2_000, 1, true), Verdict::Continue);
    let (host, verdict) = in_outage(&p, T0 + 3_000);
    assert_eq!(verdict, Verdict::Stop);
    let reply = host.last_reply().unwrap();
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("x-ratelimit-limit-tokens"), Some("25"));
    assert_eq!(reply.header("x-ratelimit-remaining-tokens"), Some("0"));
    // The 20 tokens metered at T0 leave the window at T0 + 60 s.
    assert_eq!(reply.header("retry-after"), Some("57"));
    assert_eq!(in_outage(&p, T0 + 60_000).1, Verdict::Continue);
}

/// This worker's requests of the test key in flight now.
fn in_flight(p: &Rc<Plugin>) -> u64 {
    p.with_local(|l| l.in_flight(&KeyHash::of_raw(KEY)))
        .unwrap()
}

/// A keyed request at `now` while no control plane answers, kept open (its flow alive).
fn open_in_outage(p: &Rc<Plugin>, now: u64) -> (RequestFlow, MockHost, Verdict) {
    let host = keyed("/v1/models");
    let mut flow = RequestFlow::new(p.clone());
    assert_eq!(flow.on_request_headers(&host, Some(now)), Verdict::Stop);
    let verdict = reset(&mut flow, &host, now);
    (flow, host, verdict)
}

/// The upstream's whole response, then the stream's end, as Envoy reports them.
fn complete(flow: &mut RequestFlow, host: &MockHost, now: u64) {
    *host.response_headers.borrow_mut() = vec![(":status".into(), b"200".to_vec())];
    flow.on_response_headers(host, true, Some(now));
    flow.on_done(host, Some(now));
}

#[test]
fn in_an_outage_a_worker_holds_its_share_of_parallel_requests_until_one_ends() {
    // max_parallel_requests 8 at the default share of 0.25: max(1, ⌊2⌋) = 2 in flight.
    let p = plugin(Config::default());
    asked(&p, T0, "200", &limited_allow(parallel(8)));
    assert_eq!(in_flight(&p), 0, "the allow's own request has ended");
    let (mut first, first_host, verdict) = open_in_outage(&p, T0 + 1_000);
    assert_eq!(verdict, Verdict::Continue);
    assert_eq!(first_host.count(Metric::StaleServed), 1);
    let (mut second, second_host, verdict) = open_in_outage(&p, T0 + 1_001);
    assert_eq!(verdict, Verdict::Continue);
    assert_eq!(in_flight(&p), 2);

    let (_third, host, verdict) = open_in_outage(&p, T0 + 1_002);
    assert_eq!(verdict, Verdict::Stop);
    let error = parallel_429(&host);
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("max_parallel_requests: 2"));
    assert_eq!(host.count(Metric::RateLimitedLocal), 1);
    assert_eq!(host.count(Metric::DeniedRateLimited), 1);
    assert_eq!(host.count(Metric::StaleServed), 0);
    assert_eq!(in_flight(&p), 2, "the refused request holds no slot");

    // The response's end gives the slot back, before the stream's.
    *first_host.response_headers.borrow_mut() = vec![(":status".into(), b"200".to_vec())];
    first.on_response_headers(&first_host, false, Some(T0 + 1_500));
    assert_eq!(in_flight(&p), 2);
    first.on_response_body(&first_host, true, Some(T0 + 2_000));
    assert_eq!(in_flight(&p), 1);
    first.on_done(&first_host, Some(T0 + 2_000));
    assert_eq!(in_flight(&p), 1);
    let (mut fourth, fourth_host, verdict) = open_in_outage(&p, T0 + 2_001);
    assert_eq!(verdict, Verdict::Continue, "a slot is free again");
    complete(&mut second, &second_host, T0 + 3_000);
    complete(&mut fourth, &fourth_host, T0 + 3_000);
    assert_eq!(in_flight(&p), 0);
}

#[test]
fn requests_the_control_plane_admitted_hold_the_outage_limit_while_in_flight() {
    let p = plugin(Config::default());
    let mut open = Vec::new();
    for i in 0..2 {
        let host = keyed("/v1/models");
        let mut flow = RequestFlow::new(p.clone());
        flow.on_request_headers(&host, Some(T0 + i));
        let body = limited_allow(parallel(8));
        assert_eq!(
            respond(&mut flow, &host, "200", &body, T0 + i),
            Verdict::Continue
        );
        open.push((flow, host));
    }
    assert_eq!(in_flight(&p), 2);
    let (_, host, verdict) = open_in_outage(&p, T0 + 10);
    assert_eq!(verdict, Verdict::Stop);
    assert_eq!(host.last_reply().map(|r| r.status), Some(429));
    for (mut flow, host) in open {
        complete(&mut flow, &host, T0 + 20);
    }
    assert_eq!(in_flight(&p), 0);
    assert_eq!(open_in_outage(&p, T0 + 30).2, Verdict::Continue);
}

#[test]
fn a_request_refused_after_its_admission_gives_its_slot_back_at_once() {
    let p = plugin(Config::default());
    let access = ModelAccess {
        models: vec!["gpt-4o".into()],
        ..ModelAccess::default()
    };
    let host = keyed("/v1/chat/completions");
    *host.body.borrow_mut() = br#"{"model": "claude-3"}"#.to_vec();
    let mut flow = RequestFlow::new(p.clone());
    assert_eq!(flow.on_request_headers(&host, Some(T0)), Verdict::Stop);
    let body = allow_body_limited(access, parallel(1));
    assert_eq!(respond(&mut flow, &host, "200", &body, T0), Verdict::Stop);
    assert_eq!(in_flight(&p), 1, "admitted, waiting for its body");
    assert_eq!(flow.on_request_body(&host, true), Verdict::Stop);
    assert_eq!(host.last_reply().map(|r| r.status), Some(401));
    assert_eq!(in_flight(&p), 0, "refused by its model");
    // Envoy then passes the local reply back through the filter, and ends the stream.
    complete(&mut flow, &host, T0 + 1);
    assert_eq!(in_flight(&p), 0);
}

#[test]
fn a_client_that_goes_away_gives_its_slot_back() {
    let p = plugin(Config::default());
    // Gone while the filter waited for the body on a model route.
    let host = keyed("/v1/chat/completions");
    let mut waiting = RequestFlow::new(p.clone());
    waiting.on_request_headers(&host, Some(T0));
    let body = limited_allow(parallel(4));
    assert_eq!(
        respond(&mut waiting, &host, "200", &body, T0),
        Verdict::Stop
    );
    // Gone mid-response, its request already upstream.
    let upstream = keyed("/v1/models");
    let mut streaming = RequestFlow::new(p.clone());
    streaming.on_request_headers(&upstream, Some(T0));
    assert_eq!(
        respond(&mut streaming, &upstream, "200", &body, T0),
        Verdict::Continue
    );
    *upstream.response_headers.borrow_mut() = vec![(":status".into(), b"200".to_vec())];
    streaming.on_response_headers(&upstream, false, Some(T0 + 1));
    assert_eq!(in_flight(&p), 2);

    waiting.on_done(&host, Some(T0 + 2));
    streaming.on_done(&upstream, Some(T0 + 2));
    assert_eq!(in_flight(&p), 0);
    // An end reported twice, or the contexts dropped after it, give nothing more back.
    streaming.on_response_body(&upstream, true, Some(T0 + 3));
    waiting.on_done(&host, Some(T0 + 3));
    drop((waiting, streaming));
    assert_eq!(in_flight(&p), 0);
}

#[test]
fn a_client_that_goes_away_before_the_answer_never_holds_a_slot() {
    let p = plugin(Config::default());
    let host = keyed("/v1/models");
    let mut flow = RequestFlow::new(p.clone());
    flow.on_request_headers(&host, Some(T0));
    flow.on_done(&host, Some(T0 + 1));
    let body = limited_allow(parallel(4));
    assert_eq!(
        respond(&mut flow, &host, "200", &body, T0 + 2),
        Verdict::Stop
    );
    assert_eq!(in_flight(&p), 0);
}

#[test]
fn a_flow_dropped_without_its_end_gives_its_slot_back() {
    let p = plugin(Config::default());
    let (flow, _host, verdict) = open_in_outage(&p, T0);
    assert_eq!(verdict, Verdict::Stop, "no stale allow yet: a 503");
    drop(flow);
    asked(&p, T0, "200", &limited_allow(parallel(4)));
    let (flow, _host, verdict) = open_in_outage(&p, T0 + 1);
    assert_eq!(verdict, Verdict::Continue);
    assert_eq!(in_flight(&p), 1);
    drop(flow);
    assert_eq!(in_flight(&p), 0);
}

/// A chat completion of a key with `limits`, its request id set, that the control plane
/// admits; the body names `model`.
fn admitted_chat(
    p: &Rc<Plugin>,
    access: ModelAccess,
    limits: RateLimits,
) -> (RequestFlow, MockHost) {
    let host = MockHost::request(
        "POST",
        "/v1/chat/completions",
        &[("authorization", "Bearer sk-test"), ("x-request-id", "r-9")],
    );
    *host.body.borrow_mut() = br#"{"model": "claude-3"}"#.to_vec();
    let mut flow = RequestFlow::new(p.clone());
    assert_eq!(flow.on_request_headers(&host, Some(T0)), Verdict::Stop);
    let body = allow_body_limited(access, limits);
    assert_eq!(respond(&mut flow, &host, "200", &body, T0), Verdict::Stop);
    (flow, host)
}

fn only_gpt() -> ModelAccess {
    ModelAccess {
        models: vec!["gpt-4o".into()],
        ..ModelAccess::default()
    }
}

#[test]
fn a_parallel_key_refused_after_its_admission_still_reports_its_end() {
    // The control plane counted it: its record (the refusal's status, no usage) frees the slot.
    let p = plugin(Config::default());
    let (mut flow, host) = admitted_chat(&p, only_gpt(), parallel(2));
    assert_eq!(flow.on_request_body(&host, true), Verdict::Stop);
    assert_eq!(host.last_reply().map(|r| r.status), Some(401));
    let records = super::metering_tests::queued(&p);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].request_id, "r-9");
    assert_eq!(records[0].status, 401);
    assert!(!records[0].usage_known);
    flow.on_done(&host, Some(T0 + 1));
    assert_eq!(p.with_spend(|q| q.len()), Some(1), "reported once");
}

#[test]
fn a_parallel_key_abandoned_before_its_answer_still_reports_its_end() {
    let p = plugin(Config::default());
    let (mut flow, host) = admitted_chat(&p, ModelAccess::default(), parallel(2));
    flow.on_done(&host, Some(T0 + 1));
    let records = super::metering_tests::queued(&p);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, 0, "no answer came");
}

#[test]
fn a_key_without_a_parallel_limit_refused_after_its_admission_leaves_no_record() {
    let p = plugin(Config::default());
    let (mut flow, host) = admitted_chat(&p, only_gpt(), limits(Some(10), None));
    assert_eq!(flow.on_request_body(&host, true), Verdict::Stop);
    assert_eq!(host.last_reply().map(|r| r.status), Some(401));
    flow.on_done(&host, Some(T0 + 1));
    assert!(super::metering_tests::queued(&p).is_empty());
}
