//! The worker's own hold on keys with rate limits, for when no control plane answers.
//!
//! While a control plane answers, it counts every request of a limited key (the cache
//! never admits one from an allow) and this worker only records the tokens its responses
//! used. When none answers and a stale allow would admit the key, the worker holds it to
//! its share of each limit, `max(1, ⌊share × limit⌋)` in any 60 s window: never unlimited
//! (a stale allow alone would admit everything), never refuse-all (1 is the least). With
//! E Envoys of W workers a fleet admits at most E·W times that; nothing is shared.
//!
//! `max_parallel_requests` is held the same way, over requests in flight rather than a
//! window: the worker counts every request of such a key it lets through (whoever
//! admitted it) until the request ends, and a stale allow is refused while that count
//! reaches the worker's share.
//!
//! Time is always a parameter (Unix milliseconds); nothing here reads a clock.

use crate::time::Millis;
use livegate_contract::bounded::Bounded;
use livegate_contract::{BudgetScope, KeyHash, LimitKind, RateLimited, RateLimits, WindowLog};

/// A share is kept in millionths, so that `⌊share × limit⌋` is exact integer arithmetic
/// (0.29 × 100 is 28.999… in floating point, and must be 29).
const MILLIONTHS: u64 = 1_000_000;

/// Tokens are counted in whole seconds: a key's token log holds at most 60 entries
/// whatever its traffic, and a count leaves the window at most a second early.
const TOKEN_BUCKET_MS: u64 = 1_000;

/// How long a parallel refusal asks the client to wait: a slot frees whenever one of the
/// key's requests ends, so there is no better guess than a second (the contract's own).
const PARALLEL_RETRY_MS: u64 = 1_000;

/// What one key used on this worker in the current window, and has in flight now.
#[derive(Debug)]
struct Windows {
    /// Requests this worker admitted from a stale allow (never those the control plane
    /// admitted: it is the authority while it answers).
    requests: WindowLog,
    /// Tokens this worker's responses for the key used, whoever admitted them.
    tokens: WindowLog,
    /// This worker's requests of the key let through and not yet ended, whoever admitted
    /// them: a stale allow cannot tell how many the rest of the fleet holds, only these.
    in_flight: u64,
    /// Which life of the key's entry this is: an entry forgotten at the bound and made
    /// again starts from 0, and the ends of requests counted by the old one are ignored
    /// (they would take slots of requests the new one counted).
    generation: u64,
}

/// A request counted in flight for a key: handed back to [`LocalLimits::end`] when the
/// request ends. Not `Clone`, so a request cannot end twice.
#[derive(Debug, PartialEq, Eq)]
pub struct InFlight {
    hash: KeyHash,
    generation: u64,
}

/// Per-worker windows of the keys with limits, bounded like the decision cache.
#[derive(Debug)]
pub struct LocalLimits {
    share_millionths: u64,
    keys: Bounded<KeyHash, Windows>,
    /// The generation the next new entry gets.
    next_generation: u64,
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
            next_generation: 0,
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

    /// Admits one request of a key with `limits` from a stale allow, counting it (and, for
    /// a key with `max_parallel_requests`, holding it in flight until [`LocalLimits::end`]),
    /// or refuses it with the local limit and when this worker has room for it. Nothing of
    /// a refused request is counted.
    pub fn admit(
        &mut self,
        hash: &KeyHash,
        limits: RateLimits,
        now: Millis,
    ) -> Result<Option<InFlight>, RateLimited> {
        if limits.is_none() {
            return Ok(None);
        }
        let share = self.share_millionths;
        let requests = limits.rpm_limit.map(|rpm| share_of(rpm, share));
        self.with_windows(hash, |windows| {
            if let Some(tpm) = limits.tpm_limit {
                let limit = share_of(tpm, share);
                if windows.tokens.total(now) >= limit {
                    let room_at = windows.tokens.room_at(now, limit);
                    return Err(refusal(LimitKind::Tokens, limit, room_at));
                }
            }
            if let Some(limit) = requests {
                if windows.requests.total(now) >= limit {
                    let room_at = windows.requests.room_at(now, limit);
                    return Err(refusal(LimitKind::Requests, limit, room_at));
                }
            }
            if let Some(parallel) = limits.max_parallel_requests {
                let limit = share_of(parallel, share);
                if windows.in_flight >= limit {
                    let retry_at = now.saturating_add(PARALLEL_RETRY_MS);
                    return Err(refusal(LimitKind::Parallel, limit, retry_at));
                }
            }
            if requests.is_some() {
                windows.requests.add(now, 1, now);
            }
            Ok(())
        })?;
        Ok(self.start(hash, limits))
    }

    /// Counts in flight a request of a key with `max_parallel_requests`, never refusing it:
    /// one the control plane admitted (the authority while it answers), or one `admit` let
    /// through. `None` for a key without that limit: nothing to end.
    pub fn start(&mut self, hash: &KeyHash, limits: RateLimits) -> Option<InFlight> {
        limits.max_parallel_requests?;
        let generation = self.with_windows(hash, |windows| {
            windows.in_flight = windows.in_flight.saturating_add(1);
            windows.generation
        });
        Some(InFlight {
            hash: hash.clone(),
            generation,
        })
    }

    /// A request counted in flight has ended (completed, reset, or refused after its
    /// admission). A key forgotten at the bound since, or made again, is left alone.
    pub fn end(&mut self, request: InFlight) {
        if let Some(windows) = self.keys.get_mut(&request.hash) {
            if windows.generation == request.generation {
                windows.in_flight = windows.in_flight.saturating_sub(1);
            }
        }
    }

    /// This worker's requests of the key in flight now (0 for a key not tracked).
    pub fn in_flight(&self, hash: &KeyHash) -> u64 {
        self.keys.get(hash).map_or(0, |windows| windows.in_flight)
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
        let mut windows = match self.keys.remove(hash) {
            Some(windows) => windows,
            None => {
                let generation = self.next_generation;
                self.next_generation = self.next_generation.wrapping_add(1);
                Windows {
                    requests: WindowLog::new(),
                    tokens: WindowLog::new(),
                    in_flight: 0,
                    generation,
                }
            }
        };
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
        user_id: None,
        model: None,
        limit,
        reset_at_ms,
    }
}

#[cfg(test)]
mod tests;
