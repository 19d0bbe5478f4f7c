//! A client request over HTTP/2 (prior knowledge) whose body ends in trailers: Envoy's
//! HTTP/1 codec drops trailers before its filters, so the tests that send them use this.

use bytes::Bytes;
use http::{HeaderMap, Request};
use serde_json::Value;

/// POSTs `body` (JSON) to `http://{address}{path}` with `key` as its bearer and
/// `trailers` after the body; the response's (status, JSON body). Blocks the caller (a
/// test thread) on a runtime of its own.
pub fn post_with_trailers(
    address: &str,
    path: &str,
    key: &str,
    body: &Value,
    trailers: HeaderMap,
) -> anyhow::Result<(u16, Value)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(send(address, path, key, body, trailers))
}

async fn send(
    address: &str,
    path: &str,
    key: &str,
    body: &Value,
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
    stream.send_data(Bytes::from(body.to_string()), false)?;
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
