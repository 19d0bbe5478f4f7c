//! The host side of one try (`crate::attempt`): reads the deployment Envoy picked from its
//! endpoint's metadata, and applies the try's headers and body. Host glue only.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, LogLevel, MapType};

use crate::attempt::{
    body_for, shape, AttemptConfig, ANSWERED_BY_HEADER, CLIENT_PATH_HEADER, HOST_METADATA_PATH,
};
use crate::providers::ANTHROPIC_VERSION_HEADER;
use crate::reply::LocalReply;

/// The filter-state key (Envoy prefixes `wasm.`) holding the client's path for the tries.
const CLIENT_PATH_STATE: &str = "livegate_client_path";

pub(super) struct AttemptHttp {
    config: Rc<AttemptConfig>,
    /// The deployment of this try (its route), read once its headers arrive.
    route: Option<String>,
    /// Bytes of request body Envoy holds for this try so far.
    body_size: usize,
}

impl AttemptHttp {
    pub(super) fn new(config: Rc<AttemptConfig>) -> AttemptHttp {
        AttemptHttp {
            config,
            route: None,
            body_size: 0,
        }
    }

    /// Shapes the try: headers always, the body when Envoy holds one (`size` bytes).
    /// A try that cannot be shaped is answered 500, never sent to a provider as it is.
    fn apply(&self, body_size: usize) -> Action {
        let header = |name: &str| {
            hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
                .ok()
                .flatten()
        };
        // Every try edits the one header map Envoy keeps for the request, so the first
        // try's removal of the client's path is what the next try finds: the first keeps
        // it in the request's filter state (shared by the tries, never sent anywhere).
        let client_path = match header(CLIENT_PATH_HEADER) {
            Some(path) => {
                let _ = hostcalls::set_property(vec![CLIENT_PATH_STATE], Some(&path));
                Some(path)
            }
            None => hostcalls::get_property(vec![CLIENT_PATH_STATE])
                .ok()
                .flatten(),
        };
        let client_path = client_path.and_then(|v| String::from_utf8(v).ok());
        let client_version = header(ANTHROPIC_VERSION_HEADER).is_some();
        let route = self.route.as_deref().unwrap_or_default();
        let shaped = match shape(&self.config, route, client_path.as_deref(), client_version) {
            Ok(shaped) => shaped,
            Err(e) => return refuse(&format!("livegate: a try could not be shaped: {e}")),
        };
        if body_size > 0 {
            let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
                .ok()
                .flatten();
            if let Some(new) = body.and_then(|b| body_for(&b, shaped.deployment)) {
                let length = new.len().to_string();
                let written =
                    hostcalls::set_buffer(BufferType::HttpRequestBody, 0, body_size, &new)
                        .and_then(|()| {
                            hostcalls::set_map_value(
                                MapType::HttpRequestHeaders,
                                "content-length",
                                Some(&length),
                            )
                        });
                if written.is_err() {
                    return refuse("livegate: a try's body could not be rewritten");
                }
            }
        }
        for name in &shaped.remove {
            if hostcalls::remove_map_value(MapType::HttpRequestHeaders, name).is_err() {
                return refuse("livegate: a try's header could not be removed");
            }
        }
        for (name, value) in &shaped.set {
            if hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value)).is_err() {
                return refuse("livegate: a try's header could not be set");
            }
        }
        Action::Continue
    }
}

/// Logs why (never a header value) and answers the client 500.
fn refuse(why: &str) -> Action {
    let _ = hostcalls::log(LogLevel::Error, why);
    let reply = LocalReply::internal_error();
    let headers = reply
        .headers
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    let _ = hostcalls::send_http_response(
        u32::from(reply.status),
        headers,
        Some(reply.body.as_bytes()),
    );
    Action::Pause
}

impl Context for AttemptHttp {}

impl HttpContext for AttemptHttp {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        self.route = hostcalls::get_property(HOST_METADATA_PATH.to_vec())
            .ok()
            .flatten()
            .and_then(|v| String::from_utf8(v).ok());
        if end_of_stream {
            self.apply(0)
        } else {
            // Held for the body: the body's model and its length change with the try.
            Action::Pause
        }
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.body_size = size;
        if end_of_stream {
            self.apply(size)
        } else {
            Action::Pause
        }
    }

    /// A body that ends in trailers: the whole body is held now, and the try is shaped
    /// before anything of it goes on (the headers still wait).
    fn on_http_request_trailers(&mut self, _trailers: usize) -> Action {
        self.apply(self.body_size)
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        if let Some(route) = &self.route {
            let _ = hostcalls::set_map_value(
                MapType::HttpResponseHeaders,
                ANSWERED_BY_HEADER,
                Some(route),
            );
        }
        Action::Continue
    }
}
