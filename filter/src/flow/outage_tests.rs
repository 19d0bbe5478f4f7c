//! The request flow while the control plane cannot answer: stale allows, fail open or closed, never a 200 for an unknown key.

use super::mock::*;
use super::*;
use crate::config::FailureMode;
use crate::decision::DenyReason;

#[test]
fn an_unknown_key_during_an_outage_is_a_503_never_a_200() {
    let host = keyed("/v1/models");
    let mut flow = RequestFlow::new(plugin(Config::default()));
    flow.on_request_headers(&host, Some(0));
    assert_eq!(reset(&mut flow, &host, 0), Verdict::Stop);
    let reply = host.last_reply().expect("a reply");
    assert_eq!(reply.status, 503);
    assert!(reply.headers.contains(&("retry-after", "5".to_string())));
    assert_eq!(host.count(Metric::ControlPlaneError), 1);
    assert_eq!(host.count(Metric::Unavailable), 1);
}

#[test]
fn a_refused_dispatch_is_an_error_not_a_deny() {
    let mut host = keyed("/v1/models");
    host.refuse_dispatch = true;
    let mut flow = RequestFlow::new(plugin(Config::default()));
    assert_eq!(flow.on_request_headers(&host, Some(0)), Verdict::Stop);
    assert_eq!(host.last_reply().map(|r| r.status), Some(503));
    assert_eq!(host.count(Metric::ControlPlaneError), 1);
}

#[test]
fn a_known_key_is_served_stale_and_marked_when_the_control_plane_fails() {
    let p = plugin(Config::default());
    allow_once(&p, 0);
    let host = keyed("/v1/models");
    let mut flow = RequestFlow::new(p);
    let later = 60_000 + 299_999; // expired, still inside the stale window
    assert_eq!(flow.on_request_headers(&host, Some(later)), Verdict::Stop);
    assert_eq!(
        respond(&mut flow, &host, "503", "{}", later),
        Verdict::Continue
    );
    assert_eq!(host.header("x-livegate-stale").as_deref(), Some("true"));
    assert_eq!(host.header("x-livegate-key-alias").as_deref(), Some("ci"));
    assert_eq!(host.header("authorization"), None);
    assert_eq!(host.count(Metric::StaleServed), 1);
}

#[test]
fn a_stale_entry_past_its_window_is_not_served() {
    let p = plugin(Config::default());
    allow_once(&p, 0);
    let host = keyed("/v1/models");
    let mut flow = RequestFlow::new(p);
    let too_late = 60_000 + 300_000;
    flow.on_request_headers(&host, Some(too_late));
    assert_eq!(reset(&mut flow, &host, too_late), Verdict::Stop);
    assert_eq!(host.last_reply().map(|r| r.status), Some(503));
}

#[test]
fn a_key_blocked_after_an_allow_is_not_served_stale() {
    let p = plugin(Config::default());
    allow_once(&p, 0);
    let host = keyed("/v1/models");
    let mut flow = RequestFlow::new(p.clone());
    flow.on_request_headers(&host, Some(70_000));
    respond(
        &mut flow,
        &host,
        "403",
        &deny_body(DenyReason::KeyBlocked),
        70_000,
    );
    let host = keyed("/v1/models");
    let mut flow = RequestFlow::new(p);
    flow.on_request_headers(&host, Some(80_000));
    assert_eq!(reset(&mut flow, &host, 80_000), Verdict::Stop);
    assert_eq!(host.last_reply().map(|r| r.status), Some(503));
}

#[test]
fn failing_open_lets_an_unknown_key_through_marked_and_anonymous() {
    let config = Config {
        failure_mode: FailureMode::Open,
        upstream_authorization: Some("Bearer upstream".into()),
        ..Config::default()
    };
    let host = keyed("/v1/models");
    let mut flow = RequestFlow::new(plugin(config));
    flow.on_request_headers(&host, Some(0));
    assert_eq!(reset(&mut flow, &host, 0), Verdict::Continue);
    assert_eq!(
        host.header("x-livegate-failure-mode").as_deref(),
        Some("open")
    );
    assert_eq!(host.header("x-livegate-key-hash"), None);
    assert_eq!(
        host.header("authorization").as_deref(),
        Some("Bearer upstream")
    );
    assert_eq!(host.count(Metric::FailedOpen), 1);
    assert!(host.replies.borrow().is_empty());
}

#[test]
fn failing_open_still_prefers_a_stale_identity() {
    let config = Config {
        failure_mode: FailureMode::Open,
        ..Config::default()
    };
    let p = plugin(config);
    allow_once(&p, 0);
    let host = keyed("/v1/models");
    let mut flow = RequestFlow::new(p);
    flow.on_request_headers(&host, Some(70_000));
    assert_eq!(reset(&mut flow, &host, 70_000), Verdict::Continue);
    assert_eq!(host.header("x-livegate-stale").as_deref(), Some("true"));
    assert_eq!(host.header("x-livegate-failure-mode"), None);
    assert_eq!(host.count(Metric::FailedOpen), 0);
}

#[test]
fn a_malformed_allow_is_an_error_and_is_not_cached() {
    let p = plugin(Config::default());
    let host = keyed("/v1/models");
    let mut flow = RequestFlow::new(p.clone());
    flow.on_request_headers(&host, Some(0));
    assert_eq!(
        respond(&mut flow, &host, "200", "not json", 0),
        Verdict::Stop
    );
    assert_eq!(host.last_reply().map(|r| r.status), Some(503));
    let again = keyed("/v1/models");
    RequestFlow::new(p).on_request_headers(&again, Some(1));
    assert_eq!(again.dispatched.borrow().len(), 1);
}
