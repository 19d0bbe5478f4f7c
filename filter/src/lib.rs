//! livegate's proxy-wasm filter: liveness in the VM, API-key auth with a decision cache.
//!
//! Every decision lives in plain modules tested natively (`cargo test -p livegate-filter`):
//! a request's in `flow` (over `host::Host`), the root's spend batches and change feed in
//! `root` (over `root::RootHost`). This file alone touches the host: the `wasm` module
//! below (compiled for wasm32 only, because native binaries cannot resolve proxy-wasm's
//! host imports) implements those two traits over proxy-wasm and forwards each callback,
//! translating host values to plain ones and nothing more.
//!
//! Long because: it is the whole host surface (three contexts, two traits, one method per host
//! call), kept in one file so that no other file needs to be read to know what the filter
//! asks of Envoy. It calls `proxy_wasm::hostcalls` directly, and never the `Context` trait
//! helpers, because those unwrap host errors and decode header values as UTF-8 with a
//! panic on failure.

pub mod attempt;
pub mod cache;
pub mod config;
pub mod decision;
pub mod feed;
pub mod flow;
pub mod host;
pub mod host_env;
pub mod local_limits;
pub mod metering;
pub mod metrics;
pub mod model_body;
pub mod path;
pub mod providers;
pub mod reply;
pub mod root;
pub mod routing;
pub mod spend_queue;
pub mod time;
pub mod unverified;
pub mod upstream_headers;
pub mod usage;

#[cfg(target_arch = "wasm32")]
mod wasm {
    /// The upstream role's stream: one try at one deployment (`crate::attempt`).
    mod attempt_glue;
    use crate::attempt::{is_attempt_config, AttemptConfig};
    use crate::config::Config;
    use crate::decision::{CallResponse, MAX_BODY_BYTES};
    use crate::flow::{Plugin, RequestFlow, Verdict};
    use crate::host::{AuthCheck, DispatchRefused, HeaderRefused, Host, RequestHeaders};
    use crate::metrics::Metric;
    use crate::reply::LocalReply;
    use crate::root::{Call, Root, RootHost, Shared};
    use crate::time::{Clock, Millis};
    use crate::upstream_headers::header_encoded;
    use livegate_contract::headers::{INTERNAL_TOKEN, MODEL_CHECK};
    use proxy_wasm::hostcalls;
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::{Duration, UNIX_EPOCH};

    proxy_wasm::main! {{
        // Also installs the SDK's panic hook, so a bug would at least be logged.
        proxy_wasm::set_log_level(LogLevel::Info);
        proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> { Box::new(WasmRoot::new(id)) });
    }}

    /// Metric ids as defined in this VM, indexed by `Metric::index()`.
    type MetricIds = [Option<u32>; Metric::ALL.len()];

    /// One per plugin per worker VM: the host side of `root::Root`, which owns the
    /// plugin (configuration, decision cache, spend queue) and does the root's work.
    struct WasmRoot {
        /// This root context's id: auth checks are dispatched on its behalf (see `Owner`).
        id: u32,
        root: Root,
        /// The gauge `livegate_vm_memory_bytes`, once defined.
        memory_gauge: Option<u32>,
        /// Whether this VM serves requests. Envoy also runs the plugin in a VM on its main
        /// thread, which never does; its ticks must not overwrite the workers' gauges.
        serves_streams: Cell<bool>,
        metrics: Rc<MetricIds>,
        /// The gauge `livegate_spend_queue_records`, once defined.
        queue_gauge: Option<u32>,
        /// Set when this plugin is the upstream filter of a chain's cluster (its
        /// configuration's `role` is `attempt`): its streams are tries, not requests.
        attempt: Option<Rc<AttemptConfig>>,
    }

    impl WasmRoot {
        fn new(id: u32) -> WasmRoot {
            WasmRoot {
                id,
                root: Root::new(Rc::new(Plugin::new(Config::default()))),
                memory_gauge: None,
                serves_streams: Cell::new(false),
                metrics: Rc::new([None; Metric::ALL.len()]),
                queue_gauge: None,
                attempt: None,
            }
        }

        fn host(&self) -> WasmHost<'_> {
            WasmHost {
                metrics: &self.metrics,
                queue_gauge: self.queue_gauge,
                owner: None,
                body_size: 0,
                response_chunk: 0,
            }
        }

        /// The VM's linear memory as a gauge: it only ever grows, so a leak per request
        /// shows here (the disconnect tests and `cargo xtask bench disconnects` read it).
        /// With several workers it is the last worker's to tick.
        fn record_memory(&self) {
            if !self.serves_streams.get() {
                return;
            }
            if let Some(id) = self.memory_gauge {
                let _ = hostcalls::record_metric(id, vm_memory_bytes());
            }
        }
    }

    impl WasmRoot {
        /// The upstream role: the deployments and their keys, nothing else (no ticks, no
        /// control plane: a try never waits on one).
        fn configure_attempt(&mut self, raw: &[u8]) -> bool {
            match AttemptConfig::from_host(raw, |name| std::env::var(name).ok()) {
                Ok(config) => {
                    self.attempt = Some(Rc::new(config));
                    true
                }
                Err(e) => {
                    let line = format!("livegate: invalid plugin configuration: {e}");
                    let _ = hostcalls::log(LogLevel::Critical, &line);
                    false
                }
            }
        }
    }

    impl Context for WasmRoot {
        fn on_http_call_response(&mut self, token: u32, _headers: usize, body: usize, _: usize) {
            self.root.on_call_answer(&self.host(), token, body, now());
        }
    }

    impl RootContext for WasmRoot {
        fn on_configure(&mut self, _size: usize) -> bool {
            let raw = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX);
            if let Some(raw) = raw.as_ref().ok().and_then(|r| r.as_deref()) {
                if is_attempt_config(raw) {
                    return self.configure_attempt(raw);
                }
            }
            let configured = Config::from_host(raw.ok().flatten().as_deref(), |name| {
                std::env::var(name).ok()
            });
            match configured {
                Ok(config) => {
                    if let Some(tick) = config.tick_ms() {
                        let _ = hostcalls::set_tick_period(Duration::from_millis(tick));
                    }
                    self.root.configure(Rc::new(Plugin::new(config)));
                    self.metrics = Rc::new(define_metrics());
                    self.memory_gauge =
                        hostcalls::define_metric(MetricType::Gauge, VM_MEMORY_GAUGE).ok();
                    self.queue_gauge =
                        hostcalls::define_metric(MetricType::Gauge, SPEND_QUEUE_GAUGE).ok();
                    self.record_memory();
                    true
                }
                Err(e) => {
                    let line = format!("livegate: invalid plugin configuration: {e}");
                    let _ = hostcalls::log(LogLevel::Critical, &line);
                    false
                }
            }
        }

        fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
            if let Some(config) = &self.attempt {
                return Some(Box::new(attempt_glue::AttemptHttp::new(config.clone())));
            }
            self.serves_streams.set(true);
            Some(Box::new(Http {
                flow: RequestFlow::new(self.root.plugin().clone()),
                metrics: self.metrics.clone(),
                body_size: 0,
                response_chunk: 0,
                owner: Owner {
                    root: self.id,
                    stream: context_id,
                },
            }))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }

        /// Every tick: the memory gauge, then the root's work (`Root::on_tick`).
        fn on_tick(&mut self) {
            self.record_memory();
            self.root.on_tick(&self.host(), now());
        }
    }

    /// The name of the VM memory gauge (bytes of the worker VM's linear memory).
    const VM_MEMORY_GAUGE: &str = "livegate_vm_memory_bytes";

    /// Spend records held by the workers' queues, summed over the workers.
    const SPEND_QUEUE_GAUGE: &str = "livegate_spend_queue_records";

    fn vm_memory_bytes() -> u64 {
        let pages = u64::try_from(core::arch::wasm32::memory_size(0)).unwrap_or(u64::MAX);
        pages.saturating_mul(65_536)
    }

    fn define_metrics() -> MetricIds {
        Metric::ALL.map(|m| hostcalls::define_metric(MetricType::Counter, m.name()).ok())
    }

    /// Who dispatches a request's auth check: the root context, on the stream's behalf.
    ///
    /// Envoy cancels the calls a stream context made when the stream ends, and a cancelled
    /// call never answers; but the SDK keeps an entry (token → context) for every call it
    /// dispatched until its answer arrives, so each client that went away with its check in
    /// flight left one behind, and the VM's memory grew for ever. Calls made with the root
    /// as the effective context live as long as the VM: Envoy always answers them (reply,
    /// failure or timeout), the SDK drops its entry then, and hands the answer to the
    /// stream if it still exists (nothing, if it does not).
    #[derive(Clone, Copy)]
    struct Owner {
        root: u32,
        stream: u32,
    }

    /// One per HTTP request.
    struct Http {
        flow: RequestFlow,
        metrics: Rc<MetricIds>,
        owner: Owner,
        /// Bytes of request body Envoy holds for this stream (0 before any).
        body_size: usize,
        /// Bytes of the response body chunk Envoy holds now.
        response_chunk: usize,
    }

    /// The host for a request's callbacks (a free function: the flow is borrowed apart).
    fn stream_host(metrics: &MetricIds, owner: Owner, sizes: (usize, usize)) -> WasmHost<'_> {
        WasmHost {
            metrics,
            queue_gauge: None,
            owner: Some(owner),
            body_size: sizes.0,
            response_chunk: sizes.1,
        }
    }

    fn action(verdict: Verdict) -> Action {
        match verdict {
            Verdict::Continue => Action::Continue,
            Verdict::Stop => Action::Pause,
        }
    }

    impl Context for Http {
        /// The stream ended, completed or reset: drop its state. A response still being
        /// metered (the stream ended early) is recorded as seen so far.
        fn on_done(&mut self) -> bool {
            let host = stream_host(&self.metrics, self.owner, (self.body_size, 0));
            self.flow.on_done(&host, HostClock);
            true
        }

        fn on_http_call_response(&mut self, _token: u32, headers: usize, body: usize, _: usize) {
            let status =
                hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
                    .ok()
                    .flatten();
            // One byte past the limit is enough to tell an oversized body from a fitting one.
            let body = (body > 0)
                .then(|| {
                    let size = body.min(MAX_BODY_BYTES + 1);
                    hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size)
                })
                .and_then(|read| read.ok().flatten());
            let response = CallResponse {
                header_count: headers,
                status: status.as_deref(),
                body: body.as_deref(),
            };
            let host = stream_host(
                &self.metrics,
                self.owner,
                (self.body_size, self.response_chunk),
            );
            if self.flow.on_auth_response(&host, response, now()) == Verdict::Continue {
                if let Err(e) = hostcalls::resume_http_request() {
                    debug(&format!("livegate: resume failed: {e:?}"));
                }
            }
        }
    }

    impl HttpContext for Http {
        fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
            let host = stream_host(
                &self.metrics,
                self.owner,
                (self.body_size, self.response_chunk),
            );
            let verdict = self
                .flow
                .on_request_headers_with(&host, HostClock, end_of_stream);
            action(verdict)
        }

        /// `size` is what Envoy holds so far: while the filter pauses, Envoy buffers.
        fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
            self.body_size = size;
            let host = stream_host(
                &self.metrics,
                self.owner,
                (self.body_size, self.response_chunk),
            );
            let verdict = self.flow.on_request_body(&host, end_of_stream);
            action(verdict)
        }

        /// Trailers reach the upstream too: a spoofed `x-livegate-*` trailer is removed,
        /// and if Envoy refuses, the request is reset rather than forwarded with it.
        /// A model route's body that ends in trailers is read here (its end).
        fn on_http_request_trailers(&mut self, _trailers: usize) -> Action {
            let trailers = RequestHeaders::new(
                hostcalls::get_map_bytes(MapType::HttpRequestTrailers).unwrap_or_default(),
            );
            for name in crate::upstream_headers::livegate_headers(&trailers) {
                if hostcalls::remove_map_value(MapType::HttpRequestTrailers, &name).is_err() {
                    let _ = hostcalls::reset_http_request();
                    return Action::Pause;
                }
                stream_host(&self.metrics, self.owner, (self.body_size, 0))
                    .increment(Metric::SpoofedTrailerRemoved);
            }
            // Trailers end the body: a body the flow holds (for its model, or while the
            // check is in flight) is whole now, as at a body's end of stream.
            if self.flow.holds_body() {
                let host = stream_host(
                    &self.metrics,
                    self.owner,
                    (self.body_size, self.response_chunk),
                );
                action(self.flow.on_request_body(&host, true))
            } else {
                Action::Continue
            }
        }

        /// The response is metered as it passes: never paused, never buffered.
        fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
            let host = stream_host(&self.metrics, self.owner, (self.body_size, 0));
            action(
                self.flow
                    .on_response_headers(&host, end_of_stream, HostClock),
            )
        }

        /// `size` is this chunk's: the filter continues every chunk, so Envoy holds one.
        fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
            self.response_chunk = size;
            let host = stream_host(&self.metrics, self.owner, (self.body_size, size));
            action(self.flow.on_response_body(&host, end_of_stream, HostClock))
        }

        fn on_http_response_trailers(&mut self, _trailers: usize) -> Action {
            let host = stream_host(&self.metrics, self.owner, (self.body_size, 0));
            action(self.flow.on_response_trailers(&host, HostClock))
        }
    }

    /// The host's clock for a stream callback, read only if the flow asks for the time.
    struct HostClock;

    impl Clock for HostClock {
        fn now(&self) -> Option<Millis> {
            now()
        }
    }

    /// Wall-clock milliseconds: the only clock proxy-wasm ABI 0.2.1 offers. `None` when
    /// the host cannot say: the flow then bypasses the cache instead of guessing a time.
    fn now() -> Option<Millis> {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Per-call detail: debug level, so an outage cannot flood the log.
    fn debug(message: &str) {
        let _ = hostcalls::log(LogLevel::Debug, message);
    }

    /// `size` bytes of a buffer Envoy holds; none when it holds none or will not say.
    fn read_whole(buffer: BufferType, size: usize) -> Option<Vec<u8>> {
        if size == 0 {
            return None;
        }
        hostcalls::get_buffer(buffer, 0, size).ok().flatten()
    }

    /// `Host` (for a request) and `RootHost` (for the root) over proxy-wasm hostcalls;
    /// every host error is absorbed here.
    struct WasmHost<'a> {
        metrics: &'a MetricIds,
        /// The root's: the gauge `livegate_spend_queue_records`, once defined.
        queue_gauge: Option<u32>,
        /// For a request: the contexts its auth check is dispatched from and for.
        owner: Option<Owner>,
        /// Bytes of request body Envoy holds.
        body_size: usize,
        /// Bytes of the response body chunk Envoy holds.
        response_chunk: usize,
    }

    impl WasmHost<'_> {
        /// Dispatches with the root as the effective context (see `Owner`), then makes the
        /// stream the effective context again for the rest of this callback.
        fn dispatch_as_root(
            &self,
            cluster: &str,
            headers: Vec<(&str, &str)>,
            timeout: Duration,
        ) -> Result<u32, proxy_wasm::types::Status> {
            let Some(owner) = self.owner else {
                return hostcalls::dispatch_http_call(cluster, headers, None, vec![], timeout);
            };
            hostcalls::set_effective_context(owner.root)?;
            let dispatched = hostcalls::dispatch_http_call(cluster, headers, None, vec![], timeout);
            if let Err(e) = hostcalls::set_effective_context(owner.stream) {
                debug(&format!("livegate: could not return to the stream: {e:?}"));
            }
            dispatched
        }
    }

    impl Host for WasmHost<'_> {
        fn request_header(&self, name: &str) -> Option<Vec<u8>> {
            hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
                .ok()
                .flatten()
        }

        fn request_headers(&self) -> RequestHeaders {
            // Names are HTTP tokens (validated by Envoy's codecs), so the SDK's UTF-8
            // decoding of names holds; values stay bytes.
            RequestHeaders::new(
                hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default(),
            )
        }

        fn set_request_header(&self, name: &str, value: &str) -> Result<(), HeaderRefused> {
            hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value)).map_err(|e| {
                debug(&format!("livegate: could not set {name}: {e:?}"));
                HeaderRefused
            })
        }

        fn remove_request_header(&self, name: &str) -> Result<(), HeaderRefused> {
            hostcalls::remove_map_value(MapType::HttpRequestHeaders, name).map_err(|e| {
                debug(&format!("livegate: could not remove {name}: {e:?}"));
                HeaderRefused
            })
        }

        fn request_body(&self) -> Option<Vec<u8>> {
            read_whole(BufferType::HttpRequestBody, self.body_size)
        }

        fn request_body_size(&self) -> usize {
            self.body_size
        }

        fn set_request_body(&self, body: &[u8]) -> Result<(), HeaderRefused> {
            hostcalls::set_buffer(BufferType::HttpRequestBody, 0, self.body_size, body).map_err(
                |e| {
                    debug(&format!("livegate: could not replace the body: {e:?}"));
                    HeaderRefused
                },
            )
        }

        fn send_reply(&self, reply: &LocalReply) {
            let headers = reply
                .headers
                .iter()
                .map(|(name, value)| (*name, value.as_str()))
                .collect();
            let body = Some(reply.body.as_bytes());
            if let Err(e) = hostcalls::send_http_response(u32::from(reply.status), headers, body) {
                debug(&format!("livegate: local reply failed: {e:?}"));
            }
        }

        fn dispatch_auth_check(&self, check: &AuthCheck<'_>) -> Result<(), DispatchRefused> {
            let bearer = format!("Bearer {}", check.key);
            let mut headers = vec![
                (":method", "POST"),
                (":path", check.path),
                (":authority", check.authority),
                ("authorization", bearer.as_str()),
                (INTERNAL_TOKEN, check.token),
            ];
            let model = check.model.map(header_encoded);
            if let Some(model) = &model {
                headers.push((MODEL_CHECK, model.as_str()));
            }
            let timeout = Duration::from_millis(check.timeout_ms);
            match self.dispatch_as_root(check.cluster, headers, timeout) {
                Ok(_token) => Ok(()),
                Err(e) => {
                    debug(&format!(
                        "livegate: dispatch to {} refused: {e:?}",
                        check.cluster
                    ));
                    Err(DispatchRefused)
                }
            }
        }

        fn response_header(&self, name: &str) -> Option<Vec<u8>> {
            hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
                .ok()
                .flatten()
        }

        fn take_response_header(&self, name: &str) -> Option<Vec<u8>> {
            let value = self.response_header(name)?;
            if let Err(e) = hostcalls::remove_map_value(MapType::HttpResponseHeaders, name) {
                debug(&format!("livegate: could not remove {name}: {e:?}"));
            }
            Some(value)
        }

        fn response_body(&self) -> Option<Vec<u8>> {
            read_whole(BufferType::HttpResponseBody, self.response_chunk)
        }

        fn increment(&self, metric: Metric) {
            if let Some(Some(id)) = self.metrics.get(metric.index()) {
                let _ = hostcalls::increment_metric(*id, 1);
            }
        }

        fn debug(&self, message: &str) {
            debug(message);
        }
    }

    impl RootHost for WasmHost<'_> {
        fn dispatch(&self, call: &Call<'_>) -> Result<u32, DispatchRefused> {
            let timeout = Duration::from_millis(call.timeout_ms);
            let headers = call.headers.clone();
            hostcalls::dispatch_http_call(call.cluster, headers, call.body, vec![], timeout)
                .map_err(|e| {
                    let cluster = call.cluster;
                    Host::debug(
                        self,
                        &format!("livegate: dispatch to {cluster} refused: {e:?}"),
                    );
                    DispatchRefused
                })
        }

        fn call_status(&self) -> Option<Vec<u8>> {
            hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
                .ok()
                .flatten()
        }

        fn call_body(&self, size: usize) -> Option<Vec<u8>> {
            read_whole(BufferType::HttpCallResponseBody, size)
        }

        fn shared(&self, key: &str) -> Option<Shared> {
            hostcalls::get_shared_data(key).ok()
        }

        fn set_shared(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
            hostcalls::set_shared_data(key, Some(value), cas).is_ok()
        }

        fn count(&self, metric: Metric, n: usize) {
            if let Some(Some(id)) = self.metrics.get(metric.index()) {
                let _ = hostcalls::increment_metric(*id, i64::try_from(n).unwrap_or(i64::MAX));
            }
        }

        fn add_to_queue_gauge(&self, delta: i64) -> bool {
            self.queue_gauge
                .is_some_and(|id| hostcalls::increment_metric(id, delta).is_ok())
        }

        fn debug(&self, message: &str) {
            debug(message);
        }
    }
}
