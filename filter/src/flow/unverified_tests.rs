//! The worker's budget for bodies held while their keys are checked, through the flow.

use super::mock::*;
use super::*;
use crate::decision::DenyReason;

/// A worker that holds at most 100 bytes of bodies for checks in flight.
fn budget_of_100() -> Rc<Plugin> {
    plugin(Config {
        max_unverified_body_bytes: 100,
        ..Config::default()
    })
}

/// A request with `key` whose check is in flight, holding `bytes` of its body.
fn awaiting(plugin: &Rc<Plugin>, key: &str, bytes: usize) -> (MockHost, RequestFlow, Verdict) {
    let bearer = format!("Bearer {key}");
    let host = MockHost::request("POST", "/v1/models", &[("authorization", &bearer)]);
    let mut flow = RequestFlow::new(plugin.clone());
    assert_eq!(flow.on_request_headers(&host, Some(0)), Verdict::Stop);
    assert!(flow.pending_check().is_some(), "a check is in flight");
    *host.body.borrow_mut() = vec![b'x'; bytes];
    let verdict = flow.on_request_body(&host, false);
    (host, flow, verdict)
}

#[test]
fn a_body_past_the_workers_budget_is_shed_before_its_key_is_known() {
    let p = budget_of_100();
    let (first, _held, verdict) = awaiting(&p, "sk-stranger", 60);
    assert_eq!(verdict, Verdict::Stop);
    assert!(first.replies.borrow().is_empty(), "within the budget: held");
    let (host, _flow, verdict) = awaiting(&p, KEY, 41);
    assert_eq!(verdict, Verdict::Stop);
    let reply = host.last_reply().expect("shed at once");
    assert_eq!(reply.status, 503);
    assert!(
        reply.body.contains("unverified_bodies_full"),
        "{}",
        reply.body
    );
    assert_eq!(reply.header("retry-after"), Some("5"));
    assert_eq!(host.count(Metric::UnverifiedBodyShed), 1);
    assert_eq!(
        p.unverified_body_bytes(),
        60,
        "the shed body counts nothing"
    );
}

#[test]
fn a_shed_request_is_answered_once_and_its_checks_late_answer_changes_nothing() {
    let p = budget_of_100();
    let (_stranger_host, _stranger, _) = awaiting(&p, "sk-stranger", 60);
    let (host, mut shed, _) = awaiting(&p, KEY, 41);
    assert_eq!(
        respond(&mut shed, &host, "200", &allow_body(), 0),
        Verdict::Stop
    );
    assert_eq!(host.replies.borrow().len(), 1, "answered once: the 503");
    assert_eq!(host.count(Metric::Allowed), 0);
    assert_eq!(p.unverified_body_bytes(), 60);
}

#[test]
fn the_budget_is_given_back_when_the_check_answers_when_the_stream_ends_or_is_dropped() {
    let p = budget_of_100();
    let (host, mut answered, _) = awaiting(&p, "sk-a", 60);
    respond(
        &mut answered,
        &host,
        "401",
        &deny_body(DenyReason::InvalidKey),
        0,
    );
    assert_eq!(p.unverified_body_bytes(), 0, "decided");
    let (host, mut ended, _) = awaiting(&p, "sk-b", 60);
    ended.on_done(&host, Some(0));
    assert_eq!(p.unverified_body_bytes(), 0, "ended");
    let (_host, dropped, _) = awaiting(&p, "sk-c", 60);
    drop(dropped);
    assert_eq!(p.unverified_body_bytes(), 0, "dropped");
}

#[test]
fn a_growing_body_counts_its_growth_and_one_body_alone_may_exceed_the_budget() {
    let p = budget_of_100();
    let (host, mut flow, _) = awaiting(&p, "sk-big", 60);
    *host.body.borrow_mut() = vec![b'x'; 1000];
    assert_eq!(flow.on_request_body(&host, true), Verdict::Stop);
    assert!(
        host.replies.borrow().is_empty(),
        "alone: held whole, checked"
    );
    assert_eq!(p.unverified_body_bytes(), 1000);
    respond(&mut flow, &host, "200", &allow_body(), 0);
    assert_eq!(p.unverified_body_bytes(), 0);
}
