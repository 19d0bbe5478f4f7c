//! Writes a drain batch so that a record Postgres refuses cannot hold back the others: a
//! refused batch is split in halves until each refused record stands alone, and that one
//! is handed back to become a dead letter.
//!
//! Only a refusal of the data (`DbError::Refused`, SQLSTATE class 22: a NUL in `jsonb`, a
//! number or time out of range) is isolated. Anything else (the database away, a timeout,
//! a read-only replica) says nothing about the records, so the whole batch stays in the
//! spool for the next attempt. Each part is its own statement; parts written before an
//! outage interrupts the split come back as duplicates on the retry and count once
//! (the statement's `ON CONFLICT DO NOTHING`).

use std::future::Future;

use crate::db::{DbError, SpendInserted};
use crate::model::LedgerEntry;

/// What writes a drain's rows: the spool's database (`drain::IntoDatabase`), or a fake.
pub trait SpendWriter {
    fn insert(
        &self,
        rows: Vec<LedgerEntry>,
    ) -> impl Future<Output = Result<SpendInserted, DbError>> + Send;
}

/// What [`write_isolating`] did.
#[derive(Debug, Default, PartialEq)]
pub struct Written {
    /// The rows Postgres took (inserted now, or there already: see `duplicates`).
    pub rows: Vec<LedgerEntry>,
    pub inserted: u64,
    pub unpriced: u64,
    pub duplicates: Vec<String>,
    /// The rows Postgres refused, each alone, with its reason.
    pub refused: Vec<(LedgerEntry, String)>,
}

/// Writes `rows`, isolating the ones whose data Postgres refuses (see the module).
/// Fails, with nothing to mark drained, on anything that is not a refusal of data.
pub async fn write_isolating<W: SpendWriter>(
    writer: &W,
    rows: Vec<LedgerEntry>,
) -> Result<Written, DbError> {
    let mut out = Written::default();
    let mut todo = vec![rows];
    while let Some(mut part) = todo.pop() {
        if part.is_empty() {
            continue;
        }
        match writer.insert(part.clone()).await {
            Ok(done) => {
                out.inserted += done.inserted;
                out.unpriced += done.unpriced;
                out.duplicates.extend(done.duplicates);
                out.rows.extend(part);
            }
            Err(DbError::Refused(reason)) if part.len() == 1 => {
                out.refused.extend(part.pop().map(|row| (row, reason)));
            }
            Err(DbError::Refused(_)) => {
                let right = part.split_off(part.len() / 2);
                todo.push(right);
                todo.push(part); // the left half first: rows stay in spool order
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use livegate_contract::spend::SpendRecord;
    use livegate_contract::KeyHash;
    use std::sync::Mutex;

    /// Refuses any statement holding a row whose model has a NUL, as Postgres's `jsonb`
    /// does; `away` answers every statement with `Unavailable`.
    #[derive(Default)]
    struct Fake {
        written: Mutex<Vec<String>>,
        statements: Mutex<usize>,
        away: bool,
    }

    impl SpendWriter for Fake {
        async fn insert(&self, rows: Vec<LedgerEntry>) -> Result<SpendInserted, DbError> {
            *self.statements.lock().unwrap() += 1;
            if self.away {
                return Err(DbError::Unavailable);
            }
            let poison = |r: &LedgerEntry| {
                r.record
                    .model_requested
                    .as_deref()
                    .is_some_and(|m| m.contains('\0'))
            };
            if rows.iter().any(poison) {
                return Err(DbError::Refused(
                    "unsupported Unicode escape sequence".into(),
                ));
            }
            let mut written = self.written.lock().unwrap();
            written.extend(rows.iter().map(|r| r.record.request_id.clone()));
            Ok(SpendInserted {
                inserted: rows.len() as u64,
                unpriced: 0,
                duplicates: vec![],
            })
        }
    }

    fn row(i: usize, model: &str) -> LedgerEntry {
        LedgerEntry {
            record: SpendRecord {
                request_id: format!("r{i}"),
                key_hash: KeyHash::of_raw("sk-a"),
                key_alias: None,
                team_id: None,
                model_requested: Some(model.into()),
                model_returned: None,
                deployment: None,
                prompt_tokens: None,
                completion_tokens: None,
                total_tokens: None,
                cached_tokens: None,
                reasoning_tokens: None,
                cache_creation_tokens: None,
                usage_known: false,
                usage_estimate_reason: None,
                status: 200,
                streamed: false,
                start_time_ms: 1,
                end_time_ms: 2,
            },
            cost: 0.0,
            unpriced: true,
            user_id: None,
        }
    }

    #[tokio::test]
    async fn a_refused_record_is_set_apart_and_every_other_row_of_its_batch_is_written() {
        let rows: Vec<LedgerEntry> = (0..100)
            .map(|i| row(i, if i == 37 || i == 90 { "x\0" } else { "m" }))
            .collect();
        let fake = Fake::default();
        let out = write_isolating(&fake, rows).await.unwrap();
        let refused: Vec<&str> = out
            .refused
            .iter()
            .map(|(r, _)| r.record.request_id.as_str())
            .collect();
        assert_eq!(refused, ["r37", "r90"]);
        assert!(out.refused[0].1.contains("Unicode"));
        assert_eq!(out.inserted, 98);
        let written = fake.written.lock().unwrap().clone();
        let expected: Vec<String> = (0..100)
            .filter(|i| *i != 37 && *i != 90)
            .map(|i| format!("r{i}"))
            .collect();
        assert_eq!(written, expected, "each once, in spool order");
        // The split costs about two statements per level per refused record, not one per row.
        assert!(*fake.statements.lock().unwrap() < 40);
    }

    #[tokio::test]
    async fn a_database_away_isolates_nothing_and_fails_the_whole_batch() {
        let fake = Fake {
            away: true,
            ..Fake::default()
        };
        let rows = vec![row(0, "m"), row(1, "x\0")];
        assert_eq!(
            write_isolating(&fake, rows).await,
            Err(DbError::Unavailable)
        );
        assert_eq!(*fake.statements.lock().unwrap(), 1, "no split on an outage");
    }

    #[tokio::test]
    async fn a_clean_batch_is_one_statement() {
        let fake = Fake::default();
        let out = write_isolating(&fake, (0..10).map(|i| row(i, "m")).collect())
            .await
            .unwrap();
        assert_eq!((out.inserted, out.rows.len()), (10, 10));
        assert!(out.refused.is_empty());
        assert_eq!(*fake.statements.lock().unwrap(), 1);
    }
}
