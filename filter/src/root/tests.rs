//! The root's work against a recording host: spend batches sent and acknowledged, the
//! queue gauge, the poll lease shared by the workers of one Envoy, the feed published and
//! applied. Time is a parameter throughout.

use super::*;
use crate::cache::Cached;
use crate::config::Config;
use crate::decision::{DenyReason, Grant, Identity};
use crate::host_env::Secret;
use livegate_contract::spend::{SpendAck, SpendBatch, SpendRecord};
use livegate_contract::{KeyChange, KeyHash, KeyStatus};
use std::collections::HashMap;

const TOKEN: &str = "internal-test-0123456789abcdef0123456789abcdef";

/// Envoy's shared data: one store for every worker, with a CAS value per key that moves
/// with every write.
#[derive(Default)]
struct SharedData {
    values: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: Cell<u32>,
}

/// A call as dispatched, owned so tests can inspect it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    token: u32,
    cluster: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timeout_ms: u64,
}

impl Sent {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One worker's host: what it dispatched, counted and logged, the answer it is delivering.
struct MockRootHost<'a> {
    shared: &'a SharedData,
    sent: RefCell<Vec<Sent>>,
    next_token: Cell<u32>,
    refuse_dispatch: Cell<bool>,
    /// Shared-data writes that lose to another worker first (a CAS mismatch).
    lose_writes: Cell<usize>,
    status: RefCell<Option<Vec<u8>>>,
    body: RefCell<Option<Vec<u8>>>,
    counts: RefCell<HashMap<usize, usize>>,
    gauge: Cell<i64>,
    gauge_defined: bool,
}

impl<'a> MockRootHost<'a> {
    fn new(shared: &'a SharedData) -> MockRootHost<'a> {
        MockRootHost {
            shared,
            sent: RefCell::new(Vec::new()),
            next_token: Cell::new(100),
            refuse_dispatch: Cell::new(false),
            lose_writes: Cell::new(0),
            status: RefCell::new(None),
            body: RefCell::new(None),
            counts: RefCell::new(HashMap::new()),
            gauge: Cell::new(0),
            gauge_defined: true,
        }
    }

    fn count_of(&self, metric: Metric) -> usize {
        self.counts
            .borrow()
            .get(&metric.index())
            .copied()
            .unwrap_or(0)
    }

    fn last_sent(&self) -> Sent {
        self.sent
            .borrow()
            .last()
            .cloned()
            .expect("a call was dispatched")
    }

    /// Delivers an answer to the call `token` to `root`.
    fn deliver(&self, root: &Root, token: u32, status: &str, body: &[u8], now: Option<Millis>) {
        *self.status.borrow_mut() = Some(status.as_bytes().to_vec());
        *self.body.borrow_mut() = Some(body.to_vec());
        root.on_call_answer(self, token, body.len(), now);
    }
}

impl RootHost for MockRootHost<'_> {
    fn dispatch(&self, call: &Call<'_>) -> Result<u32, DispatchRefused> {
        if self.refuse_dispatch.get() {
            return Err(DispatchRefused);
        }
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        self.sent.borrow_mut().push(Sent {
            token,
            cluster: call.cluster.to_string(),
            headers: call
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: call.body.map(<[u8]>::to_vec),
            timeout_ms: call.timeout_ms,
        });
        Ok(token)
    }

    fn call_status(&self) -> Option<Vec<u8>> {
        self.status.borrow().clone()
    }

    fn call_body(&self, size: usize) -> Option<Vec<u8>> {
        let body = self.body.borrow();
        body.as_ref().map(|b| b[..size.min(b.len())].to_vec())
    }

    fn shared(&self, key: &str) -> Option<Shared> {
        let values = self.shared.values.borrow();
        Some(match values.get(key) {
            Some((bytes, cas)) => (Some(bytes.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn set_shared(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        if self.lose_writes.get() > 0 {
            self.lose_writes.set(self.lose_writes.get() - 1);
            return false;
        }
        let mut values = self.shared.values.borrow_mut();
        let current = values.get(key).map(|(_, c)| *c);
        if cas.is_some() && cas != current {
            return false;
        }
        let next = self.shared.next_cas.get() + 1;
        self.shared.next_cas.set(next);
        values.insert(key.to_string(), (value.to_vec(), next));
        true
    }

    fn count(&self, metric: Metric, n: usize) {
        *self.counts.borrow_mut().entry(metric.index()).or_default() += n;
    }

    fn add_to_queue_gauge(&self, delta: i64) -> bool {
        if self.gauge_defined {
            self.gauge.set(self.gauge.get() + delta);
        }
        self.gauge_defined
    }

    fn debug(&self, _message: &str) {}
}

fn config() -> Config {
    let mut config = Config {
        internal_token: Secret::new(TOKEN),
        ..Config::default()
    };
    config.metering.enabled = true;
    config.metering.batch_records = 2;
    config
}

fn root(config: Config) -> Root {
    Root::new(Rc::new(Plugin::new(config)))
}

fn record(i: u64) -> SpendRecord {
    SpendRecord {
        request_id: format!("req-{i}"),
        key_hash: KeyHash::of_raw("sk-test"),
        key_alias: None,
        team_id: None,
        model_requested: Some("m".into()),
        model_returned: None,
        deployment: None,
        prompt_tokens: Some(i),
        completion_tokens: None,
        total_tokens: None,
        cached_tokens: None,
        reasoning_tokens: None,
        cache_creation_tokens: None,
        usage_known: true,
        usage_estimate_reason: None,
        status: 200,
        streamed: false,
        start_time_ms: 1,
        end_time_ms: 2,
    }
}

fn queue(root: &Root, ids: impl IntoIterator<Item = u64>) {
    for i in ids {
        root.plugin().with_spend(|q| q.push(record(i)));
    }
}

fn queued(root: &Root) -> usize {
    root.plugin().with_spend(|q| q.len()).unwrap()
}

fn ids(sent: &Sent) -> Vec<String> {
    let batch: SpendBatch = serde_json::from_slice(sent.body.as_deref().unwrap()).unwrap();
    batch.records.into_iter().map(|r| r.request_id).collect()
}

fn ack(accepted: u32) -> Vec<u8> {
    serde_json::to_vec(&SpendAck {
        accepted,
        duplicates: 0,
    })
    .unwrap()
}

fn h(n: u64) -> KeyHash {
    KeyHash::parse_hex(&format!("{n:064x}")).unwrap()
}

fn feed_answer(cursor: u64, changes: Vec<KeyChange>) -> Vec<u8> {
    serde_json::to_vec(&ChangeFeed {
        cursor,
        reset: false,
        changes,
    })
    .unwrap()
}

fn blocked(seq: u64, key: u64) -> KeyChange {
    KeyChange {
        seq,
        key_hash: h(key),
        status: KeyStatus::Blocked,
    }
}

fn allow_cached(root: &Root, key: u64) {
    root.plugin()
        .with_cache(|c| c.record_allow(h(key), Identity::default(), Grant::ttl(u64::MAX), 0));
}

fn cached(root: &Root, key: u64, now: Millis) -> Option<Cached> {
    root.plugin()
        .with_cache(|c| c.fresh(&h(key), now))
        .flatten()
}

// Spend records.

#[test]
fn a_tick_sends_what_is_queued_as_one_batch_with_the_internal_token() {
    let data = SharedData::default();
    let host = MockRootHost::new(&data);
    let mut cfg = config();
    cfg.change_poll_ms = 0;
    let root = root(cfg);
    queue(&root, [1]);
    root.on_tick(&host, Some(1_000));
    let sent = host.last_sent();
    assert_eq!(sent.header(":method"), Some("POST"));
    assert_eq!(
        sent.header(":path"),
        Some(livegate_contract::SPEND_RECORDS_PATH)
    );
    assert_eq!(sent.header(INTERNAL_TOKEN), Some(TOKEN));
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(sent.cluster, config().control_plane_cluster);
    assert_eq!(sent.timeout_ms, config().metering.send_timeout_ms);
    assert_eq!(ids(&sent), ["req-1"]);
    assert_eq!(host.count_of(Metric::SpendRecordsSent), 1);
}

#[test]
fn one_batch_is_in_flight_at_a_time() {
    let data = SharedData::default();
    let host = MockRootHost::new(&data);
    let root = root(config());
    queue(&root, [1]);
    root.on_tick(&host, Some(1_000));
    queue(&root, [2]);
    root.on_tick(&host, Some(2_000));
    let spend_calls = host
        .sent
        .borrow()
        .iter()
        .filter(|s| s.header(":method") == Some("POST"))
        .count();
    assert_eq!(
        spend_calls, 1,
        "the second tick waits for the first batch's answer"
    );
}

#[test]
fn nothing_is_sent_with_metering_off() {
    let data = SharedData::default();
    let host = MockRootHost::new(&data);
    let mut cfg = config();
    cfg.metering.enabled = false;
    cfg.change_poll_ms = 0;
    let root = root(cfg);
    queue(&root, [1]);
    root.on_tick(&host, Some(1_000));
    assert!(host.sent.borrow().is_empty());
}

#[test]
fn a_refused_dispatch_keeps_the_records_and_a_later_tick_sends_them() {
    let data = SharedData::default();
    let host = MockRootHost::new(&data);
    let mut cfg = config();
    cfg.change_poll_ms = 0;
    let root = root(cfg);
    queue(&root, [1, 2]);
    host.refuse_dispatch.set(true);
    root.on_tick(&host, Some(1_000));
    assert_eq!(host.count_of(Metric::SpendRecordsRetried), 2);
    assert_eq!(queued(&root), 2);
    host.refuse_dispatch.set(false);
    root.on_tick(&host, Some(2_000));
    assert_eq!(ids(&host.last_sent()), ["req-1", "req-2"]);
}

#[test]
fn an_acknowledgement_lets_the_records_go_and_sends_the_next_whole_batch_at_once() {
    let data = SharedData::default();
    let host = MockRootHost::new(&data);
    let mut cfg = config();
    cfg.change_poll_ms = 0;
    let root = root(cfg);
    queue(&root, [1, 2, 3, 4, 5]);
    root.on_tick(&host, Some(1_000));
    let first = host.last_sent();
    assert_eq!(ids(&first), ["req-1", "req-2"]);
    host.deliver(&root, first.token, "200", &ack(2), Some(1_010));
    assert_eq!(host.count_of(Metric::SpendRecordsAcknowledged), 2);
    let second = host.last_sent();
    assert_eq!(
        ids(&second),
        ["req-3", "req-4"],
        "a whole batch goes without a tick"
    );
    host.deliver(&root, second.token, "200", &ack(2), Some(1_020));
    assert_eq!(
        host.sent.borrow().len(),
        2,
        "a partial batch waits for a tick"
    );
    assert_eq!(queued(&root), 1);
}

#[test]
fn a_failed_answer_keeps_the_batch_for_the_next_tick() {
    let data = SharedData::default();
    let host = MockRootHost::new(&data);
    let mut cfg = config();
    cfg.change_poll_ms = 0;
    let root = root(cfg);
    queue(&root, [1, 2]);
    root.on_tick(&host, Some(1_000));
    let first = host.last_sent();
    host.deliver(&root, first.token, "503", b"", Some(1_010));
    assert_eq!(host.count_of(Metric::SpendRecordsRetried), 2);
    assert_eq!(queued(&root), 2);
    root.on_tick(&host, Some(2_000));
    let again = host.last_sent();
    assert_ne!(again.token, first.token);
    assert_eq!(
        ids(&again),
        ["req-1", "req-2"],
        "the same records, in order"
    );
}

#[test]
fn an_acknowledgement_larger_than_any_ack_is_not_read() {
    let data = SharedData::default();
    let host = MockRootHost::new(&data);
    let mut cfg = config();
    cfg.change_poll_ms = 0;
    let root = root(cfg);
    queue(&root, [1]);
    root.on_tick(&host, Some(1_000));
    let sent = host.last_sent();
    let mut padded = ack(1);
    padded.resize(MAX_ACK_BYTES + 1, b' ');
    host.deliver(&root, sent.token, "200", &padded, Some(1_010));
    assert_eq!(host.count_of(Metric::SpendRecordsAcknowledged), 0);
    assert_eq!(queued(&root), 1);
}

#[test]
fn the_queue_gauge_moves_by_what_this_worker_changed() {
    let data = SharedData::default();
    let host = MockRootHost::new(&data);
    let mut cfg = config();
    cfg.change_poll_ms = 0;
    let root = root(cfg);
    queue(&root, [1, 2]);
    root.on_tick(&host, Some(1_000));
    assert_eq!(host.gauge.get(), 2);
    let sent = host.last_sent();
    host.deliver(&root, sent.token, "200", &ack(2), Some(1_010));
    assert_eq!(host.gauge.get(), 0);
    // Another worker's share of the gauge is its own: this worker adds only its changes.
    host.gauge.set(host.gauge.get() + 7);
    queue(&root, [3]);
    root.on_tick(&host, Some(2_000));
    assert_eq!(host.gauge.get(), 8);
}

#[test]
fn a_gauge_the_host_did_not_define_is_tried_again_with_the_whole_change() {
    let data = SharedData::default();
    let mut host = MockRootHost::new(&data);
    host.gauge_defined = false;
    let mut cfg = config();
    cfg.change_poll_ms = 0;
    cfg.metering.enabled = false;
    let root = root(cfg);
    queue(&root, [1, 2]);
    root.on_tick(&host, Some(1_000));
    host.gauge_defined = true;
    root.on_tick(&host, Some(2_000));
    assert_eq!(
        host.gauge.get(),
        2,
        "nothing was counted as reported while it failed"
    );
}

// The change feed.

#[test]
fn one_worker_of_an_envoy_wins_the_poll_lease_until_it_runs_out() {
    let data = SharedData::default();
    let (one, two) = (MockRootHost::new(&data), MockRootHost::new(&data));
    let cfg = config();
    let poll_ms = cfg.change_poll_ms;
    let (first, second) = (root(cfg.clone()), root(cfg));
    first.on_tick(&one, Some(1_000));
    second.on_tick(&two, Some(1_000));
    assert_eq!(one.sent.borrow().len(), 1, "the first to tick polls");
    assert!(two.sent.borrow().is_empty(), "the lease is held");
    second.on_tick(&two, Some(1_000 + poll_ms));
    assert_eq!(two.sent.borrow().len(), 1, "the lease ran out");
}

#[test]
fn a_poll_asks_for_changes_after_the_cursor_with_the_internal_token() {
    let data = SharedData::default();
    let host = MockRootHost::new(&data);
    let cfg = config();
    let poll_ms = cfg.change_poll_ms;
    let root = root(cfg);
    root.on_tick(&host, Some(1_000));
    let first = host.last_sent();
    assert_eq!(first.header(":method"), Some("GET"));
    assert_eq!(first.header(":path"), Some(livegate_contract::CHANGES_PATH));
    assert_eq!(first.header(INTERNAL_TOKEN), Some(TOKEN));
    assert_eq!(first.timeout_ms, config().auth_timeout_ms);
    host.deliver(
        &root,
        first.token,
        "200",
        &feed_answer(42, vec![]),
        Some(1_010),
    );
    root.on_tick(&host, Some(1_000 + poll_ms));
    let expected = format!("{}?after=42", livegate_contract::CHANGES_PATH);
    assert_eq!(host.last_sent().header(":path"), Some(expected.as_str()));
}

#[test]
fn no_poll_while_one_is_in_flight_nor_without_a_clock_nor_with_the_feed_off() {
    let data = SharedData::default();
    let host = MockRootHost::new(&data);
    let cfg = config();
    let poll_ms = cfg.change_poll_ms;
    let root = root(cfg);
    root.on_tick(&host, None);
    assert!(
        host.sent.borrow().is_empty(),
        "no clock: no lease can be judged"
    );
    root.on_tick(&host, Some(1_000));
    root.on_tick(&host, Some(1_000 + 10 * poll_ms));
    assert_eq!(
        host.sent.borrow().len(),
        1,
        "the poll in flight has not answered"
    );

    let data = SharedData::default();
    let host = MockRootHost::new(&data);
    let mut off = config();
    off.change_poll_ms = 0;
    root_off_tick(&host, off);
    assert!(host.sent.borrow().is_empty());
}

fn root_off_tick(host: &MockRootHost<'_>, config: Config) {
    let root = root(config);
    root.on_tick(host, Some(1_000));
}

#[test]
fn a_revocation_polled_by_one_worker_reaches_every_worker_cache() {
    let data = SharedData::default();
    let (one, two) = (MockRootHost::new(&data), MockRootHost::new(&data));
    let (first, second) = (root(config()), root(config()));
    allow_cached(&first, 7);
    allow_cached(&second, 7);
    first.on_tick(&one, Some(1_000));
    second.on_tick(&two, Some(1_000));
    let poll = one.last_sent();
    // The first answer starts the feed (a reset with no cursor yet forgets nothing).
    let start = serde_json::to_vec(&ChangeFeed {
        cursor: 1,
        reset: true,
        changes: vec![],
    })
    .unwrap();
    one.deliver(&first, poll.token, "200", &start, Some(1_010));
    assert!(matches!(cached(&first, 7, 1_020), Some(Cached::Allow(_))));
    first.on_tick(&one, Some(2_000));
    let poll = one.last_sent();
    one.deliver(
        &first,
        poll.token,
        "200",
        &feed_answer(2, vec![blocked(2, 7)]),
        Some(2_010),
    );
    assert_eq!(
        cached(&first, 7, 2_020),
        Some(Cached::Deny(DenyReason::KeyBlocked)),
        "the polling worker applies its answer at once"
    );
    assert_eq!(one.count_of(Metric::ChangesApplied), 1);
    assert!(matches!(cached(&second, 7, 2_020), Some(Cached::Allow(_))));
    second.on_tick(&two, Some(2_030));
    assert_eq!(
        cached(&second, 7, 2_040),
        Some(Cached::Deny(DenyReason::KeyBlocked)),
        "the other worker applies the shared window on its next tick"
    );
    assert_eq!(two.count_of(Metric::ChangesApplied), 1);
}

#[test]
fn a_window_whose_cas_has_not_moved_is_not_read_again() {
    let data = SharedData::default();
    let (one, two) = (MockRootHost::new(&data), MockRootHost::new(&data));
    let (first, second) = (root(config()), root(config()));
    first.on_tick(&one, Some(1_000));
    let poll = one.last_sent();
    let answer = feed_answer(3, vec![blocked(3, 9)]);
    one.deliver(&first, poll.token, "200", &answer, Some(1_010));
    second.on_tick(&two, Some(1_020));
    assert_eq!(two.count_of(Metric::ChangesApplied), 1);
    allow_cached(&second, 10);
    // The bytes change under the same CAS value: a worker that decoded them again would
    // see an empty window older than its last look (a gap) and forget its allows.
    if let Some((bytes, _)) = data.values.borrow_mut().get_mut(feed::SHARED_KEY) {
        *bytes = b"not the window".to_vec();
    }
    second.on_tick(&two, Some(1_040));
    assert_eq!(two.count_of(Metric::ChangeFeedGap), 0);
    assert!(matches!(cached(&second, 10, 1_050), Some(Cached::Allow(_))));
}

#[test]
fn an_answer_is_published_even_when_other_workers_write_first_a_few_times() {
    let data = SharedData::default();
    let host = MockRootHost::new(&data);
    let root = root(config());
    root.on_tick(&host, Some(1_000));
    let poll = host.last_sent();
    host.lose_writes.set(PUBLISH_ATTEMPTS - 1);
    host.deliver(
        &root,
        poll.token,
        "200",
        &feed_answer(5, vec![]),
        Some(1_010),
    );
    let (bytes, _) = host.shared(feed::SHARED_KEY).unwrap();
    assert_eq!(SharedFeed::decode(bytes.as_deref()).cursor, Some(5));
    assert_eq!(host.count_of(Metric::ChangeFeedError), 0);
}

#[test]
fn an_answer_that_cannot_be_published_or_read_is_a_feed_error() {
    let data = SharedData::default();
    let host = MockRootHost::new(&data);
    let cfg = config();
    let poll_ms = cfg.change_poll_ms;
    let root = root(cfg);
    root.on_tick(&host, Some(1_000));
    let poll = host.last_sent();
    host.lose_writes.set(PUBLISH_ATTEMPTS);
    host.deliver(
        &root,
        poll.token,
        "200",
        &feed_answer(5, vec![]),
        Some(1_010),
    );
    assert_eq!(host.count_of(Metric::ChangeFeedError), 1);
    assert_eq!(host.shared(feed::SHARED_KEY).unwrap().0, None);
    root.on_tick(&host, Some(1_000 + poll_ms));
    let poll = host.last_sent();
    host.deliver(&root, poll.token, "503", b"", Some(1_000 + poll_ms + 10));
    assert_eq!(host.count_of(Metric::ChangeFeedError), 2);
    root.on_tick(&host, Some(1_000 + 2 * poll_ms));
    let poll = host.last_sent();
    host.deliver(
        &root,
        poll.token,
        "200",
        b"{not json",
        Some(1_000 + 2 * poll_ms + 10),
    );
    assert_eq!(host.count_of(Metric::ChangeFeedError), 3);
}

#[test]
fn a_refused_poll_is_a_feed_error_and_the_next_lease_polls_again() {
    let data = SharedData::default();
    let host = MockRootHost::new(&data);
    let cfg = config();
    let poll_ms = cfg.change_poll_ms;
    let mut cfg = cfg;
    cfg.metering.enabled = false;
    let root = root(cfg);
    host.refuse_dispatch.set(true);
    root.on_tick(&host, Some(1_000));
    assert_eq!(host.count_of(Metric::ChangeFeedError), 1);
    host.refuse_dispatch.set(false);
    root.on_tick(&host, Some(1_000 + poll_ms));
    assert_eq!(host.sent.borrow().len(), 1);
}

#[test]
fn a_spend_answer_is_never_taken_for_the_feed_s() {
    let data = SharedData::default();
    let host = MockRootHost::new(&data);
    let root = root(config());
    queue(&root, [1, 2]);
    root.on_tick(&host, Some(1_000));
    let calls = host.sent.borrow().clone();
    let spend = calls
        .iter()
        .find(|s| s.header(":method") == Some("POST"))
        .unwrap();
    let poll = calls
        .iter()
        .find(|s| s.header(":method") == Some("GET"))
        .unwrap();
    host.deliver(&root, spend.token, "200", &ack(2), Some(1_010));
    assert_eq!(queued(&root), 0);
    assert_eq!(
        host.count_of(Metric::ChangeFeedError),
        0,
        "not read as a poll's answer"
    );
    host.deliver(
        &root,
        poll.token,
        "200",
        &feed_answer(8, vec![]),
        Some(1_020),
    );
    let (bytes, _) = host.shared(feed::SHARED_KEY).unwrap();
    assert_eq!(SharedFeed::decode(bytes.as_deref()).cursor, Some(8));
}

#[test]
fn a_new_configuration_is_what_new_requests_share() {
    let mut root = root(config());
    let mut other = config();
    other.change_poll_ms = 1_234;
    let plugin = Rc::new(Plugin::new(other));
    root.configure(plugin.clone());
    assert!(Rc::ptr_eq(root.plugin(), &plugin));
    assert_eq!(root.plugin().config.change_poll_ms, 1_234);
}
