//! Host calls per request on the hot paths. Each one crosses from the VM into Envoy, so
//! the liveness reply and a cached key's request are held to a budget of them: a change
//! that adds one to every request fails here, not in a benchmark weeks later. Reads of
//! the clock count (`MockClock`: the glue reads the host's only when the flow asks); the
//! glue's own calls (resuming a request after its check) are not the flow's.

use super::mock::*;
use super::*;

/// Fails listing the calls, so the diff names what was added.
fn assert_within(what: &str, calls: &[&str], budget: usize) {
    assert!(
        calls.len() <= budget,
        "{what}: {} host calls, budget {budget}: {calls:?}",
        calls.len()
    );
}

#[test]
fn the_liveness_reply_reads_the_headers_once_counts_once_and_replies() {
    let host = MockHost::request("GET", "/health/liveliness", &[]);
    let mut flow = RequestFlow::new(plugin(Config::default()));
    assert_eq!(flow.on_request_headers(&host, host.clock(0)), Verdict::Stop);
    let calls = host.take_calls();
    assert_eq!(calls, ["request_headers", "increment", "send_reply"]);
    // The local reply passes the filter's response callbacks: nothing to read, not even
    // the time.
    *host.response_headers.borrow_mut() = vec![(":status".into(), b"200".to_vec())];
    flow.on_response_headers(&host, false, host.clock(1));
    flow.on_response_body(&host, true, host.clock(2));
    flow.on_done(&host, host.clock(3));
    assert_eq!(host.take_calls(), Vec::<&str>::new());
}

/// A cached key on a route without a model: no dispatch, no body, one header read.
#[test]
fn a_cached_key_costs_a_fixed_number_of_host_calls() {
    let plugin = plugin(Config::default());
    allow_once(&plugin, 1_000);
    let host = MockHost::request(
        "GET",
        "/v1/models",
        &[("authorization", "Bearer sk-test"), ("x-request-id", "r1")],
    );
    let mut flow = RequestFlow::new(plugin.clone());
    assert_eq!(
        flow.on_request_headers_with(&host, host.clock(2_000), true),
        Verdict::Continue
    );
    let calls = host.take_calls();
    assert_eq!(calls.iter().filter(|c| **c == "request_headers").count(), 1);
    assert!(!calls.contains(&"dispatch_auth_check") && !calls.contains(&"request_body"));
    // The header map (`:path` in it), the clock, hit + allowed, the credential out, alias +
    // hash + team + accept-encoding in.
    assert_within("cached key, request headers", &calls, 9);

    *host.response_headers.borrow_mut() = vec![(":status".into(), b"200".to_vec())];
    flow.on_response_headers(&host, false, host.clock(2_001));
    assert_within("cached key, response headers", &host.take_calls(), 3);
    *host.response_chunk.borrow_mut() = b"{\"data\":[]}".to_vec();
    flow.on_response_body(&host, true, host.clock(2_002));
    // The clock, the chunk, no usage, the record queued.
    assert_within("cached key, last response chunk", &host.take_calls(), 4);
    flow.on_done(&host, host.clock(2_003));
    assert_within("cached key, done", &host.take_calls(), 0);
}

/// A model route reads its body from the host once, whether or not it streams: the
/// rewrite asking a stream's usage edits the bytes already read, writes them, and sets
/// their length.
#[test]
fn a_cached_key_on_a_model_route_reads_its_body_once() {
    let plugin = plugin(Config::default());
    allow_once(&plugin, 1_000);
    for (body, reads, budget) in [
        (r#"{"model":"gpt-4o","messages":[]}"#, 1, 11),
        (r#"{"model":"gpt-4o","messages":[],"stream":true}"#, 1, 13),
    ] {
        let host = MockHost::request(
            "POST",
            "/v1/chat/completions",
            &[("authorization", "Bearer sk-test"), ("x-request-id", "r1")],
        );
        *host.body.borrow_mut() = body.as_bytes().to_vec();
        let mut flow = RequestFlow::new(plugin.clone());
        assert_eq!(flow.on_request_headers(&host, Some(2_000)), Verdict::Stop);
        assert_eq!(flow.on_request_body(&host, true), Verdict::Continue);
        let calls = host.take_calls();
        let body_reads = calls.iter().filter(|c| **c == "request_body").count();
        assert_eq!(body_reads, reads, "{body}: {calls:?}");
        assert_within("cached key, chat request", &calls, budget);
    }
}
