//! The gate: what every auth check and every finished request pass through. It takes
//! plain inputs (a credential, the time, a spend batch) and decides with the key cache,
//! the budget and its reservations, the spool and the rate limits; `http/` only parses
//! the request and renders the answer.

mod counters;
pub mod decision;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use livegate_contract::bounded::Bounded;
use livegate_contract::{
    ApiKey, Budget, BudgetScope, CredentialError, DenyReason, ModelBudgetOf, SpendBatch,
};

use crate::db::{Db, DbError};
use crate::key_cache::{KeyCache, KeyState, Lookup};
use crate::ledger::SpoolFullPolicy;
use crate::ledger::{IntakeError, Ledger};
use crate::model::keys::KeyHash;
use crate::model::KeyRecord;
use crate::rate_limit::{Limiter, Source};
use crate::spool::Appended;
pub use counters::GateCounters;
use decision::{check_spool, decide, with_spend, Decision};

/// The gate's settings, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct GateSettings {
    /// Every database call of one check shares this deadline.
    pub db_deadline: Duration,
    /// The longest the filter may cache an allow.
    pub cache_ttl: Duration,
    /// What a full spool refuses.
    pub when_full: SpoolFullPolicy,
}

/// When a check happens: wall time (expiry), Unix milliseconds (windows, reservations),
/// and the instant its database calls must be done by.
#[derive(Debug, Clone, Copy)]
pub struct At {
    pub now: DateTime<Utc>,
    pub now_ms: u64,
    pub until: tokio::time::Instant,
}

impl At {
    /// Now, with the database deadline from now.
    pub fn now(deadline: Duration) -> At {
        At {
            now: Utc::now(),
            now_ms: crate::rate_limit::now_ms(),
            until: tokio::time::Instant::now() + deadline,
        }
    }
}

/// The auth pipeline and the settlement of finished requests. Cheap to clone.
#[derive(Clone)]
pub struct Gate {
    pub(crate) db: Db,
    pub(crate) cache: Arc<KeyCache>,
    pub(crate) ledger: Ledger,
    pub(crate) limiter: Limiter,
    pub(crate) counters: Arc<GateCounters>,
    pub(crate) settings: GateSettings,
    /// The drained spend of each key×model×period last read (`model_max_budget`), for
    /// when Postgres does not answer in time.
    model_spend: Arc<Mutex<ModelSpends>>,
}

/// The drained spend last read, by key, model (trimmed, lowercased) and period start (ms).
type ModelSpends = Bounded<(KeyHash, String, u64), f64>;

/// Key×model×period spends remembered for outages.
const MODEL_SPENDS_KEPT: usize = 10_000;

impl Gate {
    pub fn new(
        db: Db,
        cache: Arc<KeyCache>,
        ledger: Ledger,
        limiter: Limiter,
        counters: Arc<GateCounters>,
        settings: GateSettings,
    ) -> Gate {
        Gate {
            db,
            cache,
            ledger,
            limiter,
            counters,
            settings,
            model_spend: Arc::new(Mutex::new(Bounded::new(MODEL_SPENDS_KEPT))),
        }
    }

    pub fn settings(&self) -> GateSettings {
        self.settings
    }

    /// One auth check: the key's state, then its budget, the spool, its limits. A request
    /// refused after its budget reserved for it holds nothing.
    pub async fn check(&self, credential: Result<ApiKey, CredentialError>, at: At) -> Decision {
        let decision = match credential {
            Err(_) => Decision::Deny(DenyReason::InvalidKey),
            Ok(key) => match self.resolve(&key.hash()).await {
                Err(_) => Decision::Unavailable,
                Ok(record) => self.admit(record, at).await,
            },
        };
        self.counters.count_decision(decision.label());
        if let Decision::Allow { record, .. } = &decision {
            if record.soft_budget_cooldown() {
                self.counters.soft_budget_exceeded.fetch_add(1, Relaxed);
            }
        }
        decision
    }

    /// A model check (the filter's second call, once a request's body named a model with
    /// a per-model limit): the key's state again, then only the windows of `model`'s
    /// per-model limits. The key's own windows and budget were counted by its first check.
    pub async fn check_model(
        &self,
        credential: Result<ApiKey, CredentialError>,
        model: &str,
        at: At,
    ) -> Decision {
        let decision = match credential {
            Err(_) => Decision::Deny(DenyReason::InvalidKey),
            Ok(key) => match self.resolve(&key.hash()).await {
                Err(_) => Decision::Unavailable,
                Ok(record) => decide(record, at.now, self.settings.cache_ttl.as_secs()),
            },
        };
        let budget = match &decision {
            Decision::Allow { record, .. } => self.model_budget_refusal(record, model, at).await,
            _ => Ok(None),
        };
        let held = match budget {
            Ok(held) => held,
            Err(over) => {
                let decision = Decision::OverBudget(over);
                self.counters.count_decision(decision.label());
                return decision;
            }
        };
        let decision = match &decision {
            Decision::Allow { record, .. } => {
                let (verdict, source) = self
                    .limiter
                    .admit_model(record, model, at.now_ms, at.until)
                    .await;
                if source == Source::Local {
                    self.counters
                        .rate_limit_local_decisions
                        .fetch_add(1, Relaxed);
                }
                match verdict {
                    Ok(()) => decision,
                    Err(limited) => {
                        if let Some(model) = &held {
                            self.ledger.release_model(&record.token, model);
                        }
                        Decision::RateLimited(limited)
                    }
                }
            }
            _ => decision,
        };
        self.counters.count_decision(decision.label());
        decision
    }

    /// The key's `model_max_budget` for `model`: refused if its spend in the current
    /// period (what Postgres has drained, what this replica has spooled and not yet
    /// drained, and its reservations for the key's requests for the model in flight) is
    /// past it (LiteLLM's `spend > budget_limit`; a limit of 0 checks nothing), else the
    /// model a reservation was taken for (to free if a later check refuses). Without an
    /// answer in time, the drained spend last read stands in (none read: 0).
    async fn model_budget_refusal(
        &self,
        record: &KeyRecord,
        model: &str,
        at: At,
    ) -> Result<Option<String>, Budget> {
        let Some((name, budget)) = record.model_budget(model) else {
            return Ok(None);
        };
        let start_ms = budget.period_start_ms(at.now_ms);
        let since = i64::try_from(start_ms)
            .ok()
            .and_then(DateTime::from_timestamp_millis);
        let Some(since) = since.filter(|_| budget.budget_limit > 0.0) else {
            return Ok(None);
        };
        // Pending first: a record drained in between is counted twice, never missed.
        let pending = self.ledger.pending_spend().key_model(&record.token, name);
        let left = at
            .until
            .saturating_duration_since(tokio::time::Instant::now());
        let seen = (
            record.token.clone(),
            name.trim().to_ascii_lowercase(),
            start_ms,
        );
        let read = self
            .db
            .key_model_spend_within(&record.token, name, since, left)
            .await;
        let mut last = self.model_spend.lock().unwrap_or_else(|p| p.into_inner());
        let drained = match read {
            Ok(spend) => {
                last.insert(seen, spend);
                spend
            }
            Err(_) => last.get(&seen).copied().unwrap_or(0.0),
        };
        drop(last);
        let within = self.ledger.admit_model_spend(
            &record.token,
            name,
            drained,
            pending,
            budget.budget_limit,
            at.now_ms,
        );
        match within {
            Ok(()) => Ok(Some(name.clone())),
            Err(spend) => Err(Budget {
                scope: BudgetScope::Key,
                team_id: None,
                user_id: None,
                spend,
                max_budget: budget.budget_limit,
                model: Some(ModelBudgetOf {
                    model: name.clone(),
                    key_hash: record.token.clone(),
                    key_alias: record.key_alias.clone(),
                }),
            }),
        }
    }

    async fn admit(&self, record: Option<KeyRecord>, at: At) -> Decision {
        let decision = decide(record, at.now, self.settings.cache_ttl.as_secs());
        let (decision, held) = match &decision {
            Decision::Allow { record, .. } => {
                let verdict = self.ledger.admit_spend(record, at.now_ms);
                with_spend(decision, verdict)
            }
            _ => (decision, None),
        };
        let decision = check_spool(decision, self.ledger.at_bound(), self.settings.when_full);
        let decision = self.check_limits(decision, at).await;
        if let Some(h) = held.filter(|_| !matches!(decision, Decision::Allow { .. })) {
            self.ledger.release(&h.key, h.team.as_deref());
        }
        decision
    }

    /// The rate limits after every other check: only a request that would be admitted is
    /// counted in its windows.
    async fn check_limits(&self, decision: Decision, at: At) -> Decision {
        let Decision::Allow { record, .. } = &decision else {
            return decision;
        };
        if record.limits().is_none() {
            return decision;
        }
        let (verdict, source) = self.limiter.admit(record, at.now_ms, at.until).await;
        let cacheable =
            matches!(decision, Decision::Allow { cache_ttl_seconds, .. } if cache_ttl_seconds > 0);
        match source {
            Source::Local => &self.counters.rate_limit_local_decisions,
            Source::Leased => &self.counters.rate_limit_leased_admissions,
            Source::Shared | Source::Known => &self.counters.rate_limit_shared_decisions,
        }
        .fetch_add(1, Relaxed);
        match (verdict, decision) {
            (
                Ok(()),
                Decision::Allow {
                    record,
                    cache_ttl_seconds,
                    ..
                },
            ) if cacheable => {
                // A key near its budget is not cached, so not leased either.
                let lease = self.limiter.hand_off(&record, at.now_ms).await;
                if let Some(share) = &lease {
                    let handed = &self.counters.rate_limit_handed_admissions;
                    handed.fetch_add(share.admissions, Relaxed);
                }
                Decision::Allow {
                    record,
                    cache_ttl_seconds,
                    lease,
                }
            }
            (Ok(()), decision) => decision,
            (Err(limited), _) => Decision::RateLimited(limited),
        }
    }

    /// Finds the key's state: a fresh cache entry, else the database, else (only if the
    /// database is away) a stale cache entry. What a read finds is recorded only if no
    /// newer write got there first, and the answer is whatever won: a read that raced a
    /// block never lets the key in. An unknown key with no database is `Err`, never a record.
    pub async fn resolve(&self, token: &KeyHash) -> Result<Option<KeyRecord>, DbError> {
        let cached = match self.cache.get(token, Instant::now()) {
            Lookup::Fresh(state) => {
                self.counters.key_cache_hits.fetch_add(1, Relaxed);
                return Ok(state.into_record());
            }
            Lookup::Unknown => {
                self.counters.key_cache_hits.fetch_add(1, Relaxed);
                return Ok(None);
            }
            other => other,
        };
        self.counters.key_cache_misses.fetch_add(1, Relaxed);
        match self
            .db
            .get_key_within(token, self.settings.db_deadline)
            .await
        {
            Ok(Some(r)) => {
                let version = r.version;
                let state = KeyState::Present(Box::new(r));
                Ok(self
                    .cache
                    .put(token, state, version, Instant::now())
                    .into_record())
            }
            Ok(None) => Ok(self
                .cache
                .put_unknown(token, Instant::now())
                .and_then(KeyState::into_record)),
            Err(e) => match cached {
                Lookup::Stale(state) => {
                    self.counters.key_cache_stale_served.fetch_add(1, Relaxed);
                    Ok(state.into_record())
                }
                _ => Err(e),
            },
        }
    }

    /// Spools a validated batch of finished requests (answering once it is synced), frees
    /// the budget reservations of the records it took, and then settles their limits.
    pub async fn intake(&self, mut batch: SpendBatch) -> Result<Appended, IntakeError> {
        self.to_keys(&mut batch);
        let ended = ended_requests(&batch);
        // The user each record's key names, as this replica knows the key (its cost is
        // pending for that user until drained); a key it does not hold counts for none.
        let now = Instant::now();
        let user_of = |key: &KeyHash| match self.cache.get(key, now) {
            Lookup::Fresh(state) | Lookup::Stale(state) => {
                state.into_record().and_then(|r| r.user_id)
            }
            _ => None,
        };
        let appended = self.ledger.intake(batch, user_of).await?;
        let accepted: HashSet<&str> = appended.accepted_ids.iter().map(String::as_str).collect();
        let ended: Vec<Ended> = ended
            .into_iter()
            .filter(|e| accepted.contains(e.request_id.as_str()))
            .collect();
        for e in &ended {
            self.ledger.release(&e.key, e.team.as_deref());
            if let Some(model) = &e.model {
                self.ledger.release_model(&e.key, model);
            }
        }
        tokio::spawn(self.clone().settle(ended));
        Ok(appended)
    }

    /// Puts each record under its key's token when it was made with a rotated key's old
    /// secret (a grace alias this replica holds, whose record carries the key's token):
    /// the reservation it frees, its pending cost and its windows are the key's. The drain
    /// maps what this replica did not know (`livegate_key_grace`).
    fn to_keys(&self, batch: &mut SpendBatch) {
        let now = Instant::now();
        for r in &mut batch.records {
            if let Lookup::Fresh(KeyState::Present(k)) | Lookup::Stale(KeyState::Present(k)) =
                self.cache.get(&r.key_hash, now)
            {
                r.key_hash = k.token;
            }
        }
    }

    /// After the ack, for the records the spool took (not those it already held): charges
    /// their tokens to the keys' `tpm_limit` windows and frees their
    /// `max_parallel_requests` slots. (A record retried after a lost ack and already
    /// drained is taken again: charged and freed twice, at most once per lost ack.)
    async fn settle(self, ended: Vec<Ended>) {
        for e in ended {
            let Ok(Some(record)) = self.resolve(&e.key).await else {
                continue;
            };
            let limits = record.limits();
            let now = crate::rate_limit::now_ms();
            let per_model = !record.model_limits().is_empty();
            if (limits.tpm_limit.is_some() || per_model) && e.tokens > 0 {
                let model = e.model.as_deref();
                self.limiter
                    .charge_tokens(&record, model, e.tokens, e.ended_ms, now)
                    .await;
            }
            if limits.max_parallel_requests.is_some() {
                self.limiter.finish(&record, e.started_ms, now).await;
            }
        }
    }
}

/// What a rate limit needs of a finished request: whose, its tokens, when it ran.
struct Ended {
    request_id: String,
    key: KeyHash,
    team: Option<String>,
    /// The model the request resolved to (a per-model `model_tpm_limit` counts it).
    model: Option<String>,
    tokens: u64,
    started_ms: u64,
    ended_ms: u64,
}

fn ended_requests(batch: &SpendBatch) -> Vec<Ended> {
    let ended = batch.records.iter().map(|r| Ended {
        request_id: r.request_id.clone(),
        key: r.key_hash.clone(),
        team: r.team_id.clone(),
        model: r.model_requested.clone(),
        tokens: r.total_tokens.unwrap_or(0),
        started_ms: r.start_time_ms,
        ended_ms: r.end_time_ms,
    });
    ended.collect()
}
