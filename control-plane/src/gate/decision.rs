//! The pure decisions of the gate: whether a key's record lets it in, and what a full
//! spool refuses. Time is a parameter.

use chrono::{DateTime, Utc};
use livegate_contract::{AdmissionLease, Budget, RateLimited};

pub use livegate_contract::DenyReason;

use crate::budget::reserve::Held;
use crate::ledger::{SpendVerdict, SpoolFullPolicy};
use crate::model::KeyRecord;

/// The answer to one auth check.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow {
        record: Box<KeyRecord>,
        cache_ttl_seconds: u64,
        /// Admissions of the key's rate windows the filter may serve itself.
        lease: Option<AdmissionLease>,
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

impl Decision {
    /// The metric label of a decision.
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Allow { .. } => "allow",
            Decision::Deny(reason) => reason.as_str(),
            Decision::OverBudget(_) => DenyReason::BudgetExceeded.as_str(),
            Decision::SpendSpoolFull => "spend_spool_full",
            Decision::RateLimited(_) => DenyReason::RateLimited.as_str(),
            Decision::Unavailable => "db_unavailable",
        }
    }
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
        lease: None,
    }
}

/// The budget's verdict on an allow: a refusal, or the allow with the reservation it took
/// (not cached by the filter near its budget).
pub fn with_spend(decision: Decision, verdict: SpendVerdict) -> (Decision, Option<Held>) {
    match (decision, verdict) {
        (Decision::Allow { .. }, SpendVerdict::OverBudget(budget)) => {
            (Decision::OverBudget(budget), None)
        }
        (
            Decision::Allow { record, .. },
            SpendVerdict::Within {
                held,
                near_budget: true,
            },
        ) => (
            Decision::Allow {
                record,
                cache_ttl_seconds: 0,
                lease: None,
            },
            held,
        ),
        (decision, SpendVerdict::Within { held, .. }) => (decision, held),
        (decision, SpendVerdict::OverBudget(_)) => (decision, None),
    }
}

/// `--spend-spool-full` while the spool is at its bound: an allow for a key with a budget
/// (`refuse-budgeted`), or any allow (`refuse-all`), becomes a 503; `admit` changes nothing.
pub fn check_spool(decision: Decision, at_bound: bool, policy: SpoolFullPolicy) -> Decision {
    let Decision::Allow { record, .. } = &decision else {
        return decision;
    };
    let budgeted = record.budgeted();
    match policy {
        _ if !at_bound => decision,
        SpoolFullPolicy::RefuseAll => Decision::SpendSpoolFull,
        SpoolFullPolicy::RefuseBudgeted if budgeted => Decision::SpendSpoolFull,
        SpoolFullPolicy::RefuseBudgeted | SpoolFullPolicy::Admit => decision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_cache::tests::record;
    use chrono::Duration;

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
        let mut user_budgeted = record("sk-d");
        user_budgeted.user_id = Some("u".into());
        user_budgeted.user.max_budget = Some(10.0);
        let refused = |d: Decision| d == Decision::SpendSpoolFull;
        use SpoolFullPolicy::*;
        for r in [&plain, &budgeted, &team_budgeted] {
            assert!(!refused(check_spool(allow(r.clone()), false, RefuseAll)));
            assert!(!refused(check_spool(allow(r.clone()), true, Admit)));
            assert!(refused(check_spool(allow(r.clone()), true, RefuseAll)));
        }
        assert!(!refused(check_spool(allow(plain), true, RefuseBudgeted)));
        assert!(refused(check_spool(
            allow(user_budgeted),
            true,
            RefuseBudgeted
        )));
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
