//! Auth decisions: which key a request carries, and whether its record lets it in.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};

use livegate_contract::headers::{AUTHORIZATION, X_API_KEY};
use livegate_contract::{ApiKey, Budget, CredentialError, RateLimited};

pub use livegate_contract::DenyReason;

use crate::config::SpoolFullPolicy;
use crate::db::{Db, DbError};
use crate::key_cache::{KeyCache, KeyState, Lookup};
use crate::ledger::PendingSpend;
use crate::metrics::Metrics;
use crate::model::keys::KeyHash;
use crate::model::KeyRecord;

/// The answer to one auth check.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow {
        record: Box<KeyRecord>,
        cache_ttl_seconds: u64,
    },
    Deny(DenyReason),
    /// The key's or its team's spend has reached its `max_budget`.
    OverBudget(Budget),
    /// The spend spool is at its bound and `--spend-spool-full` refuses this key.
    SpendSpoolFull,
    /// A rate limit of the key or its team is reached.
    RateLimited(RateLimited),
    /// The database is away and the key is not known well enough to decide.
    Unavailable,
}

/// The credential, by the contract's one rule (the filter applies the same one): the
/// `Authorization: Bearer` key, else `x-api-key`; a malformed `authorization` is refused.
pub fn credential(headers: &HeaderMap) -> Result<ApiKey, CredentialError> {
    let raw = |name: &str| headers.get(name).map(|v| v.as_bytes());
    ApiKey::from_headers(raw(AUTHORIZATION), raw(X_API_KEY))
}

/// The pure decision over a record (or its absence). The TTL hint never outlives the key.
pub fn decide(record: Option<KeyRecord>, now: DateTime<Utc>, max_ttl_seconds: u64) -> Decision {
    let Some(record) = record else {
        return Decision::Deny(DenyReason::InvalidKey);
    };
    if record.blocked {
        return Decision::Deny(DenyReason::KeyBlocked);
    }
    if record.team.blocked {
        return Decision::Deny(DenyReason::TeamBlocked);
    }
    if record.is_expired(now) {
        return Decision::Deny(DenyReason::KeyExpired);
    }
    let until_expiry = record
        .expires
        .map(|e| u64::try_from((e - now).num_seconds()).unwrap_or(0));
    let ttl = until_expiry.map_or(max_ttl_seconds, |s| s.min(max_ttl_seconds));
    Decision::Allow {
        record: Box::new(record),
        cache_ttl_seconds: ttl,
    }
}

/// The budget check after [`decide`]: an allow whose key or team has spent its
/// `max_budget` becomes a refusal. Spent is the drained spend its record carries plus what
/// this control plane has spooled and not yet drained (`pending`); what other replicas
/// hold undrained is not known here (docs/operations.md, "The bound on over-spend").
pub fn check_budget(decision: Decision, pending: Option<&PendingSpend>) -> Decision {
    if let Decision::Allow { record, .. } = &decision {
        let (key, team) = pending.map_or((0.0, 0.0), |p| {
            (p.key(&record.token), p.team(record.team_id.as_deref()))
        });
        if let Some(budget) = crate::budget::exceeded(record, key, team) {
            return Decision::OverBudget(budget);
        }
    }
    decision
}

/// `--spend-spool-full` while the spool is at its bound: an allow for a key with a budget
/// (`refuse-budgeted`), or any allow (`refuse-all`), becomes a 503; `admit` changes nothing.
pub fn check_spool(decision: Decision, at_bound: bool, policy: SpoolFullPolicy) -> Decision {
    let Decision::Allow { record, .. } = &decision else {
        return decision;
    };
    let budgeted = record.budget.max_budget.is_some() || record.team.max_budget.is_some();
    match policy {
        _ if !at_bound => decision,
        SpoolFullPolicy::RefuseAll => Decision::SpendSpoolFull,
        SpoolFullPolicy::RefuseBudgeted if budgeted => Decision::SpendSpoolFull,
        SpoolFullPolicy::RefuseBudgeted | SpoolFullPolicy::Admit => decision,
    }
}

/// The rate limits after every other check: only a request that would be admitted is
/// counted in its windows.
pub async fn check_limits(
    decision: Decision,
    limiter: &crate::rate_limit::Limiter,
    metrics: &Metrics,
    now_ms: u64,
    until: tokio::time::Instant,
) -> Decision {
    let Decision::Allow { record, .. } = &decision else {
        return decision;
    };
    if record.limits().is_none() {
        return decision;
    }
    let (verdict, source) = limiter.admit(record, now_ms, until).await;
    if source == crate::rate_limit::Source::Local {
        metrics.rate_limit_local_decisions.fetch_add(1, Relaxed);
    }
    match verdict {
        Ok(()) => decision,
        Err(limited) => Decision::RateLimited(limited),
    }
}

/// Finds the key's state: a fresh cache entry, else the database, else (only if the
/// database is away) a stale cache entry. What a read finds is recorded only if no newer
/// write got there first, and the answer is whatever won: a read that raced a block never
/// lets the key in. An unknown key with no database is `Err`, never a record.
pub async fn resolve(
    db: &Db,
    cache: &KeyCache,
    metrics: &Metrics,
    token: &KeyHash,
    deadline: Duration,
) -> Result<Option<KeyRecord>, DbError> {
    let cached = match cache.get(token, Instant::now()) {
        Lookup::Fresh(state) => {
            metrics.key_cache_hits.fetch_add(1, Relaxed);
            return Ok(state.into_record());
        }
        Lookup::Unknown => {
            metrics.key_cache_hits.fetch_add(1, Relaxed);
            return Ok(None);
        }
        other => other,
    };
    metrics.key_cache_misses.fetch_add(1, Relaxed);
    match db.get_key_within(token, deadline).await {
        Ok(Some(r)) => {
            let version = r.version;
            let state = KeyState::Present(Box::new(r));
            Ok(cache
                .put(token, state, version, Instant::now())
                .into_record())
        }
        Ok(None) => Ok(cache
            .put_unknown(token, Instant::now())
            .and_then(KeyState::into_record)),
        Err(e) => match cached {
            Lookup::Stale(state) => {
                metrics.key_cache_stale_served.fetch_add(1, Relaxed);
                Ok(state.into_record())
            }
            _ => Err(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_cache::tests::record;
    use chrono::Duration;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn key(pairs: &[(&'static str, &str)]) -> Result<String, CredentialError> {
        credential(&headers(pairs)).map(|k| k.as_str().to_string())
    }

    #[test]
    fn the_credential_follows_the_contract_rule() {
        assert_eq!(
            key(&[("authorization", "Bearer sk-1")]).as_deref(),
            Ok("sk-1")
        );
        assert_eq!(
            key(&[("authorization", "bearer  sk-1 ")]).as_deref(),
            Ok("sk-1")
        );
        assert_eq!(key(&[("x-api-key", "sk-2")]).as_deref(), Ok("sk-2"));
        assert_eq!(key(&[]), Err(CredentialError::Missing));
        assert_eq!(
            key(&[("authorization", "Bearer ")]),
            Err(CredentialError::Empty)
        );
        // A malformed authorization is refused, not skipped for x-api-key.
        assert_eq!(
            key(&[("authorization", "Basic abc"), ("x-api-key", "sk-2")]),
            Err(CredentialError::NotBearer)
        );
        let long = format!("Bearer {}", "k".repeat(livegate_contract::MAX_KEY_LEN + 1));
        assert_eq!(
            key(&[("authorization", &long)]),
            Err(CredentialError::TooLong)
        );
    }

    #[test]
    fn unknown_keys_are_invalid() {
        assert_eq!(
            decide(None, Utc::now(), 30),
            Decision::Deny(DenyReason::InvalidKey)
        );
    }

    #[test]
    fn blocked_beats_expired_and_both_deny() {
        let now = Utc::now();
        let mut r = record("sk-a");
        r.expires = Some(now - Duration::seconds(1));
        assert_eq!(
            decide(Some(r.clone()), now, 30),
            Decision::Deny(DenyReason::KeyExpired)
        );
        r.blocked = true;
        assert_eq!(
            decide(Some(r.clone()), now, 30),
            Decision::Deny(DenyReason::KeyBlocked)
        );
        r.blocked = false;
        r.expires = None;
        r.team.blocked = true;
        assert_eq!(
            decide(Some(r), now, 30),
            Decision::Deny(DenyReason::TeamBlocked)
        );
    }

    #[test]
    fn a_full_spool_refuses_what_the_operator_chose() {
        let allow = |r: KeyRecord| decide(Some(r), Utc::now(), 30);
        let plain = record("sk-a");
        let mut budgeted = record("sk-b");
        budgeted.budget.max_budget = Some(10.0);
        let mut team_budgeted = record("sk-c");
        team_budgeted.team.max_budget = Some(10.0);
        let refused = |d: Decision| d == Decision::SpendSpoolFull;
        use SpoolFullPolicy::*;
        for r in [&plain, &budgeted, &team_budgeted] {
            assert!(!refused(check_spool(allow(r.clone()), false, RefuseAll)));
            assert!(!refused(check_spool(allow(r.clone()), true, Admit)));
            assert!(refused(check_spool(allow(r.clone()), true, RefuseAll)));
        }
        assert!(!refused(check_spool(allow(plain), true, RefuseBudgeted)));
        assert!(refused(check_spool(allow(budgeted), true, RefuseBudgeted)));
        assert!(refused(check_spool(
            allow(team_budgeted),
            true,
            RefuseBudgeted
        )));
        // A refusal stays what it was.
        let deny = Decision::Deny(DenyReason::KeyBlocked);
        assert_eq!(check_spool(deny.clone(), true, RefuseAll), deny);
    }

    #[test]
    fn the_ttl_hint_never_outlives_the_key() {
        let now = Utc::now();
        let mut r = record("sk-a");
        assert!(matches!(
            decide(Some(r.clone()), now, 30),
            Decision::Allow {
                cache_ttl_seconds: 30,
                ..
            }
        ));
        r.expires = Some(now + Duration::seconds(7));
        assert!(matches!(
            decide(Some(r), now, 30),
            Decision::Allow {
                cache_ttl_seconds: 7,
                ..
            }
        ));
    }
}
