//! Budgets on keys and teams: the fields a write may set, when a budget resets, and
//! whether a key's record (its own spend or its team's) refuses it. Pure: time is a
//! parameter.

use chrono::{DateTime, Utc};
use livegate_contract::{Budget, BudgetScope};

use crate::keys;
use crate::record::{BudgetPatch, KeyRecord};

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
) -> Result<BudgetPatch, BudgetFieldError> {
    let max_budget = amount("max_budget", max_budget)?;
    let soft_budget = amount("soft_budget", soft_budget)?;
    let (secs, reset_at) = match budget_duration.as_deref() {
        None => (None, None),
        Some(d) => {
            let duration =
                keys::parse_duration(d).map_err(|e| refused("budget_duration", e.to_string()))?;
            let secs = i64::try_from(duration.as_secs())
                .map_err(|_| refused("budget_duration", "budget_duration is too long"))?;
            let reset_at = next_reset(now, secs)
                .ok_or_else(|| refused("budget_duration", "budget_duration is too long"))?;
            (Some(secs), Some(reset_at))
        }
    };
    Ok(BudgetPatch {
        max_budget,
        soft_budget,
        budget_duration,
        budget_duration_secs: secs,
        budget_reset_at: reset_at,
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

/// The budget that refuses this key, if any: its own first, then its team's. `pending_key`
/// and `pending_team` are the costs this control plane has spooled and not yet drained.
pub fn exceeded(record: &KeyRecord, pending_key: f64, pending_team: f64) -> Option<Budget> {
    if let Some(max) = record.max_budget {
        let spend = record.spend + pending_key;
        if spend >= max {
            return Some(Budget {
                scope: BudgetScope::Key,
                team_id: None,
                spend,
                max_budget: max,
            });
        }
    }
    let max = record.team_max_budget?;
    let spend = record.team_spend + pending_team;
    (spend >= max).then(|| Budget {
        scope: BudgetScope::Team,
        team_id: record.team_id.clone(),
        spend,
        max_budget: max,
    })
}

#[cfg(test)]
mod tests;
