//! The SQL of rate-limit windows: one row per scope, written by compare and swap so the
//! window's arithmetic stays in Rust (`livegate_contract::WindowLog`), the same in every
//! control plane and in the filter.

use livegate_contract::WindowLog;
use tokio_postgres::types::Json;
use tokio_postgres::Client;

use super::queries::{classify, column};
use crate::protocol::{EngineError, WindowSwap};

/// Writes `window` as the scope's row if its version is still `expected` (0: no row yet);
/// otherwise answers the row as it is now, for the caller to merge and try again.
pub async fn swap_window(
    c: &Client,
    scope: &str,
    expected: i64,
    window: &WindowLog,
) -> Result<WindowSwap, EngineError> {
    let written = if expected == 0 {
        c.query_opt(
            "INSERT INTO livegate_rate_windows (scope, entries, version) VALUES ($1, $2, 1)
             ON CONFLICT (scope) DO NOTHING RETURNING version",
            &[&scope, &Json(window)],
        )
        .await
    } else {
        c.query_opt(
            "UPDATE livegate_rate_windows SET entries = $2, version = version + 1, updated_at = now()
             WHERE scope = $1 AND version = $3 RETURNING version",
            &[&scope, &Json(window), &expected],
        )
        .await
    }
    .map_err(classify)?;
    if let Some(row) = written {
        return Ok(WindowSwap::Swapped {
            version: column(&row, "version")?,
        });
    }
    let row = c
        .query_opt(
            "SELECT entries, version FROM livegate_rate_windows WHERE scope = $1",
            &[&scope],
        )
        .await
        .map_err(classify)?;
    match row {
        Some(row) => Ok(WindowSwap::Current {
            window: column::<Json<WindowLog>>(&row, "entries")?.0,
            version: column(&row, "version")?,
        }),
        // Deleted between the two statements: start again from nothing.
        None => Ok(WindowSwap::Current {
            window: WindowLog::new(),
            version: 0,
        }),
    }
}
