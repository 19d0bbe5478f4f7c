//! Auth decisions: which key a request carries, and whether its record lets it in.

use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};

use crate::db::{Db, DbError};
use crate::key_cache::{KeyCache, Lookup};
use crate::keys::KeyHash;
use crate::metrics::Metrics;
use crate::record::KeyRecord;

/// Why a key is refused. The strings are the contract with the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    InvalidKey,
    KeyBlocked,
    KeyExpired,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::InvalidKey => "invalid_key",
            DenyReason::KeyBlocked => "key_blocked",
            DenyReason::KeyExpired => "key_expired",
        }
    }
}

/// The answer to one auth check.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow {
        record: Box<KeyRecord>,
        cache_ttl_seconds: u64,
    },
    Deny(DenyReason),
    /// The database is away and the key is not known well enough to decide.
    Unavailable,
}

/// The credential: `Authorization: Bearer <key>`, else `x-api-key`.
pub fn credential(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    bearer
        .or_else(|| {
            headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        })
        .filter(|k| !k.is_empty())
}

/// The pure decision over a record (or its absence). The TTL hint never outlives the key.
pub fn decide(record: Option<KeyRecord>, now: DateTime<Utc>, max_ttl_seconds: u64) -> Decision {
    let Some(record) = record else {
        return Decision::Deny(DenyReason::InvalidKey);
    };
    if record.blocked {
        return Decision::Deny(DenyReason::KeyBlocked);
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

/// Finds the record: a fresh cache entry, else the database, else (only if the database is
/// away) a stale cache entry. An unknown key with no database is `Err`, never a record.
pub async fn resolve(
    db: &Db,
    cache: &KeyCache,
    metrics: &Metrics,
    token: &KeyHash,
    deadline: Duration,
) -> Result<Option<KeyRecord>, DbError> {
    let cached = cache.get(token, Instant::now());
    if let Lookup::Fresh(r) = cached {
        metrics
            .key_cache_hits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Ok(Some(r));
    }
    metrics
        .key_cache_misses
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match db.get_key_within(token, deadline).await {
        Ok(Some(r)) => {
            cache.put(r.clone(), Instant::now());
            Ok(Some(r))
        }
        Ok(None) => {
            cache.invalidate(token);
            Ok(None)
        }
        Err(e) => match cached {
            Lookup::Stale(r) => {
                metrics
                    .key_cache_stale_served
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(Some(r))
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

    #[test]
    fn the_credential_comes_from_bearer_or_x_api_key() {
        assert_eq!(
            credential(&headers(&[("authorization", "Bearer sk-1")])),
            Some("sk-1")
        );
        assert_eq!(
            credential(&headers(&[("authorization", "bearer  sk-1 ")])),
            Some("sk-1")
        );
        assert_eq!(credential(&headers(&[("x-api-key", "sk-2")])), Some("sk-2"));
        assert_eq!(
            credential(&headers(&[("authorization", "Basic abc")])),
            None
        );
        assert_eq!(credential(&headers(&[("authorization", "Bearer ")])), None);
        assert_eq!(credential(&HeaderMap::new()), None);
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
            decide(Some(r), now, 30),
            Decision::Deny(DenyReason::KeyBlocked)
        );
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
