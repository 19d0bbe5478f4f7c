use super::*;
use livegate_contract::KeyHash;
use std::path::Path;

fn record(id: &str, model: Option<&str>, tokens: Option<(u64, u64)>) -> SpendRecord {
    SpendRecord {
        request_id: id.into(),
        key_hash: KeyHash::of_raw("sk-test"),
        key_alias: Some("alias".into()),
        team_id: None,
        model_requested: Some("requested".into()),
        model_returned: model.map(str::to_owned),
        deployment: None,
        prompt_tokens: tokens.map(|t| t.0),
        completion_tokens: tokens.map(|t| t.1),
        total_tokens: tokens.map(|t| t.0 + t.1),
        cached_tokens: None,
        reasoning_tokens: None,
        cache_creation_tokens: None,
        usage_known: tokens.is_some(),
        usage_estimate_reason: None,
        status: 200,
        streamed: false,
        start_time_ms: 1_700_000_000_000,
        end_time_ms: 1_700_000_000_500,
    }
}

fn prices() -> PriceTable {
    let text = r#"{"m": {"input_cost_per_token": 0.5, "output_cost_per_token": 0.25},
                   "requested": {"input_cost_per_token": 1, "output_cost_per_token": 1}}"#;
    PriceTable::parse(text, Path::new("prices.json")).unwrap()
}

#[test]
fn a_record_is_priced_by_the_model_returned_else_the_one_requested() {
    let e = price(record("a", Some("m"), Some((4, 8))), &prices());
    assert_eq!((e.cost, e.unpriced), (4.0, false));
    let e = price(record("b", None, Some((4, 8))), &prices());
    assert_eq!((e.cost, e.unpriced), (12.0, false));
    let e = price(record("c", Some("other"), Some((4, 8))), &prices());
    assert_eq!((e.cost, e.unpriced), (0.0, true));
}

#[test]
fn a_record_naming_a_deployment_with_its_own_prices_is_priced_by_them() {
    let list = livegate_contract::model_list::ModelList::parse(
        "model_list:
  - model_name: m
    litellm_params: { model: openai/m }
    model_info: { input_cost_per_token: 2, output_cost_per_token: 3 }
  - model_name: m
    litellm_params: { model: openai/m }
",
    )
    .unwrap();
    let prices = prices().with_deployments(&list).unwrap();
    let own = SpendRecord {
        deployment: Some("livegate_deployment_0".into()),
        ..record("a", Some("m"), Some((4, 8)))
    };
    assert_eq!(price(own, &prices).cost, 4.0 * 2.0 + 8.0 * 3.0);
    // The other deployment has no model_info, and a route nobody configured (a filter
    // with another list) has no prices of its own: both priced by the model as before.
    for deployment in ["livegate_deployment_1", "livegate_deployment_9"] {
        let other = SpendRecord {
            deployment: Some(deployment.into()),
            ..record("b", Some("m"), Some((4, 8)))
        };
        assert_eq!(price(other, &prices).cost, 4.0, "{deployment}");
    }
}

#[test]
fn a_records_cached_cache_write_and_reasoning_counts_are_priced_and_spooled() {
    let text = r#"{"m": {"input_cost_per_token": 0.5, "output_cost_per_token": 0.25,
        "cache_read_input_token_cost": 0.125, "cache_creation_input_token_cost": 1,
        "output_cost_per_reasoning_token": 2}}"#;
    let prices = PriceTable::parse(text, Path::new("prices.json")).unwrap();
    let r = SpendRecord {
        cached_tokens: Some(8),
        cache_creation_tokens: Some(4),
        reasoning_tokens: Some(2),
        ..record("a", Some("m"), Some((16, 6)))
    };
    // 4 uncached × 0.5 + 8 × 0.125 + 4 × 1, then 4 × 0.25 + 2 × 2.
    let e = price(r.clone(), &prices);
    assert_eq!((e.cost, e.unpriced), (2.0 + 1.0 + 4.0 + 1.0 + 4.0, false));
    let entries = spool_entries(SpendBatch { records: vec![r] }, &prices).unwrap();
    let spooled: LedgerEntry = serde_json::from_slice(&entries[0].1).unwrap();
    assert_eq!(spooled, e, "the details survive the spool");
}

#[test]
fn a_cost_comes_back_from_the_spool_as_the_same_f64() {
    // 13 × 1e-5 + 32 × 1e-6 + (8 × 3e-5 + 16 × 6e-5), what LiteLLM charges: JSON's shortest
    // form of it is one that serde_json's default float parser reads one ulp off.
    let text = r#"{"m": {"input_cost_per_token": 1e-05, "output_cost_per_token": 3e-05,
        "cache_read_input_token_cost": 1e-06, "output_cost_per_reasoning_token": 6e-05}}"#;
    let prices = PriceTable::parse(text, Path::new("prices.json")).unwrap();
    let r = SpendRecord {
        cached_tokens: Some(32),
        reasoning_tokens: Some(16),
        ..record("a", Some("m"), Some((45, 24)))
    };
    let e = price(r.clone(), &prices);
    assert_eq!(e.cost, 0.0013620000000000001);
    let entries = spool_entries(SpendBatch { records: vec![r] }, &prices).unwrap();
    let spooled = drain_batch(&[Entry {
        seq: 1,
        id: entries[0].0.clone(),
        data: entries[0].1.clone(),
    }]);
    assert_eq!(spooled.rows[0].cost.to_bits(), e.cost.to_bits());
}

#[test]
fn without_a_price_file_every_model_costs_zero_and_is_marked_unpriced() {
    let e = price(record("a", Some("m"), Some((4, 8))), &PriceTable::default());
    assert_eq!((e.cost, e.unpriced), (0.0, true));
}

#[test]
fn a_record_without_usage_costs_zero() {
    let e = price(record("a", Some("m"), None), &prices());
    assert_eq!((e.cost, e.unpriced), (0.0, false));
}

#[test]
fn spooled_entries_read_back_as_the_same_rows_with_the_last_number_as_watermark() {
    let batch = SpendBatch {
        records: vec![
            record("a", Some("m"), Some((1, 2))),
            record("b", None, None),
        ],
    };
    let entries: Vec<Entry> = spool_entries(batch.clone(), &prices())
        .unwrap()
        .into_iter()
        .zip(7..)
        .map(|((id, data), seq)| Entry { seq, id, data })
        .collect();
    assert_eq!(entries[0].id, "a");
    let drained = drain_batch(&entries);
    assert_eq!(drained.through, Some(8));
    assert!(drained.unreadable.is_empty());
    let expected: Vec<LedgerEntry> = batch
        .records
        .into_iter()
        .map(|r| price(r, &prices()))
        .collect();
    assert_eq!(drained.rows, expected);
}

#[test]
fn an_unreadable_entry_is_set_apart_but_still_moves_the_watermark() {
    let entries = vec![Entry {
        seq: 3,
        id: "x".into(),
        data: b"not json".to_vec(),
    }];
    let drained = drain_batch(&entries);
    assert_eq!(drained.rows, vec![]);
    assert_eq!(
        drained.unreadable,
        vec![("x".to_string(), b"not json".to_vec())]
    );
    assert_eq!(drained.through, Some(3));
}

#[test]
fn nothing_to_drain_has_no_watermark() {
    assert_eq!(drain_batch(&[]), DrainBatch::default());
}

#[test]
fn the_drained_row_is_the_json_the_sql_reads() {
    // jsonb_to_recordset in engine/spend_queries.rs reads these names.
    let e = price(record("a", Some("m"), Some((1, 2))), &prices());
    let v = serde_json::to_value(&e).unwrap();
    for name in [
        "request_id",
        "key_hash",
        "key_alias",
        "team_id",
        "model_requested",
        "model_returned",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cost",
        "unpriced",
        "usage_known",
        "status",
        "streamed",
        "start_time_ms",
        "end_time_ms",
    ] {
        assert!(v.get(name).is_some(), "{name}: {v}");
    }
    assert_eq!(v["key_hash"], KeyHash::of_raw("sk-test").to_string());
}

pub(crate) async fn ledger_with_reservation(dir: &Path, usd: f64) -> Ledger {
    let config = SpendConfig {
        spool: crate::spool::SpoolConfig {
            path: dir.join("spend.spool"),
            max_bytes: 64 << 20,
            max_records: 1000,
        },
        prices_file: None,
        drain_batch: 100,
        drain_retry: std::time::Duration::from_millis(100),
        drain_linger: std::time::Duration::ZERO,
        metrics_max_series: 10,
        when_full: crate::ledger::SpoolFullPolicy::RefuseBudgeted,
        reservation_usd: usd,
        reservation_lease: std::time::Duration::from_secs(60),
    };
    Ledger::open(&config).await.unwrap()
}

fn connected_to(database: &str) -> crate::db::Db {
    let snapshot = crate::db::Snapshot {
        database: Some(database.into()),
        ..Default::default()
    };
    crate::db::Db::fixed(None, snapshot, std::time::Duration::from_secs(1))
}

#[tokio::test]
async fn a_spool_of_another_database_is_set_aside_and_its_pending_spend_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger_with_reservation(dir.path(), 0.0).await;
    assert!(
        ledger.binding.confirmed(),
        "a new spool takes records at once"
    );
    assert_eq!(
        bind::bind(&ledger, &connected_to("a/1")).await.unwrap(),
        "a/1"
    );
    let batch = SpendBatch {
        records: vec![record("r1", Some("m"), Some((1, 2)))],
    };
    ledger.intake(batch, |_| None).await.unwrap();
    // Restarted with that spool: records wait until the database reached is known.
    drop(ledger);
    let ledger = ledger_with_reservation(dir.path(), 0.0).await;
    assert!(!ledger.binding.confirmed());
    let batch = SpendBatch {
        records: vec![record("r3", Some("m"), Some((1, 2)))],
    };
    assert!(matches!(
        ledger.intake(batch.clone(), |_| None).await,
        Err(IntakeError::Unbound)
    ));
    // What the old spool would count toward budgets.
    ledger.pending.lock().unwrap().add(&LedgerEntry {
        record: record("r2", Some("m"), Some((1, 2))),
        cost: 5.0,
        unpriced: false,
        user_id: None,
    });
    // Another database: set aside (renamed, kept whole), a fresh spool bound to it.
    assert_eq!(
        bind::bind(&ledger, &connected_to("b/2")).await.unwrap(),
        "b/2"
    );
    let aside = ledger.binding.set_aside();
    assert_eq!(aside.len(), 1);
    assert_eq!(aside[0].database.as_deref(), Some("a/1"));
    assert_eq!(aside[0].records, 1);
    let kept = crate::spool::inspect(Path::new(&aside[0].file)).unwrap();
    assert_eq!(kept.identity(), Some("a/1"));
    assert_eq!(kept.len(), 1);
    assert_eq!(
        ledger.spool.binding().await.unwrap(),
        (Some("b/2".into()), 0)
    );
    assert_eq!(ledger.pending_spend().key(&KeyHash::of_raw("sk-test")), 0.0);
    assert_eq!(ledger.binding.mismatches.load(Relaxed), 1);
    assert!(ledger.binding.confirmed());
    ledger.intake(batch, |_| None).await.unwrap();
    // Found again at the next start, next to the spool.
    drop(ledger);
    let ledger = ledger_with_reservation(dir.path(), 0.0).await;
    assert_eq!(ledger.binding.set_aside().len(), 1);
}

#[tokio::test]
async fn a_spool_without_identity_belongs_to_the_first_database_it_reaches() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger_with_reservation(dir.path(), 0.0).await;
    let batch = SpendBatch {
        records: vec![record("r1", Some("m"), Some((1, 2)))],
    };
    ledger.intake(batch, |_| None).await.unwrap();
    drop(ledger);
    let ledger = ledger_with_reservation(dir.path(), 0.0).await;
    assert!(ledger.binding.confirmed(), "unbound: nothing to wait for");
    bind::bind(&ledger, &connected_to("b/2")).await.unwrap();
    assert!(ledger.binding.set_aside().is_empty());
    assert_eq!(
        ledger.spool.binding().await.unwrap(),
        (Some("b/2".into()), 1)
    );
}
