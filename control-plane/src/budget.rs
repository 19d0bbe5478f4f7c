//! Budgets on keys, users and teams: the fields a write may set, when a budget resets,
//! and whether a key's record (its own spend, its user's or its team's) refuses it. Pure: time is a
//! parameter.

use chrono::{DateTime, Utc};
use livegate_contract::{Budget, BudgetScope};

use crate::model::keys;
use crate::model::{BudgetDuration, BudgetPolicy, KeyRecord};

pub mod reserve;
pub mod reset;

/// A budget field a write cannot take; `param` names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BudgetFieldError {
    pub param: &'static str,
    pub message: String,
}

fn refused(param: &'static str, message: impl Into<String>) -> BudgetFieldError {
    BudgetFieldError {
        param,
        message: message.into(),
    }
}

/// A money amount: finite and at least 0 (a `max_budget` of 0 admits nothing).
fn amount(param: &'static str, value: Option<f64>) -> Result<Option<f64>, BudgetFieldError> {
    match value {
        Some(v) if !v.is_finite() || v < 0.0 => Err(refused(
            param,
            format!("{param} must be a number at least 0 (USD)"),
        )),
        other => Ok(other),
    }
}

/// Validates `max_budget`, `soft_budget` and `budget_duration`; a duration sets the first
/// reset at `now + duration`.
pub fn patch(
    max_budget: Option<f64>,
    soft_budget: Option<f64>,
    budget_duration: Option<String>,
    now: DateTime<Utc>,
) -> Result<BudgetPolicy, BudgetFieldError> {
    let max_budget = amount("max_budget", max_budget)?;
    let soft_budget = amount("soft_budget", soft_budget)?;
    let (budget_duration, budget_reset_at) = match budget_duration.as_deref() {
        None => (None, None),
        Some(d) => {
            keys::parse_duration(d).map_err(|e| refused("budget_duration", e.to_string()))?;
            let too_long = || refused("budget_duration", "budget_duration is too long");
            let duration = BudgetDuration::parse(d).map_err(|_| too_long())?;
            let reset_at = next_reset(now, duration.secs()).ok_or_else(too_long)?;
            (Some(duration), Some(reset_at))
        }
    };
    Ok(BudgetPolicy {
        max_budget,
        soft_budget,
        budget_duration,
        budget_reset_at,
    })
}

/// When a budget of `secs` seconds set (or reset) at `now` resets next.
pub fn next_reset(now: DateTime<Utc>, secs: i64) -> Option<DateTime<Utc>> {
    now.checked_add_signed(chrono::Duration::try_seconds(secs)?)
}

/// Whether adding `added` to `spend` takes it from under `max_budget` to at or over it:
/// the drain's test for logging a key change (the SQL in `engine/spend_queries.rs` mirrors it).
pub fn crosses(spend: f64, added: f64, max_budget: Option<f64>) -> bool {
    max_budget.is_some_and(|max| spend < max && spend + added >= max)
}

/// The spend this control plane holds and Postgres does not have yet (spooled, reserved),
/// by whose budget it counts in.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pending {
    pub key: f64,
    pub user: f64,
    pub team: f64,
    /// The key's user's in the key's team.
    pub member: f64,
}

/// The budget that refuses this key, if any: its own first, then its user's, then its
/// user's in its team (the membership's `max_budget_in_team`), then its team's. `pending` is what this control plane has spooled (and reserved) and not yet
/// drained, for each.
pub fn exceeded(record: &KeyRecord, pending: Pending) -> Option<Budget> {
    let over = |max: Option<f64>, spend: f64| max.filter(|max| spend >= *max);
    let budget = |scope, spend, max_budget| Budget {
        scope,
        team_id: None,
        user_id: None,
        spend,
        max_budget,
        model: None,
    };
    let spend = record.spend + pending.key;
    if let Some(max) = over(record.budget.max_budget, spend) {
        return Some(budget(BudgetScope::Key, spend, max));
    }
    let spend = record.user.spend + pending.user;
    if let Some(max) = over(record.user.max_budget, spend).filter(|_| record.user_id.is_some()) {
        return Some(Budget {
            user_id: record.user_id.clone(),
            ..budget(BudgetScope::User, spend, max)
        });
    }
    let spend = record.member.spend + pending.member;
    let member = (record.user_id.is_some() && record.team_id.is_some()).then_some(());
    if let Some(max) = over(record.member.max_budget, spend).filter(|_| member.is_some()) {
        return Some(Budget {
            user_id: record.user_id.clone(),
            team_id: record.team_id.clone(),
            ..budget(BudgetScope::Member, spend, max)
        });
    }
    let spend = record.team.spend + pending.team;
    over(record.team.max_budget, spend).map(|max| Budget {
        team_id: record.team_id.clone(),
        ..budget(BudgetScope::Team, spend, max)
    })
}

#[cfg(test)]
mod tests;
