//! The least a proxy-wasm filter does on a request, for `cargo xtask bench` to measure
//! Envoy's fixed cost of a Wasm filter: liveness answered with a local reply from one
//! header read, every other request let through untouched.

#[cfg(target_arch = "wasm32")]
mod vm {
    use proxy_wasm::traits::{Context, HttpContext};
    use proxy_wasm::types::Action;

    proxy_wasm::main! {{
        proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Floor) });
    }}

    struct Floor;

    impl Context for Floor {}

    impl HttpContext for Floor {
        fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
            if self.get_http_request_header(":path").as_deref() != Some("/health/liveliness") {
                return Action::Continue;
            }
            self.send_http_response(
                200,
                vec![("content-type", "application/json")],
                Some(b"\"I'm alive!\""),
            );
            Action::Pause
        }
    }
}
