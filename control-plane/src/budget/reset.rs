//! The periodic budget reset: every tick, the budgets whose `budget_reset_at` has come go
//! back to 0 spend, in one statement each for keys, teams and users, each logging a change of
//! the keys concerned (so a key refused for its budget is let in again everywhere). Every
//! replica runs it; a budget reset by one is not due for the others.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::db::Db;

/// How often due budgets are looked for: a reset happens within this of its time.
pub const RESET_EVERY: Duration = Duration::from_secs(1);

pub async fn run(db: Db, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match db.reset_budgets(Utc::now()).await {
            Ok(reset) if reset.keys + reset.teams + reset.users > 0 => {
                let (keys, teams, users) = (reset.keys, reset.teams, reset.users);
                tracing::info!(keys, teams, users, "budgets reset");
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "budget reset deferred"),
        }
    }
}
