//! The worker's spend queue: its bound, batches, one in flight, retry until acknowledged.

use super::*;
use livegate_contract::spend::SpendBatch;
use livegate_contract::KeyHash;

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

fn ids(body: &[u8]) -> Vec<String> {
    let batch: SpendBatch = serde_json::from_slice(body).unwrap();
    assert!(batch.validate().is_ok());
    batch.records.into_iter().map(|r| r.request_id).collect()
}

fn ack(accepted: u32, duplicates: u32) -> Vec<u8> {
    serde_json::to_vec(&SpendAck {
        accepted,
        duplicates,
    })
    .unwrap()
}

#[test]
fn a_full_queue_drops_the_new_record_and_keeps_the_owed_ones() {
    let mut queue = SpendQueue::new(3, 100);
    for i in 0..3 {
        assert_eq!(queue.push(record(i)), Pushed::Queued);
    }
    assert_eq!(queue.push(record(3)), Pushed::Dropped);
    assert_eq!(queue.len(), 3);
    let (body, count) = queue.next_batch(false).unwrap();
    assert_eq!(count, 3);
    assert_eq!(ids(&body), ["req-0", "req-1", "req-2"]);
}

#[test]
fn batches_are_bounded_and_one_is_in_flight_at_a_time() {
    let mut queue = SpendQueue::new(1000, 100);
    for i in 0..250 {
        queue.push(record(i));
    }
    let (body, count) = queue.next_batch(false).unwrap();
    assert_eq!((count, ids(&body).len()), (100, 100));
    assert!(queue.in_flight());
    assert_eq!(queue.next_batch(false), None, "one batch in flight");
    assert_eq!(
        queue.on_answer(Some(b"200"), Some(&ack(90, 10))),
        Delivery::Acknowledged(100)
    );
    assert_eq!(queue.len(), 150);
    let (body, _) = queue.next_batch(true).unwrap();
    assert_eq!(ids(&body).first().map(String::as_str), Some("req-100"));
    queue.on_answer(Some(b"200"), Some(&ack(100, 0)));
    assert_eq!(queue.next_batch(true), None, "50 is not a whole batch");
    let (_, count) = queue.next_batch(false).unwrap();
    assert_eq!(count, 50, "a tick sends what there is");
}

#[test]
fn anything_but_a_whole_ack_keeps_the_batch_for_a_retry_in_order() {
    let mut queue = SpendQueue::new(10, 2);
    for i in 0..3 {
        queue.push(record(i));
    }
    type Answer<'a> = (Option<&'a [u8]>, Option<Vec<u8>>);
    let failures: [Answer<'_>; 5] = [
        (Some(b"503"), Some(ack(2, 0))),
        (Some(b"200"), None),
        (Some(b"200"), Some(b"{\"accepted\": \"x\"}".to_vec())),
        (Some(b"200"), Some(ack(1, 0))),
        (None, None),
    ];
    for (status, body) in failures {
        let (sent, _) = queue.next_batch(false).unwrap();
        assert_eq!(ids(&sent), ["req-0", "req-1"]);
        assert_eq!(queue.on_answer(status, body.as_deref()), Delivery::Retry(2));
        assert_eq!(queue.len(), 3);
    }
    queue.next_batch(false).unwrap();
    queue.not_sent();
    let (sent, _) = queue.next_batch(false).unwrap();
    assert_eq!(
        ids(&sent),
        ["req-0", "req-1"],
        "a refused dispatch keeps it too"
    );
    assert_eq!(
        queue.on_answer(Some(b"200"), Some(&ack(0, 2))),
        Delivery::Acknowledged(2)
    );
    let (sent, _) = queue.next_batch(false).unwrap();
    assert_eq!(ids(&sent), ["req-2"]);
}

#[test]
fn an_answer_without_a_batch_changes_nothing() {
    let mut queue = SpendQueue::new(10, 2);
    queue.push(record(0));
    assert_eq!(
        queue.on_answer(Some(b"200"), Some(&ack(1, 0))),
        Delivery::Stray
    );
    assert_eq!(queue.len(), 1);
    assert_eq!(SpendQueue::new(10, 2).next_batch(false), None);
}

#[test]
fn records_with_long_labels_go_in_shorter_batches_that_fit_the_body_limit() {
    let mut queue = SpendQueue::new(1000, 100);
    let long = "m".repeat(livegate_contract::spend::MAX_LABEL_LEN);
    for i in 0..100 {
        queue.push(SpendRecord {
            key_alias: Some(long.clone()),
            team_id: Some(long.clone()),
            model_requested: Some(long.clone()),
            model_returned: Some(long.clone()),
            deployment: None,
            ..record(i)
        });
    }
    let (body, count) = queue.next_batch(false).unwrap();
    assert!(body.len() <= MAX_BATCH_BYTES, "{}", body.len());
    assert!(count < 100 && count > 1, "{count}");
    assert_eq!(ids(&body).len(), count);
}

#[test]
fn a_batch_is_byte_for_byte_the_contract_batch_of_its_records() {
    let long = "m".repeat(livegate_contract::spend::MAX_LABEL_LEN);
    let records: Vec<SpendRecord> = (0..120)
        .map(|i| SpendRecord {
            key_alias: (i % 3 == 0).then(|| long.clone()),
            team_id: (i % 5 == 0).then(|| "team \"quoted\" \u{1F600}".into()),
            ..record(i)
        })
        .collect();
    let mut queue = SpendQueue::new(1000, 100);
    for record in &records {
        queue.push(record.clone());
    }
    let mut sent = 0;
    while let Some((body, count)) = queue.next_batch(false) {
        let batch = SpendBatch {
            records: records[sent..sent + count].to_vec(),
        };
        assert_eq!(body, serde_json::to_vec(&batch).unwrap());
        assert!(body.len() <= MAX_BATCH_BYTES, "{}", body.len());
        sent += count;
        queue.on_answer(Some(b"200"), Some(&ack(count as u32, 0)));
    }
    assert_eq!(sent, records.len());
}

#[test]
fn after_an_ack_a_batch_cut_by_its_bytes_is_whole() {
    let long = "m".repeat(livegate_contract::spend::MAX_LABEL_LEN);
    let mut queue = SpendQueue::new(1000, 100);
    for i in 0..100 {
        queue.push(SpendRecord {
            key_alias: Some(long.clone()),
            model_returned: Some(long.clone()),
            ..record(i)
        });
    }
    let (_, first) = queue.next_batch(false).unwrap();
    assert!((34..50).contains(&first), "{first}: the bytes cut it");
    queue.on_answer(Some(b"200"), Some(&ack(first as u32, 0)));
    let (_, second) = queue
        .next_batch(true)
        .expect("as many as fit make a whole batch");
    assert_eq!(second, first);
    queue.on_answer(Some(b"200"), Some(&ack(second as u32, 0)));
    assert_eq!(
        queue.next_batch(true),
        None,
        "the rest fits in one batch, not a whole one"
    );
    let (_, rest) = queue.next_batch(false).unwrap();
    assert_eq!(rest, 100 - first - second);
}
