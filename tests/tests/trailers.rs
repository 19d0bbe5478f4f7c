//! Issue #14, item 7: request trailers are stripped of `x-livegate-*` too. Over HTTP/2
//! (Envoy passes trailers to its filters; its HTTP/1 codec drops them before), a client's
//! spoofed identity trailers are removed by the filter and the request is served.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use livegate_tests::h2_client::post_with_trailers;
use livegate_tests::poll;
use livegate_tests::stack::{Stack, StackOptions};
use serde_json::json;

const REMOVED: &str = "livegate_spoofed_trailers_removed_total";

#[test]
fn spoofed_identity_trailers_are_removed_and_the_request_served() {
    let stack = Stack::start(StackOptions::full()).unwrap();
    let created = stack
        .admin(
            "/key/generate",
            &json!({"key_alias": "trailers", "user_id": "real-user"}),
        )
        .unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    let before = stack.envoy.prometheus_counter(REMOVED).unwrap_or(0.0);

    let mut trailers = HeaderMap::new();
    trailers.insert("x-livegate-user-id", HeaderValue::from_static("admin"));
    trailers.insert("x-livegate-key-alias", HeaderValue::from_static("spoofed"));
    trailers.insert("x-client-checksum", HeaderValue::from_static("kept"));
    let address = stack.envoy.url().trim_start_matches("http://").to_string();
    let request = json!({"hello": "upstream"});
    let (status, body) =
        post_with_trailers(&address, "/v1/echo", &key, &request, trailers).unwrap();

    assert_eq!(status, 200, "the request with trailers is served: {body}");
    let identity = &body["livegate"]["identity_headers"];
    assert_eq!(
        identity["x-livegate-user-id"], "real-user",
        "the upstream sees the key's identity, never the client's: {identity}"
    );
    let removed = poll::until(
        "the filter to count both trailers",
        Duration::from_secs(20),
        || {
            let now = stack.envoy.prometheus_counter(REMOVED).ok()?;
            (now >= before + 2.0).then_some(now)
        },
    )
    .unwrap();
    assert_eq!(
        removed,
        before + 2.0,
        "only the two x-livegate-* trailers are removed"
    );
}
