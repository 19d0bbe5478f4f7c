//! The gate natively: its budget step over a real spool, its pipeline over a database that
//! is away (the key cache answers) and a fixed clock.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use livegate_contract::{ApiKey, CredentialError, DenyReason};

use super::decision::{with_spend, Decision};
use super::{At, Gate, GateSettings};
use crate::budget::reserve::Held;
use crate::key_cache::CacheConfig;
use crate::key_cache::{KeyCache, KeyState};
use crate::ledger::tests::ledger_with_reservation;
use crate::ledger::{Ledger, SpoolFullPolicy};
use crate::model::KeyRecord;

/// The budget step of a check, as the gate composes it.
fn check_budget(ledger: &Ledger, decision: Decision, now_ms: u64) -> (Decision, Option<Held>) {
    let Decision::Allow { record, .. } = &decision else {
        return (decision, None);
    };
    let verdict = ledger.admit_spend(record, now_ms);
    with_spend(decision, verdict)
}

fn allow(max_budget: Option<f64>, spend: f64) -> Decision {
    let mut record = crate::key_cache::tests::record("sk-r");
    record.budget.max_budget = max_budget;
    record.spend = spend;
    Decision::Allow {
        record: Box::new(record),
        cache_ttl_seconds: 60,
        lease: None,
    }
}

#[tokio::test]
async fn a_budget_check_counts_requests_in_flight_and_near_the_budget_asks_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger_with_reservation(dir.path(), 3.0).await;
    // Room 9 with 0 spent: three reservations of 3 fit, a fourth does not.
    let mut held = vec![];
    for _ in 0..3 {
        let (d, h) = check_budget(&ledger, allow(Some(9.0), 0.0), 0);
        let Decision::Allow {
            cache_ttl_seconds, ..
        } = d
        else {
            panic!("admitted within the reservations: {d:?}");
        };
        assert_eq!(cache_ttl_seconds, 0, "near its budget: not cached");
        held.push(h.unwrap());
    }
    let (d, h) = check_budget(&ledger, allow(Some(9.0), 0.0), 0);
    let Decision::OverBudget(budget) = d else {
        panic!("a fourth in flight is refused: {d:?}");
    };
    assert_eq!(
        (budget.spend, h),
        (9.0, None),
        "the refusal counts the reservations"
    );
    // A record arrives: its reservation goes, room for one more.
    ledger.release(&held[0].key, held[0].team.as_deref());
    assert!(matches!(
        check_budget(&ledger, allow(Some(9.0), 0.0), 0).0,
        Decision::Allow { .. }
    ));
    // Far from its budget a key is cached as before; without a budget nothing is reserved.
    let (d, h) = check_budget(&ledger, allow(Some(10_000.0), 0.0), 0);
    assert!(
        matches!(
            d,
            Decision::Allow {
                cache_ttl_seconds: 60,
                ..
            }
        ),
        "{d:?}"
    );
    assert!(h.is_some());
    let (d, h) = check_budget(&ledger, allow(None, 0.0), 0);
    assert!(
        matches!(
            d,
            Decision::Allow {
                cache_ttl_seconds: 60,
                ..
            }
        ),
        "{d:?}"
    );
    assert_eq!(h, None);
}

#[tokio::test]
async fn with_reservations_off_the_check_is_the_drained_spend_alone() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger_with_reservation(dir.path(), 0.0).await;
    for _ in 0..10 {
        let (d, h) = check_budget(&ledger, allow(Some(9.0), 8.0), 0);
        assert!(
            matches!(
                d,
                Decision::Allow {
                    cache_ttl_seconds: 60,
                    ..
                }
            ),
            "{d:?}"
        );
        assert_eq!(h, None);
    }
    assert!(matches!(
        check_budget(&ledger, allow(Some(9.0), 9.0), 0).0,
        Decision::OverBudget(_)
    ));
}

async fn gate(dir: &std::path::Path, records: &[KeyRecord]) -> Gate {
    let db = crate::db::Db::fixed(None, Default::default(), Duration::from_secs(1));
    let cache = Arc::new(KeyCache::new(CacheConfig {
        fresh: Duration::from_secs(10),
        staleness: Duration::from_secs(900),
        max_silence: Duration::from_secs(240),
        max_entries: 100,
    }));
    for r in records {
        let state = KeyState::Present(Box::new(r.clone()));
        cache.put(&r.token, state, r.version, Instant::now());
    }
    let ledger = ledger_with_reservation(dir, 0.0).await;
    Gate::new(
        db.clone(),
        cache,
        ledger,
        crate::rate_limit::Limiter::new(db, Duration::from_secs(1)),
        Arc::default(),
        GateSettings {
            db_deadline: Duration::from_secs(1),
            cache_ttl: Duration::from_secs(60),
            when_full: SpoolFullPolicy::RefuseBudgeted,
        },
    )
}

fn at() -> At {
    At {
        now: Utc::now(),
        now_ms: crate::rate_limit::now_ms(),
        until: tokio::time::Instant::now() + Duration::from_secs(1),
    }
}

fn key(raw: &str) -> Result<ApiKey, CredentialError> {
    ApiKey::from_headers(None, Some(raw.as_bytes()))
}

#[tokio::test]
async fn the_gate_decides_from_the_cache_when_the_database_is_away() {
    let dir = tempfile::tempdir().unwrap();
    let good = crate::key_cache::tests::record("sk-good-key-0000000000000000");
    let mut blocked = crate::key_cache::tests::record("sk-blocked-key-00000000000000");
    blocked.blocked = true;
    let mut spent = crate::key_cache::tests::record("sk-spent-key-000000000000000");
    spent.budget.max_budget = Some(1.0);
    spent.spend = 1.0;
    let gate = gate(dir.path(), &[good, blocked, spent]).await;
    let check = |raw: &'static str| gate.check(key(raw), at());
    assert!(matches!(
        check("sk-good-key-0000000000000000").await,
        Decision::Allow { .. }
    ));
    assert_eq!(
        check("sk-blocked-key-00000000000000").await,
        Decision::Deny(DenyReason::KeyBlocked)
    );
    assert!(matches!(
        check("sk-spent-key-000000000000000").await,
        Decision::OverBudget(_)
    ));
    // Unknown to the cache, and no database to ask: not known well enough to decide.
    assert_eq!(
        check("sk-never-issued-000000000000").await,
        Decision::Unavailable
    );
    assert_eq!(
        gate.check(Err(CredentialError::Missing), at()).await,
        Decision::Deny(DenyReason::InvalidKey)
    );
}

/// A peer's writes learnt from the change log ask the database first (they lack what this
/// replica drained since the write); with the database away they still decide.
#[tokio::test]
async fn a_peers_write_from_the_log_decides_when_the_database_is_away() {
    let dir = tempfile::tempdir().unwrap();
    let renamed = crate::key_cache::tests::record("sk-renamed-key-0000000000000");
    let mut blocked = crate::key_cache::tests::record("sk-blocked-key-00000000000000");
    let gate = gate(dir.path(), &[renamed.clone(), blocked.clone()]).await;
    blocked.blocked = true;
    for (r, seq) in [(&renamed, 2), (&blocked, 3)] {
        let state = KeyState::Present(Box::new(r.clone()));
        gate.cache.put_change(&r.token, state, seq, Instant::now());
    }
    assert!(matches!(
        gate.check(key("sk-renamed-key-0000000000000"), at()).await,
        Decision::Allow { .. }
    ));
    assert_eq!(
        gate.check(key("sk-blocked-key-00000000000000"), at()).await,
        Decision::Deny(DenyReason::KeyBlocked)
    );
    let stale = gate.counters.key_cache_stale_served.load(Relaxed);
    assert_eq!(stale, 2, "both asked the database first");
}
