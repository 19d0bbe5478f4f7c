//! The least a proxy-wasm filter does on a request, for `cargo xtask bench` to measure
//! Envoy's fixed cost of a Wasm filter: liveness answered with a local reply from one
//! header read, every other request let through untouched. With the plugin configuration
//! `read_response_body` it also copies every response body chunk into the VM and drops
//! it: the least any meter of a stream pays, per chunk, through proxy-wasm ABI 0.2.1.

#[cfg(target_arch = "wasm32")]
mod vm {
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType};

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
            Box::new(FloorRoot { read_response_body: false })
        });
    }}

    /// The configuration that makes streams read.
    const READ_RESPONSE_BODY: &[u8] = b"read_response_body";

    struct FloorRoot {
        read_response_body: bool,
    }

    impl Context for FloorRoot {}

    impl RootContext for FloorRoot {
        /// No configuration (or `{}`, the bench's default), or `read_response_body`;
        /// anything else is refused, so a mistyped bench does not measure the wrong floor.
        fn on_configure(&mut self, _size: usize) -> bool {
            let config = self.get_plugin_configuration().unwrap_or_default();
            let config = config.trim_ascii();
            self.read_response_body = config == READ_RESPONSE_BODY;
            self.read_response_body || config.is_empty() || config == b"{}"
        }

        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Floor {
                read_response_body: self.read_response_body,
            }))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    struct Floor {
        read_response_body: bool,
    }

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

        fn on_http_response_body(&mut self, size: usize, _end_of_stream: bool) -> Action {
            if self.read_response_body && size > 0 {
                drop(self.get_http_response_body(0, size));
            }
            Action::Continue
        }
    }
}
