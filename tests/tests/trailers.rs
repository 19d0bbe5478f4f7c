//! Issue #14, item 7: request trailers are stripped of `x-livegate-*` too. Over HTTP/2
//! (Envoy passes trailers to its filters; its HTTP/1 codec drops them before), a client's
//! spoofed identity trailers are removed by the filter and the request is served.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request};
use livegate_tests::poll;
use livegate_tests::stack::{Stack, StackOptions};
use serde_json::{json, Value};

const REMOVED: &str = "livegate_spoofed_trailers_removed_total";

/// One HTTP/2 (prior knowledge) POST with a JSON body and `trailers`; (status, body).
async fn post_with_trailers(
    address: &str,
    path: &str,
    key: &str,
    trailers: HeaderMap,
) -> anyhow::Result<(u16, Value)> {
    let socket = tokio::net::TcpStream::connect(address).await?;
    let (client, connection) = h2::client::handshake(socket).await?;
    tokio::spawn(connection);
    let mut client = client.ready().await?;
    let request = Request::post(format!("http://{address}{path}"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(())?;
    let (response, mut stream) = client.send_request(request, false)?;
    stream.send_data(Bytes::from_static(b"{\"hello\":\"upstream\"}"), false)?;
    stream.send_trailers(trailers)?;
    let response = response.await?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    Ok((status, serde_json::from_slice(&bytes)?))
}

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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, body) = runtime
        .block_on(post_with_trailers(&address, "/v1/echo", &key, trailers))
        .unwrap();

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
