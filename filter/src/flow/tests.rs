//! The request flow's core paths: liveness, pass-through, the credential, the cache and the auth check's answers.

use super::mock::*;
use super::*;
use crate::decision::{CallResponse, DenyReason};

#[test]
fn liveness_is_answered_in_the_vm_without_dispatch() {
    let host = MockHost::request("GET", "/health/liveliness?x=1", &[]);
    let mut flow = RequestFlow::new(plugin(Config::default()));
    assert_eq!(flow.on_request_headers(&host, Some(0)), Verdict::Stop);
    let reply = host.last_reply().expect("a reply");
    assert_eq!((reply.status, reply.body.as_str()), (200, "\"I'm alive!\""));
    assert!(host.dispatched.borrow().is_empty());
    assert_eq!(host.count(Metric::LivenessServed), 1);
}

#[test]
fn a_post_to_liveness_is_refused_locally() {
    let host = MockHost::request("POST", "/health/liveness", &[]);
    let mut flow = RequestFlow::new(plugin(Config::default()));
    assert_eq!(flow.on_request_headers(&host, Some(0)), Verdict::Stop);
    assert_eq!(host.last_reply().map(|r| r.status), Some(405));
    assert_eq!(host.count(Metric::LivenessServed), 0);
}

#[test]
fn passthrough_keeps_credentials_but_drops_spoofed_livegate_headers() {
    let host = MockHost::request(
        "POST",
        "/key/generate",
        &[
            ("authorization", "Bearer master"),
            ("x-livegate-team-id", "evil"),
        ],
    );
    let mut flow = RequestFlow::new(plugin(Config::default()));
    assert_eq!(flow.on_request_headers(&host, Some(0)), Verdict::Continue);
    assert_eq!(
        host.header("authorization").as_deref(),
        Some("Bearer master")
    );
    assert_eq!(host.header("x-livegate-team-id"), None);
    assert!(host.dispatched.borrow().is_empty());
}

#[test]
fn a_raw_key_in_the_rotation_path_goes_on_as_its_hash() {
    let host = MockHost::request(
        "POST",
        "/key/sk-old-secret/regenerate",
        &[("authorization", "Bearer master")],
    );
    let mut flow = RequestFlow::new(plugin(Config::default()));
    assert_eq!(flow.on_request_headers(&host, Some(0)), Verdict::Continue);
    let hash = livegate_contract::KeyHash::of_raw("sk-old-secret");
    let expected = format!("/key/{}/regenerate", hash.as_str());
    assert_eq!(host.header(":path").as_deref(), Some(expected.as_str()));
}

#[test]
fn a_protected_path_without_a_key_is_a_401_and_nothing_is_dispatched() {
    let host = MockHost::request("GET", "/v1/models", &[]);
    let mut flow = RequestFlow::new(plugin(Config::default()));
    assert_eq!(flow.on_request_headers(&host, Some(0)), Verdict::Stop);
    assert_eq!(host.last_reply().map(|r| r.status), Some(401));
    assert!(host.dispatched.borrow().is_empty());
    assert_eq!(host.count(Metric::DeniedMissingCredential), 1);
}

#[test]
fn a_cache_miss_dispatches_the_contract_auth_check_and_holds_the_request() {
    let host = MockHost::request("POST", "/v1/chat/completions", &[("x-api-key", KEY)]);
    let mut flow = RequestFlow::new(plugin(Config::default()));
    assert_eq!(flow.on_request_headers(&host, Some(0)), Verdict::Stop);
    assert!(flow.holds_body());
    let sent = host.dispatched.borrow().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].cluster, "livegate_control_plane");
    assert_eq!(sent[0].path, "/v1/auth/check");
    assert_eq!(sent[0].authority, "livegate-control-plane");
    assert_eq!(sent[0].key, KEY);
    assert_eq!(sent[0].timeout_ms, 200);
    assert_eq!(host.count(Metric::CacheMiss), 1);
}

#[test]
fn an_allow_releases_the_request_with_identity_and_without_the_key() {
    let host = MockHost::request(
        "POST",
        "/v1/models",
        &[
            ("authorization", "Bearer sk-test"),
            ("x-livegate-user-id", "spoof"),
        ],
    );
    let mut flow = RequestFlow::new(plugin(Config::default()));
    flow.on_request_headers(&host, Some(0));
    assert_eq!(
        respond(&mut flow, &host, "200", &allow_body(), 0),
        Verdict::Continue
    );
    assert!(!flow.holds_body());
    assert_eq!(host.header("authorization"), None);
    assert_eq!(host.header("x-livegate-key-alias").as_deref(), Some("ci"));
    assert_eq!(host.header("x-livegate-team-id").as_deref(), Some("t1"));
    assert_eq!(
        host.header("x-livegate-key-hash").as_deref(),
        Some(&HASH[..16])
    );
    assert_eq!(host.header("x-livegate-user-id"), None);
    assert_eq!(host.count(Metric::Allowed), 1);
}

#[test]
fn a_cached_allow_needs_no_dispatch_one_header_read_and_only_the_removals_that_matter() {
    let p = plugin(Config::default());
    allow_once(&p, 0);
    let host = keyed("/v1/models");
    let mut flow = RequestFlow::new(p);
    assert_eq!(
        flow.on_request_headers(&host, Some(5_000)),
        Verdict::Continue
    );
    assert!(host.dispatched.borrow().is_empty());
    assert_eq!(host.count(Metric::CacheHit), 1);
    assert_eq!(host.header("x-livegate-key-alias").as_deref(), Some("ci"));
    assert_eq!(*host.header_reads.borrow(), 1);
    assert_eq!(*host.removals.borrow(), vec!["authorization".to_string()]);
    assert_eq!(host.header("authorization"), None);
}

#[test]
fn an_invalid_key_is_a_401_and_is_cached() {
    let p = plugin(Config::default());
    let host = keyed("/v1/models");
    let mut flow = RequestFlow::new(p.clone());
    flow.on_request_headers(&host, Some(0));
    assert_eq!(
        respond(
            &mut flow,
            &host,
            "401",
            &deny_body(DenyReason::InvalidKey),
            0
        ),
        Verdict::Stop
    );
    assert_eq!(host.last_reply().map(|r| r.status), Some(401));
    assert_eq!(host.count(Metric::DeniedInvalidKey), 1);

    let again = keyed("/v1/models");
    let mut flow = RequestFlow::new(p);
    assert_eq!(flow.on_request_headers(&again, Some(1_000)), Verdict::Stop);
    assert!(again.dispatched.borrow().is_empty());
    assert_eq!(again.last_reply().map(|r| r.status), Some(401));
}

#[test]
fn a_blocked_key_is_a_403() {
    let host = keyed("/v1/models");
    let mut flow = RequestFlow::new(plugin(Config::default()));
    flow.on_request_headers(&host, Some(0));
    assert_eq!(
        respond(
            &mut flow,
            &host,
            "403",
            &deny_body(DenyReason::KeyBlocked),
            0
        ),
        Verdict::Stop
    );
    assert_eq!(host.last_reply().map(|r| r.status), Some(403));
    assert_eq!(host.count(Metric::DeniedKeyBlocked), 1);
}

#[test]
fn a_response_nobody_waits_for_is_ignored() {
    let host = keyed("/v1/models");
    let mut flow = RequestFlow::new(plugin(Config::default()));
    assert_eq!(
        respond(&mut flow, &host, "200", &allow_body(), 0),
        Verdict::Stop
    );
    assert!(host.replies.borrow().is_empty());
    assert_eq!(host.count(Metric::Allowed), 0);
}

#[test]
fn a_credential_the_host_will_not_remove_refuses_the_request() {
    let p = plugin(Config::default());
    allow_once(&p, 0);
    let host = keyed("/v1/models");
    let host = MockHost {
        refuse_header_writes: true,
        ..host
    };
    let mut flow = RequestFlow::new(p);
    assert_eq!(flow.on_request_headers(&host, Some(1)), Verdict::Stop);
    assert_eq!(host.last_reply().map(|r| r.status), Some(500));
    assert_eq!(host.count(Metric::HeaderRewriteFailed), 1);
    assert_eq!(host.count(Metric::Allowed), 1);
    assert!(host.header("authorization").is_some(), "nothing was edited");
}

#[test]
fn a_spoofed_header_the_host_will_not_remove_refuses_a_passthrough() {
    let host = MockHost {
        refuse_header_writes: true,
        ..MockHost::request("GET", "/key/info", &[("x-livegate-team-id", "evil")])
    };
    let mut flow = RequestFlow::new(plugin(Config::default()));
    assert_eq!(flow.on_request_headers(&host, Some(0)), Verdict::Stop);
    assert_eq!(host.last_reply().map(|r| r.status), Some(500));
}

#[test]
fn without_a_clock_the_cache_is_bypassed_never_read_at_time_zero() {
    let p = plugin(Config::default());
    allow_once(&p, 0);
    let host = keyed("/v1/models");
    let mut flow = RequestFlow::new(p.clone());
    assert_eq!(flow.on_request_headers(&host, None), Verdict::Stop);
    assert_eq!(host.dispatched.borrow().len(), 1, "a miss: asked again");
    assert_eq!(
        respond_at(&mut flow, &host, "200", &allow_body(), None),
        Verdict::Continue
    );
    // A reset with no clock has no stale window to fall back on either.
    let host = keyed("/v1/models");
    let mut flow = RequestFlow::new(p);
    assert_eq!(flow.on_request_headers(&host, None), Verdict::Stop);
    let reset = CallResponse {
        header_count: 0,
        status: None,
        body: None,
    };
    assert_eq!(flow.on_auth_response(&host, reset, None), Verdict::Stop);
    assert_eq!(host.last_reply().map(|r| r.status), Some(503));
}

#[test]
fn a_client_that_goes_away_with_its_check_in_flight_leaves_nothing_and_the_late_answer_is_dropped()
{
    let p = plugin(Config::default());
    let host = keyed("/v1/models");
    let mut flow = RequestFlow::new(p.clone());
    assert_eq!(flow.on_request_headers(&host, Some(0)), Verdict::Stop);
    assert!(flow.pending_check().is_some(), "the check is in flight");
    // The stream is reset (the client disconnected): the host calls on_done.
    flow.on_done(&host, Some(0));
    assert_eq!(flow.pending_check(), None);
    assert!(!flow.holds_body());
    // The answer arrives afterwards: no reply, no release, no header edit, nothing counted,
    // and no decision cached on behalf of a request nobody waits for.
    let edits_before = host.removals.borrow().len();
    assert_eq!(
        respond(&mut flow, &host, "200", &allow_body(), 1),
        Verdict::Stop
    );
    assert!(host.replies.borrow().is_empty());
    assert_eq!(host.removals.borrow().len(), edits_before);
    assert_eq!(host.count(Metric::Allowed), 0);
    assert_eq!(flow.pending_check(), None);
    let cached = p.with_cache(|c| c.len()).unwrap();
    assert_eq!(cached, 0, "the late answer was not cached");
}

#[test]
fn on_done_in_every_stage_keeps_no_pending_check() {
    let p = plugin(Config::default());
    allow_once(&p, 0);
    for path in ["/health/liveliness", "/key/list", "/v1/models"] {
        let host = keyed(path);
        let mut flow = RequestFlow::new(p.clone());
        flow.on_request_headers(&host, Some(1));
        flow.on_done(&host, Some(1));
        assert_eq!(flow.pending_check(), None, "{path}");
        assert_eq!(
            flow.on_request_body(&host, true),
            Verdict::Continue,
            "{path}"
        );
    }
}

#[test]
fn the_body_is_held_while_the_check_is_pending_and_released_with_the_decision() {
    let host = keyed("/v1/models");
    let mut flow = RequestFlow::new(plugin(Config::default()));
    flow.on_request_headers(&host, Some(0));
    assert_eq!(flow.on_request_body(&host, true), Verdict::Stop);
    respond(&mut flow, &host, "200", &allow_body(), 0);
    assert_eq!(flow.on_request_body(&host, true), Verdict::Continue);
}

/// A budget's crossing raced by a check: the control plane answered just before the
/// crossing (the allow's version 1), and the answer arrives after this worker applied the
/// crossing's change (2). The request goes on; the next one asks again instead of riding
/// that allow for a whole TTL (seen once in CI: a member's key admitted for 60 s past its
/// budget at one Envoy).
#[test]
fn an_allow_answered_before_a_change_the_worker_applied_is_not_reused() {
    let p = plugin(Config::default());
    let crossing = livegate_contract::KeyChange {
        seq: 2,
        key_hash: livegate_contract::KeyHash::of_raw(KEY),
        status: livegate_contract::KeyStatus::Active,
    };
    p.with_cache(|c| c.apply_change(&crossing, 1_000));
    allow_once(&p, 1_001);
    let host = keyed("/v1/models");
    let mut flow = RequestFlow::new(p.clone());
    assert_eq!(flow.on_request_headers(&host, Some(1_002)), Verdict::Stop);
    assert_eq!(
        host.dispatched.borrow().len(),
        1,
        "the next request asks again"
    );
}
