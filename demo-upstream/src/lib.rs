//! A tiny OpenAI-shaped upstream for trying livegate: it answers `/v1/models` and
//! `/v1/chat/completions`, and echoes what the gateway told it about the caller.

use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// The demo's routes; anything else is echoed too, so every protected path shows
/// what reached the upstream.
pub fn router() -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completion))
        .fallback(echo)
}

async fn models(headers: HeaderMap) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": "livegate-demo", "object": "model", "owned_by": "livegate"}],
        "livegate": received(&headers),
    }))
}

async fn chat_completion(headers: HeaderMap) -> Json<Value> {
    Json(json!({
        "id": "chatcmpl-livegate-demo",
        "object": "chat.completion",
        "model": "livegate-demo",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from the livegate demo upstream."},
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": 0, "completion_tokens": 8, "total_tokens": 8},
        "livegate": received(&headers),
    }))
}

async fn echo(headers: HeaderMap) -> Json<Value> {
    Json(json!({"livegate": received(&headers)}))
}

/// What the upstream saw: the identity headers, and whether any credential leaked.
fn received(headers: &HeaderMap) -> Value {
    let identity: serde_json::Map<String, Value> = headers
        .iter()
        // Every spelling a framework may read as an identity header: `x_livegate_user_id`
        // is `x-livegate-user-id` to many, so the tests must see it if it ever arrives.
        .filter(|(name, _)| name.as_str().replace('_', "-").starts_with("x-livegate-"))
        .map(|(name, value)| {
            let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_string(), Value::String(text))
        })
        .collect();
    json!({
        "identity_headers": identity,
        // Whether, never what: the demo must not echo a credential back to a client.
        "authorization_present": headers.contains_key("authorization"),
        "x_api_key_present": headers.contains_key("x-api-key"),
    })
}
