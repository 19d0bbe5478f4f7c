//! livegate's proxy-wasm filter: liveness in the VM, API-key auth with a decision cache.
//!
//! Every decision lives in plain modules tested natively (`cargo test -p livegate-filter`).
//! This file alone touches the host: the `wasm` module below (compiled for wasm32 only,
//! because native binaries cannot resolve proxy-wasm's host imports) wires those modules
//! into proxy-wasm. It calls `proxy_wasm::hostcalls` directly, and never the `Context`
//! trait helpers, because those unwrap host errors and decode header values as UTF-8
//! with a panic on failure.

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
pub mod reply;
pub mod routing;
pub mod spend_queue;
pub mod time;
pub mod upstream_headers;
pub mod usage;

#[cfg(target_arch = "wasm32")]
mod wasm {
    use crate::config::{Config, ConfigError};
    use crate::decision::{CallResponse, MAX_BODY_BYTES};
    use crate::feed::{self, SharedFeed, WorkerFeed};
    use crate::flow::{Plugin, RequestFlow, Verdict};
    use crate::host::{AuthCheck, DispatchRefused, HeaderRefused, Host, RequestHeaders};
    use crate::host_env::HostEnv;
    use crate::metrics::Metric;
    use crate::reply::LocalReply;
    use crate::spend_queue::Delivery;
    use crate::time::Millis;
    use livegate_contract::headers::INTERNAL_TOKEN;
    use proxy_wasm::hostcalls;
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    use std::time::{Duration, UNIX_EPOCH};

    proxy_wasm::main! {{
        // Also installs the SDK's panic hook, so a bug would at least be logged.
        proxy_wasm::set_log_level(LogLevel::Info);
        proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> { Box::new(Root::new(id)) });
    }}

    /// Metric ids as defined in this VM, indexed by `Metric::index()`.
    type MetricIds = [Option<u32>; Metric::ALL.len()];

    /// One per plugin per worker VM: owns the configuration, the decision cache and the
    /// spend queue, takes its turn polling the change feed for the whole Envoy, and sends
    /// this worker's spend records to the control plane.
    struct Root {
        /// This root context's id: auth checks are dispatched on its behalf (see `Owner`).
        id: u32,
        plugin: Rc<Plugin>,
        /// The gauge `livegate_vm_memory_bytes`, once defined.
        memory_gauge: Option<u32>,
        /// Whether this VM serves requests. Envoy also runs the plugin in a VM on its main
        /// thread, which never does; its ticks must not overwrite the workers' gauges.
        serves_streams: Cell<bool>,
        metrics: Rc<MetricIds>,
        feed: RefCell<WorkerFeed>,
        /// The change-feed poll in flight.
        poll_token: Cell<Option<u32>>,
        /// The spend batch in flight (at most one per worker).
        spend_token: Cell<Option<u32>>,
        /// The gauge `livegate_spend_queue_records`, once defined, and what this worker
        /// added to it so far (workers share the gauge: each adds its own changes).
        queue_gauge: Option<u32>,
        queue_reported: Cell<i64>,
        /// The CAS value of the shared window this worker applied last.
        seen: Cell<Option<u32>>,
        /// The cursor for this worker's next poll, from the last window it read.
        cursor: Cell<Option<u64>>,
    }

    impl Root {
        fn new(id: u32) -> Root {
            Root {
                id,
                plugin: Rc::new(Plugin::new(Config::default())),
                memory_gauge: None,
                serves_streams: Cell::new(false),
                metrics: Rc::new([None; Metric::ALL.len()]),
                feed: RefCell::new(WorkerFeed::default()),
                poll_token: Cell::new(None),
                spend_token: Cell::new(None),
                queue_gauge: None,
                queue_reported: Cell::new(0),
                seen: Cell::new(None),
                cursor: Cell::new(None),
            }
        }

        fn host(&self) -> WasmHost<'_> {
            WasmHost {
                metrics: &self.metrics,
                owner: None,
                body_size: 0,
                response_chunk: 0,
            }
        }

        fn count(&self, metric: Metric, n: usize) {
            if let Some(Some(id)) = self.metrics.get(metric.index()) {
                let _ = hostcalls::increment_metric(*id, i64::try_from(n).unwrap_or(i64::MAX));
            }
        }

        /// Sends the next batch of spend records, as the root (never for a stream, so a
        /// client that goes away cannot strand it): on a tick whatever is queued, after
        /// an acknowledgement only a whole batch. Never waits for the answer.
        fn flush(&self, whole_only: bool) {
            let metering = &self.plugin.config.metering;
            if !metering.enabled || self.spend_token.get().is_some() {
                return;
            }
            let Some((body, count)) = self
                .plugin
                .with_spend(|queue| queue.next_batch(whole_only))
                .flatten()
            else {
                return;
            };
            let config = &self.plugin.config;
            let headers = vec![
                (":method", "POST"),
                (":path", metering.records_path.as_str()),
                (":authority", config.control_plane_authority.as_str()),
                ("content-type", "application/json"),
                (INTERNAL_TOKEN, config.internal_token.expose()),
            ];
            let timeout = Duration::from_millis(metering.send_timeout_ms);
            let cluster = config.control_plane_cluster.as_str();
            match hostcalls::dispatch_http_call(cluster, headers, Some(&body), vec![], timeout) {
                Ok(token) => {
                    self.spend_token.set(Some(token));
                    self.count(Metric::SpendRecordsSent, count);
                }
                Err(e) => {
                    self.plugin.with_spend(|queue| queue.not_sent());
                    self.count(Metric::SpendRecordsRetried, count);
                    self.host()
                        .debug(&format!("livegate: spend dispatch refused: {e:?}"));
                }
            }
        }

        /// The control plane answered the batch in flight (or Envoy reported a failure).
        fn on_spend_answer(&self, body_size: usize) {
            self.spend_token.set(None);
            let status =
                hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
                    .ok()
                    .flatten();
            let body = (body_size > 0 && body_size <= MAX_ACK_BYTES)
                .then(|| hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size))
                .and_then(|read| read.ok().flatten());
            let delivery = self
                .plugin
                .with_spend(|queue| queue.on_answer(status.as_deref(), body.as_deref()));
            match delivery {
                Some(Delivery::Acknowledged(n)) => {
                    self.count(Metric::SpendRecordsAcknowledged, n);
                    self.flush(true);
                }
                Some(Delivery::Retry(n)) => self.count(Metric::SpendRecordsRetried, n),
                Some(Delivery::Stray) | None => {}
            }
            self.record_queue();
        }

        /// Moves the shared gauge by what this worker's queue changed since last time.
        fn record_queue(&self) {
            let (Some(id), Some(len)) = (self.queue_gauge, self.plugin.with_spend(|q| q.len()))
            else {
                return;
            };
            let len = i64::try_from(len).unwrap_or(i64::MAX);
            let delta = len - self.queue_reported.get();
            if delta != 0 && hostcalls::increment_metric(id, delta).is_ok() {
                self.queue_reported.set(len);
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

        /// Applies what any worker fetched to this worker's cache.
        fn sync(&self, shared: &SharedFeed, now: Millis) {
            self.cursor.set(shared.cursor);
            let applied = self
                .plugin
                .with_cache(|cache| self.feed.borrow_mut().apply(shared, cache, now));
            let applied = applied.unwrap_or_default();
            for _ in 0..applied.changes {
                self.host().increment(Metric::ChangesApplied);
            }
            if applied.gap {
                self.host().increment(Metric::ChangeFeedGap);
            }
        }

        /// Takes the poll lease if it is free (compare-and-swap: one worker wins a round).
        fn take_lease(&self, now: Millis) -> bool {
            let Ok((lease, cas)) = hostcalls::get_shared_data(feed::LEASE_KEY) else {
                return false;
            };
            if !feed::lease_free(lease.as_deref(), now) {
                return false;
            }
            let until = feed::lease_until(now.saturating_add(self.plugin.config.change_poll_ms));
            hostcalls::set_shared_data(feed::LEASE_KEY, Some(&until), cas).is_ok()
        }

        fn poll(&self) {
            let config = &self.plugin.config;
            let path = feed::poll_path(&config.changes_path, self.cursor.get());
            let headers = vec![
                (":method", "GET"),
                (":path", path.as_str()),
                (":authority", config.control_plane_authority.as_str()),
                (INTERNAL_TOKEN, config.internal_token.expose()),
            ];
            let timeout = Duration::from_millis(config.auth_timeout_ms);
            let cluster = config.control_plane_cluster.as_str();
            match hostcalls::dispatch_http_call(cluster, headers, None, vec![], timeout) {
                Ok(token) => self.poll_token.set(Some(token)),
                Err(_) => self.host().increment(Metric::ChangeFeedError),
            }
        }

        /// Folds an answer into the shared window; retried when another worker wrote first.
        fn publish(&self, answer: livegate_contract::ChangeFeed) -> Option<SharedFeed> {
            for _ in 0..4 {
                let (bytes, cas) = hostcalls::get_shared_data(feed::SHARED_KEY).ok()?;
                let mut shared = SharedFeed::decode(bytes.as_deref());
                shared.merge(answer.clone());
                let encoded = shared.encode();
                if hostcalls::set_shared_data(feed::SHARED_KEY, Some(&encoded), cas).is_ok() {
                    return Some(shared);
                }
            }
            None
        }
    }

    /// The shared window, unless it is the version this worker applied last (the CAS
    /// value changes with every write): most ticks then cost one host call, no decoding.
    fn shared_feed_if_changed(seen: &Cell<Option<u32>>) -> Option<SharedFeed> {
        let (bytes, cas) = hostcalls::get_shared_data(feed::SHARED_KEY).ok()?;
        if cas.is_some() && cas == seen.get() {
            return None;
        }
        seen.set(cas);
        Some(SharedFeed::decode(bytes.as_deref()))
    }

    /// The largest spend acknowledgement read (a `SpendAck` is a few dozen bytes).
    const MAX_ACK_BYTES: usize = 4096;

    impl Context for Root {
        fn on_http_call_response(&mut self, token: u32, _headers: usize, body: usize, _: usize) {
            if self.spend_token.get() == Some(token) {
                self.on_spend_answer(body);
                return;
            }
            self.poll_token.set(None);
            let status =
                hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
                    .ok()
                    .flatten();
            let body = (body > 0 && body <= feed::MAX_ANSWER_BYTES)
                .then(|| hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body))
                .and_then(|read| read.ok().flatten());
            let published = feed::parse_answer(status.as_deref(), body.as_deref())
                .and_then(|answer| self.publish(answer));
            match (published, now()) {
                (Some(shared), Some(now)) => self.sync(&shared, now),
                (Some(_), None) => {}
                (None, _) => self.host().increment(Metric::ChangeFeedError),
            }
        }
    }

    impl RootContext for Root {
        fn on_configure(&mut self, _size: usize) -> bool {
            let raw = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX);
            // Secrets come from the VM's environment (`host_env_keys`), never the configuration.
            let configured = Config::parse(raw.ok().flatten().as_deref()).and_then(|mut config| {
                let env = HostEnv::read(|name| std::env::var(name).ok())
                    .map_err(|e| ConfigError::Shape(e.to_string()))?;
                config.upstream_authorization = env
                    .upstream_authorization(config.upstream_authorization.as_deref())
                    .map_err(|e| ConfigError::Shape(e.to_string()))?;
                config.internal_token = env.internal_token;
                Ok(config)
            });
            match configured {
                Ok(config) => {
                    if let Some(tick) = config.tick_ms() {
                        let _ = hostcalls::set_tick_period(Duration::from_millis(tick));
                    }
                    self.plugin = Rc::new(Plugin::new(config));
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
            self.serves_streams.set(true);
            Some(Box::new(Http {
                flow: RequestFlow::new(self.plugin.clone()),
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

        /// Every tick: send queued spend records; apply what other workers fetched, then
        /// poll if this worker wins the lease (when the feed is on).
        fn on_tick(&mut self) {
            self.record_memory();
            self.flush(false);
            self.record_queue();
            let Some(now) = now() else {
                return;
            };
            if self.plugin.config.change_poll_ms == 0 {
                return;
            }
            if let Some(shared) = shared_feed_if_changed(&self.seen) {
                self.sync(&shared, now);
            }
            if self.poll_token.get().is_none() && self.take_lease(now) {
                self.poll();
            }
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
            self.flow.on_done(&host, now());
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
                    host.debug(&format!("livegate: resume failed: {e:?}"));
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
                .on_request_headers_with(&host, now(), end_of_stream);
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
            if self.flow.holds_body() {
                Action::Pause
            } else {
                Action::Continue
            }
        }

        /// The response is metered as it passes: never paused, never buffered.
        fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
            let host = stream_host(&self.metrics, self.owner, (self.body_size, 0));
            action(self.flow.on_response_headers(&host, end_of_stream, now()))
        }

        /// `size` is this chunk's: the filter continues every chunk, so Envoy holds one.
        fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
            self.response_chunk = size;
            let host = stream_host(&self.metrics, self.owner, (self.body_size, size));
            action(self.flow.on_response_body(&host, end_of_stream, now()))
        }

        fn on_http_response_trailers(&mut self, _trailers: usize) -> Action {
            let host = stream_host(&self.metrics, self.owner, (self.body_size, 0));
            action(self.flow.on_response_trailers(&host, now()))
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

    /// `size` bytes of a buffer Envoy holds; none when it holds none or will not say.
    fn read_whole(buffer: BufferType, size: usize) -> Option<Vec<u8>> {
        if size == 0 {
            return None;
        }
        hostcalls::get_buffer(buffer, 0, size).ok().flatten()
    }

    /// `Host` over proxy-wasm hostcalls; every host error is absorbed here.
    struct WasmHost<'a> {
        metrics: &'a MetricIds,
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
                self.debug(&format!("livegate: could not return to the stream: {e:?}"));
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
                self.debug(&format!("livegate: could not set {name}: {e:?}"));
                HeaderRefused
            })
        }

        fn remove_request_header(&self, name: &str) -> Result<(), HeaderRefused> {
            hostcalls::remove_map_value(MapType::HttpRequestHeaders, name).map_err(|e| {
                self.debug(&format!("livegate: could not remove {name}: {e:?}"));
                HeaderRefused
            })
        }

        fn request_body(&self) -> Option<Vec<u8>> {
            read_whole(BufferType::HttpRequestBody, self.body_size)
        }

        fn set_request_body(&self, body: &[u8]) -> Result<(), HeaderRefused> {
            hostcalls::set_buffer(BufferType::HttpRequestBody, 0, self.body_size, body).map_err(
                |e| {
                    self.debug(&format!("livegate: could not replace the body: {e:?}"));
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
                self.debug(&format!("livegate: local reply failed: {e:?}"));
            }
        }

        fn dispatch_auth_check(&self, check: &AuthCheck<'_>) -> Result<(), DispatchRefused> {
            let bearer = format!("Bearer {}", check.key);
            let headers = vec![
                (":method", "POST"),
                (":path", check.path),
                (":authority", check.authority),
                ("authorization", bearer.as_str()),
                (INTERNAL_TOKEN, check.token),
            ];
            let timeout = Duration::from_millis(check.timeout_ms);
            match self.dispatch_as_root(check.cluster, headers, timeout) {
                Ok(_token) => Ok(()),
                Err(e) => {
                    self.debug(&format!(
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

        fn response_body(&self) -> Option<Vec<u8>> {
            read_whole(BufferType::HttpResponseBody, self.response_chunk)
        }

        fn increment(&self, metric: Metric) {
            if let Some(Some(id)) = self.metrics.get(metric.index()) {
                let _ = hostcalls::increment_metric(*id, 1);
            }
        }

        fn debug(&self, message: &str) {
            let _ = hostcalls::log(LogLevel::Debug, message);
        }
    }
}
