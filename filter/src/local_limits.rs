//! The worker's own hold on keys with rate limits, for when no control plane answers.
//!
//! While a control plane answers, it counts every request of a limited key (the cache
//! never admits one from an allow) and this worker only records the tokens its responses
//! used. When none answers and a stale allow would admit the key, the worker holds it to
//! its share of each limit, `max(1, ⌊share × limit⌋)` in any 60 s window: never unlimited
//! (a stale allow alone would admit everything), never refuse-all (1 is the least). With
//! E Envoys of W workers a fleet admits at most E·W times that; nothing is shared.
//!
//! Time is always a parameter (Unix milliseconds); nothing here reads a clock.

use crate::bounded::Bounded;
use crate::cache::Millis;
use livegate_contract::{BudgetScope, KeyHash, LimitKind, RateLimited, RateLimits, WindowLog};

/// A share is kept in millionths, so that `⌊share × limit⌋` is exact integer arithmetic
/// (0.29 × 100 is 28.999… in floating point, and must be 29).
const MILLIONTHS: u64 = 1_000_000;

/// Tokens are counted in whole seconds: a key's token log holds at most 60 entries
/// whatever its traffic, and a count leaves the window at most a second early.
const TOKEN_BUCKET_MS: u64 = 1_000;

/// What one key used on this worker in the current window.
#[derive(Debug, Default)]
struct Windows {
    /// Requests this worker admitted from a stale allow (never those the control plane
    /// admitted: it is the authority while it answers).
    requests: WindowLog,
    /// Tokens this worker's responses for the key used, whoever admitted them.
    tokens: WindowLog,
}

/// Per-worker windows of the keys with limits, bounded like the decision cache.
#[derive(Debug)]
pub struct LocalLimits {
    share_millionths: u64,
    keys: Bounded<Windows>,
}

impl LocalLimits {
    /// `outage_share` in (0, 1] (the configuration checks it); `max_keys` bounds the keys
    /// tracked, the least recently counted forgotten first.
    pub fn new(outage_share: f64, max_keys: usize) -> LocalLimits {
        // Saturating float-to-int casts: a share outside (0, 1] cannot escape the clamp.
        let share_millionths =
            ((outage_share * MILLIONTHS as f64).round() as u64).clamp(1, MILLIONTHS);
        LocalLimits {
            share_millionths,
            keys: Bounded::new(max_keys),
        }
    }

    /// This worker's limit for a key's `limit`: `max(1, ⌊share × limit⌋)`.
    pub fn local_limit(&self, limit: u64) -> u64 {
        share_of(limit, self.share_millionths)
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Admits one request of a key with `limits` from a stale allow, counting it, or
    /// refuses it with the local limit and when this worker's window has room.
    pub fn admit(
        &mut self,
        hash: &KeyHash,
        limits: RateLimits,
        now: Millis,
    ) -> Result<(), RateLimited> {
        if limits.is_none() {
            return Ok(());
        }
        let share = self.share_millionths;
        self.with_windows(hash, |windows| {
            if let Some(tpm) = limits.tpm_limit {
                let limit = share_of(tpm, share);
                if windows.tokens.total(now) >= limit {
                    let room_at = windows.tokens.room_at(now, limit);
                    return Err(refusal(LimitKind::Tokens, limit, room_at));
                }
            }
            if let Some(rpm) = limits.rpm_limit {
                let limit = share_of(rpm, share);
                windows
                    .requests
                    .admit(now, limit)
                    .map_err(|room_at| refusal(LimitKind::Requests, limit, room_at))?;
            }
            Ok(())
        })
    }

    /// Counts the tokens a response for the key used, at `at` (when it was metered).
    pub fn add_tokens(&mut self, hash: &KeyHash, tokens: u64, at: Millis) {
        if tokens == 0 {
            return;
        }
        let bucket = at - at % TOKEN_BUCKET_MS;
        self.with_windows(hash, |windows| windows.tokens.add(bucket, tokens, at));
    }

    /// The key's windows, written back as the most recently used: the key evicted at the
    /// bound is the one counted longest ago.
    fn with_windows<T>(&mut self, hash: &KeyHash, f: impl FnOnce(&mut Windows) -> T) -> T {
        let mut windows = self.keys.remove(hash).unwrap_or_default();
        let out = f(&mut windows);
        self.keys.insert(hash.clone(), windows);
        out
    }
}

fn share_of(limit: u64, share_millionths: u64) -> u64 {
    let part = u128::from(limit) * u128::from(share_millionths) / u128::from(MILLIONTHS);
    u64::try_from(part).unwrap_or(u64::MAX).max(1)
}

/// The worker's own 429: the key's limit as this worker holds it.
fn refusal(kind: LimitKind, limit: u64, reset_at_ms: Millis) -> RateLimited {
    RateLimited {
        kind,
        scope: BudgetScope::Key,
        team_id: None,
        limit,
        reset_at_ms,
    }
}

#[cfg(test)]
mod tests;
