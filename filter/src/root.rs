//! One worker's root context, apart from the host: sends the worker's spend records, takes
//! its turn polling the change feed for the whole Envoy, and applies the shared window.
//!
//! lib.rs implements [`RootHost`] over proxy-wasm and calls [`Root`] from its callbacks;
//! everything decided here is tested natively against a recording host, time passed in.

use crate::feed::{self, SharedFeed, WorkerFeed};
use crate::flow::Plugin;
use crate::host::DispatchRefused;
use crate::metrics::Metric;
use crate::spend_queue::Delivery;
use crate::time::Millis;
use livegate_contract::headers::INTERNAL_TOKEN;
use livegate_contract::ChangeFeed;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// The largest spend acknowledgement read (a `SpendAck` is a few dozen bytes).
pub const MAX_ACK_BYTES: usize = 4096;

/// How often a root retries folding an answer into the shared window when other workers
/// keep writing first.
const PUBLISH_ATTEMPTS: usize = 4;

/// A call the root dispatches to the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call<'a> {
    pub cluster: &'a str,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: Option<&'a [u8]>,
    pub timeout_ms: u64,
}

/// A shared-data value as the host holds it: the bytes (none if never written) and the
/// compare-and-swap value that changes with every write.
pub type Shared = (Option<Vec<u8>>, Option<u32>);

/// What the root needs of the host: dispatch, the call answer in hand, shared data (with
/// compare-and-swap), counters and a log. Failures are values; nothing here panics.
pub trait RootHost {
    /// Dispatches a call; the token its answer will carry.
    fn dispatch(&self, call: &Call<'_>) -> Result<u32, DispatchRefused>;
    /// The `:status` of the call answer being delivered.
    fn call_status(&self) -> Option<Vec<u8>>;
    /// The first `size` bytes of the body of the call answer being delivered.
    fn call_body(&self, size: usize) -> Option<Vec<u8>>;
    /// A shared-data value; `None` when the host would not say.
    fn shared(&self, key: &str) -> Option<Shared>;
    /// Writes a shared-data value if it is still at `cas`; false if another wrote first
    /// (or the host refused).
    fn set_shared(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
    /// Adds `n` to a counter.
    fn count(&self, metric: Metric, n: usize);
    /// Adds `delta` to the spend-queue gauge the workers share; false if it did not move.
    fn add_to_queue_gauge(&self, delta: i64) -> bool;
    /// Per-call detail: debug level.
    fn debug(&self, message: &str);
}

/// The root's state on one worker: the plugin it serves, its calls in flight, and where
/// it is in the change feed.
#[derive(Debug)]
pub struct Root {
    plugin: Rc<Plugin>,
    feed: RefCell<WorkerFeed>,
    /// The change-feed poll in flight.
    poll_token: Cell<Option<u32>>,
    /// The spend batch in flight (at most one per worker).
    spend_token: Cell<Option<u32>>,
    /// What this worker added to the shared spend-queue gauge so far (each worker adds its
    /// own changes).
    queue_reported: Cell<i64>,
    /// The CAS value of the shared window this worker applied last.
    seen: Cell<Option<u32>>,
    /// The cursor for this worker's next poll, from the last window it read.
    cursor: Cell<Option<u64>>,
}

impl Root {
    pub fn new(plugin: Rc<Plugin>) -> Root {
        Root {
            plugin,
            feed: RefCell::new(WorkerFeed::default()),
            poll_token: Cell::new(None),
            spend_token: Cell::new(None),
            queue_reported: Cell::new(0),
            seen: Cell::new(None),
            cursor: Cell::new(None),
        }
    }

    /// The plugin its requests share.
    pub fn plugin(&self) -> &Rc<Plugin> {
        &self.plugin
    }

    /// A new configuration: requests created from now on share this plugin.
    pub fn configure(&mut self, plugin: Rc<Plugin>) {
        self.plugin = plugin;
    }

    /// Every tick: send queued spend records; apply what other workers fetched, then poll
    /// if this worker wins the lease (when the feed is on). No clock, no feed this tick.
    pub fn on_tick(&self, host: &impl RootHost, now: Option<Millis>) {
        self.flush(host, false);
        self.record_queue(host);
        let Some(now) = now else {
            return;
        };
        if self.plugin.config.change_poll_ms == 0 {
            return;
        }
        if let Some(shared) = self.shared_feed_if_changed(host) {
            self.sync(host, &shared, now);
        }
        if self.poll_token.get().is_none() && self.take_lease(host, now) {
            self.poll(host);
        }
    }

    /// The answer to a call this root dispatched (or Envoy's report of its failure):
    /// a spend batch's, or else the feed poll's.
    pub fn on_call_answer(
        &self,
        host: &impl RootHost,
        token: u32,
        body_size: usize,
        now: Option<Millis>,
    ) {
        if self.spend_token.get() == Some(token) {
            self.on_spend_answer(host, body_size);
            return;
        }
        self.poll_token.set(None);
        let status = host.call_status();
        let body = (body_size > 0 && body_size <= feed::MAX_ANSWER_BYTES)
            .then(|| host.call_body(body_size))
            .flatten();
        let published = feed::parse_answer(status.as_deref(), body.as_deref())
            .and_then(|answer| self.publish(host, answer));
        match (published, now) {
            (Some(shared), Some(now)) => self.sync(host, &shared, now),
            (Some(_), None) => {}
            (None, _) => host.count(Metric::ChangeFeedError, 1),
        }
    }

    /// Sends the next batch of spend records, as the root (never for a stream, so a
    /// client that goes away cannot strand it): on a tick whatever is queued, after
    /// an acknowledgement only a whole batch. Never waits for the answer.
    fn flush(&self, host: &impl RootHost, whole_only: bool) {
        let config = &self.plugin.config;
        let metering = &config.metering;
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
        let call = Call {
            cluster: &config.control_plane_cluster,
            headers: vec![
                (":method", "POST"),
                (":path", metering.records_path.as_str()),
                (":authority", config.control_plane_authority.as_str()),
                ("content-type", "application/json"),
                (INTERNAL_TOKEN, config.internal_token.expose()),
            ],
            body: Some(&body),
            timeout_ms: metering.send_timeout_ms,
        };
        match host.dispatch(&call) {
            Ok(token) => {
                self.spend_token.set(Some(token));
                host.count(Metric::SpendRecordsSent, count);
            }
            Err(DispatchRefused) => {
                self.plugin.with_spend(|queue| queue.not_sent());
                host.count(Metric::SpendRecordsRetried, count);
                host.debug("livegate: spend dispatch refused");
            }
        }
    }

    /// The control plane answered the batch in flight (or Envoy reported a failure).
    fn on_spend_answer(&self, host: &impl RootHost, body_size: usize) {
        self.spend_token.set(None);
        let status = host.call_status();
        let body = (body_size > 0 && body_size <= MAX_ACK_BYTES)
            .then(|| host.call_body(body_size))
            .flatten();
        let delivery = self
            .plugin
            .with_spend(|queue| queue.on_answer(status.as_deref(), body.as_deref()));
        match delivery {
            Some(Delivery::Acknowledged(n)) => {
                host.count(Metric::SpendRecordsAcknowledged, n);
                self.flush(host, true);
            }
            Some(Delivery::Retry(n)) => host.count(Metric::SpendRecordsRetried, n),
            Some(Delivery::Stray) | None => {}
        }
        self.record_queue(host);
    }

    /// Moves the shared gauge by what this worker's queue changed since last time.
    fn record_queue(&self, host: &impl RootHost) {
        let Some(len) = self.plugin.with_spend(|q| q.len()) else {
            return;
        };
        let len = i64::try_from(len).unwrap_or(i64::MAX);
        let delta = len - self.queue_reported.get();
        if delta != 0 && host.add_to_queue_gauge(delta) {
            self.queue_reported.set(len);
        }
    }

    /// The shared window, unless it is the version this worker applied last (the CAS
    /// value changes with every write): most ticks then cost one host call, no decoding.
    fn shared_feed_if_changed(&self, host: &impl RootHost) -> Option<SharedFeed> {
        let (bytes, cas) = host.shared(feed::SHARED_KEY)?;
        if cas.is_some() && cas == self.seen.get() {
            return None;
        }
        self.seen.set(cas);
        Some(SharedFeed::decode(bytes.as_deref()))
    }

    /// Applies what any worker fetched to this worker's cache.
    fn sync(&self, host: &impl RootHost, shared: &SharedFeed, now: Millis) {
        self.cursor.set(shared.cursor);
        let applied = self
            .plugin
            .with_cache(|cache| self.feed.borrow_mut().apply(shared, cache, now));
        let applied = applied.unwrap_or_default();
        if applied.changes > 0 {
            host.count(Metric::ChangesApplied, applied.changes);
        }
        if applied.gap {
            host.count(Metric::ChangeFeedGap, 1);
        }
    }

    /// Takes the poll lease if it is free (compare-and-swap: one worker wins a round).
    fn take_lease(&self, host: &impl RootHost, now: Millis) -> bool {
        let Some((lease, cas)) = host.shared(feed::LEASE_KEY) else {
            return false;
        };
        if !feed::lease_free(lease.as_deref(), now) {
            return false;
        }
        let until = feed::lease_until(now.saturating_add(self.plugin.config.change_poll_ms));
        host.set_shared(feed::LEASE_KEY, &until, cas)
    }

    fn poll(&self, host: &impl RootHost) {
        let config = &self.plugin.config;
        let path = feed::poll_path(&config.changes_path, self.cursor.get());
        let call = Call {
            cluster: &config.control_plane_cluster,
            headers: vec![
                (":method", "GET"),
                (":path", path.as_str()),
                (":authority", config.control_plane_authority.as_str()),
                (INTERNAL_TOKEN, config.internal_token.expose()),
            ],
            body: None,
            timeout_ms: config.auth_timeout_ms,
        };
        match host.dispatch(&call) {
            Ok(token) => self.poll_token.set(Some(token)),
            Err(DispatchRefused) => host.count(Metric::ChangeFeedError, 1),
        }
    }

    /// Folds an answer into the shared window; retried when another worker wrote first.
    fn publish(&self, host: &impl RootHost, answer: ChangeFeed) -> Option<SharedFeed> {
        for _ in 0..PUBLISH_ATTEMPTS {
            let (bytes, cas) = host.shared(feed::SHARED_KEY)?;
            let mut shared = SharedFeed::decode(bytes.as_deref());
            shared.merge(answer.clone());
            if host.set_shared(feed::SHARED_KEY, &shared.encode(), cas) {
                return Some(shared);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
