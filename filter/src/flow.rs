//! One request's path through the filter: route, credential, cache, auth check, verdict.
//! The key's side (cache, auth check, admission) is `flow/auth.rs`'s, the body and its
//! model check `flow/body.rs`'s, the response side `flow/response.rs`'s.

use crate::cache::DecisionCache;
use crate::config::Config;
use crate::host::{HeaderRefused, Host, RequestHeaders};
use crate::local_limits::{InFlight, LocalLimits};
use crate::metering::{Ending, Requester, ResponseMeter};
use crate::metrics::Metric;
use crate::model_body::{model_source, ModelSource};
use crate::path::{normalize, NormalPath, PathError};
use crate::reply::LocalReply;
use crate::routing::{hashed_key_path, is_probe_method, Route, Routes};
use crate::spend_queue::SpendQueue;
use crate::time::{Clock, Millis};
use crate::unverified::UnverifiedBodies;
use crate::upstream_headers::{for_passthrough, HeaderEdits};
use body::{asks_for_usage, Body};
use livegate_contract::{KeyHash, ModelAccess, ModelLimits};
use response::TokensTo;
use std::cell::RefCell;
use std::rc::Rc;

/// What one plugin instance shares across its requests on one worker: the parsed
/// configuration, the decision cache, the queue of spend records and the windows of the
/// keys with rate limits. Each worker runs its own VM, so each worker has its own; nothing
/// here crosses threads.
#[derive(Debug)]
pub struct Plugin {
    pub config: Config,
    cache: RefCell<DecisionCache>,
    spend: RefCell<SpendQueue>,
    local: RefCell<LocalLimits>,
    /// The worker's turn among a model's deployments (`providers::pick`).
    turn: std::cell::Cell<u64>,
    /// The worker's budget of bodies held while their keys are checked.
    unverified: UnverifiedBodies,
}

impl Plugin {
    pub fn new(config: Config) -> Plugin {
        let cache = RefCell::new(DecisionCache::new(config.cache));
        let metering = &config.metering;
        let spend = RefCell::new(SpendQueue::new(
            usize::try_from(metering.max_queued_records).unwrap_or(usize::MAX),
            usize::try_from(metering.batch_records).unwrap_or(1),
        ));
        // As many keys as the cache holds allows: each one tracked could be served stale.
        let local = RefCell::new(LocalLimits::new(
            config.rate_limits.outage_share,
            usize::try_from(config.cache.max_entries).unwrap_or(usize::MAX),
        ));
        let unverified = UnverifiedBodies::new(config.max_unverified_body_bytes);
        Plugin {
            config,
            cache,
            spend,
            local,
            turn: std::cell::Cell::new(0),
            unverified,
        }
    }

    /// Bytes of request bodies the worker holds while their keys are checked.
    pub fn unverified_body_bytes(&self) -> u64 {
        self.unverified.held()
    }

    /// The next turn among a model's deployments (one counter per worker for every model).
    pub fn next_turn(&self) -> u64 {
        let turn = self.turn.get();
        self.turn.set(turn.wrapping_add(1));
        turn
    }

    /// The worker's rate-limit windows, borrowed as the cache is: never across a host call.
    pub fn with_local<T>(&self, f: impl FnOnce(&mut LocalLimits) -> T) -> Option<T> {
        self.local.try_borrow_mut().ok().map(|mut l| f(&mut l))
    }

    /// The worker's spend queue, borrowed as the cache is: never across a host call.
    pub fn with_spend<T>(&self, f: impl FnOnce(&mut SpendQueue) -> T) -> Option<T> {
        self.spend.try_borrow_mut().ok().map(|mut q| f(&mut q))
    }

    /// The cache is only ever borrowed here, never across a host call; a failed
    /// borrow (impossible on one thread) degrades to "not cached" instead of panicking.
    pub fn with_cache<T>(&self, f: impl FnOnce(&mut DecisionCache) -> T) -> Option<T> {
        self.cache.try_borrow_mut().ok().map(|mut c| f(&mut c))
    }
}

/// Whether the request goes on now, or waits (auth check pending, or a reply was sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    Stop,
}

/// Where a request is, and the state that exists only there.
// One per request, inside the request's own context: `Released` inline costs no more
// than the fields it replaces did, and boxing it would add an allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Stage {
    Headers,
    /// The auth check for `hash` is in flight; the body may arrive meanwhile.
    AwaitingAuth {
        hash: KeyHash,
        request: Box<Request>,
    },
    /// The key is admitted; a model route waits for its body to check the model.
    AwaitingBody(Box<Admitted>),
    /// The body named a model with a per-model limit: its model check is in flight.
    AwaitingModelCheck {
        hash: KeyHash,
        admitted: Box<Admitted>,
        /// The model the limit is configured for.
        model: String,
    },
    /// Sent on upstream; its response passes through (metered, if it was admitted).
    Released(Held),
    Replied,
    /// The stream ended (completed, or reset by a client that went away): nothing is
    /// kept, and an answer that still arrives is dropped.
    Done,
}

/// A protected request as its headers described it: what its decision and its model
/// check read, from the headers until it is released or refused.
#[derive(Debug)]
struct Request {
    /// When the request reached the filter.
    started: Option<Millis>,
    /// Where the request names its model: the key's model policy applies to it, and a
    /// route that names none is refused to a key restricted to some models.
    source: ModelSource,
    /// The request's normal path.
    normal: NormalPath,
    /// The `:path` the request goes on with, when it differs from the one sent (not in
    /// normal form, or an alias resolved in an Azure path): the upstream sees the path
    /// the filter decided on.
    upstream_path: Option<String>,
    /// An OpenAI completions route: a streamed request is asked for its usage.
    usage_route: bool,
    /// The body, when it came (whole) before the decision.
    body: Option<Body>,
}

impl Request {
    /// A route whose model the filter reads (from the body, or the path and the body).
    fn model_route(&self) -> bool {
        !matches!(self.source, ModelSource::None)
    }
}

/// An admitted key's request, waiting for its body on a model route.
#[derive(Debug)]
struct Admitted {
    request: Request,
    edits: HeaderEdits,
    access: ModelAccess,
    requester: Requester,
    held: Held,
    /// The key's per-model limits: a request for one of them is checked again.
    model_limits: ModelLimits,
    /// Admitted from a stale allow: its model check is decided here, not asked.
    stale: bool,
}

/// What an admitted request holds until it ends (its response ended, a local reply
/// refused it after its admission, or the stream is done), given back once, by `end`.
#[derive(Debug, Default)]
struct Held {
    /// The response, metered as it passes; for a key with `max_parallel_requests`, the
    /// record owed even if the request is refused after its admission.
    metering: Option<ResponseMeter>,
    /// The admitted key has a token limit: its metered tokens count toward the worker's
    /// window of it (real usage, whoever admitted the request).
    counts_tokens: bool,
    /// The request's model has a `model_tpm_limit`: its metered tokens count toward the
    /// worker's window of the key×model too (`flow/model_limits.rs`).
    model_tokens: Option<KeyHash>,
    /// The admitted key has `max_parallel_requests`: the worker counts this request in
    /// flight until it ends.
    in_flight: Option<InFlight>,
}

/// The state of one HTTP request.
#[derive(Debug)]
pub struct RequestFlow {
    plugin: Rc<Plugin>,
    stage: Stage,
    /// Bytes of this request's body counted in the worker's unverified budget.
    unverified_bytes: u64,
}

impl RequestFlow {
    pub fn new(plugin: Rc<Plugin>) -> RequestFlow {
        RequestFlow {
            plugin,
            stage: Stage::Headers,
            unverified_bytes: 0,
        }
    }

    /// Whether body and trailers must be held back: nothing passes before a decision.
    pub fn holds_body(&self) -> bool {
        matches!(
            self.stage,
            Stage::AwaitingAuth { .. }
                | Stage::AwaitingBody(_)
                | Stage::AwaitingModelCheck { .. }
                | Stage::Replied
        )
    }

    fn hold_or_pass(&self) -> Verdict {
        if self.holds_body() {
            Verdict::Stop
        } else {
            Verdict::Continue
        }
    }

    /// The host is done with the stream (`on_done`: completed, or reset because the client
    /// went away while its check was in flight). Drops the request's state; the answer to
    /// a check still in flight is dropped when it arrives. A response still being metered
    /// (the stream ended early) is recorded as seen so far.
    pub fn on_done(&mut self, host: &impl Host, clock: impl Clock) {
        self.release_unverified();
        if let Some(held) = self.take_held() {
            self.end(host, held, clock, Ending::Early);
        }
        self.stage = Stage::Done;
    }

    /// The body is no longer held for a check (decided, shed, or the stream ended).
    fn release_unverified(&mut self) {
        self.plugin.unverified.release(self.unverified_bytes);
        self.unverified_bytes = 0;
    }

    /// What the stage holds for an admitted request, taken out (to be ended).
    fn take_held(&mut self) -> Option<Held> {
        match &mut self.stage {
            Stage::Released(held) => Some(std::mem::take(held)),
            Stage::AwaitingBody(admitted) | Stage::AwaitingModelCheck { admitted, .. } => {
                Some(std::mem::take(&mut admitted.held))
            }
            _ => None,
        }
    }

    /// The request no longer holds anything: its response's record goes into the
    /// worker's queue (stamped with the clock's time, the one thing it is read for), and
    /// its parallel slot back to the worker's window.
    fn end(&self, host: &impl Host, held: Held, clock: impl Clock, ending: Ending) {
        if let Some(meter) = held.metering {
            let tokens_to = TokensTo {
                key: held.counts_tokens,
                model: held.model_tokens.as_ref(),
            };
            self.finish_metering(host, meter, tokens_to, clock.now(), ending);
        }
        if let Some(request) = held.in_flight {
            self.plugin.with_local(|local| local.end(request));
        }
    }

    /// The key whose check this request waits for, if any.
    pub fn pending_check(&self) -> Option<&KeyHash> {
        match &self.stage {
            Stage::AwaitingAuth { hash, .. } => Some(hash),
            _ => None,
        }
    }

    /// The clock is read for a protected route only. When it cannot be read the cache is
    /// bypassed (every check goes to the control plane), never consulted at a guessed time.
    pub fn on_request_headers(&mut self, host: &impl Host, clock: impl Clock) -> Verdict {
        self.on_request_headers_with(host, clock, false)
    }

    /// As `on_request_headers`; `end_of_stream` says the request has no body.
    pub fn on_request_headers_with(
        &mut self,
        host: &impl Host,
        clock: impl Clock,
        end_of_stream: bool,
    ) -> Verdict {
        // One read of the header map serves every route (`:path` and `:method` are in
        // it): each host call costs about as much as the filter's own work per request.
        let headers = host.request_headers();
        // Every decision is made on the normal path: `/v1/chat%2Fcompletions` is the chat
        // route for an upstream that decodes it, so it is for the filter too.
        let normal = match normalize(&text(headers.get(":path"))) {
            Ok(normal) => normal,
            Err(why) => return self.bad_path(host, why),
        };
        match Routes::new(&self.plugin.config).route(&normal.path) {
            Route::Liveness => self.liveness(host, &headers),
            Route::Passthrough if normal.changed => self.bad_path(host, PathError::NotNormal),
            Route::Passthrough => {
                let edits = for_passthrough(&headers);
                let hashed = hashed_key_path(&normal.full());
                self.release_with(host, &edits, hashed.as_deref(), Held::default())
            }
            Route::Protected => {
                let now = clock.now();
                let source = model_source(&normal.path);
                let usage_route = asks_for_usage(&source, &normal.path);
                let mut request = Request {
                    started: now,
                    upstream_path: normal.changed.then(|| normal.full()),
                    normal,
                    source,
                    usage_route,
                    body: None,
                };
                if request.model_route() && end_of_stream {
                    request.body = Some(Body::absent());
                }
                self.protected(host, &headers, request, now)
            }
        }
    }

    fn bad_path(&mut self, host: &impl Host, why: PathError) -> Verdict {
        host.increment(Metric::DeniedBadPath);
        self.reply(host, &LocalReply::bad_path(why))
    }

    fn liveness(&mut self, host: &impl Host, headers: &RequestHeaders) -> Verdict {
        if is_probe_method(&text(headers.get(":method"))) {
            host.increment(Metric::LivenessServed);
            self.reply(host, &LocalReply::liveness())
        } else {
            self.reply(host, &LocalReply::method_not_allowed())
        }
    }

    /// Sends a local reply: the request ends here.
    fn reply(&mut self, host: &impl Host, reply: &LocalReply) -> Verdict {
        let held = self.take_held();
        self.reply_holding(host, reply, held)
    }

    /// Sends a local reply for a request that may have been admitted (a model refused, a
    /// body it could not edit): what it holds ends with it, its slot given back.
    fn reply_holding(
        &mut self,
        host: &impl Host,
        reply: &LocalReply,
        held: Option<Held>,
    ) -> Verdict {
        host.send_reply(reply);
        if let Some(mut held) = held {
            if let Some(meter) = &mut held.metering {
                meter.answered_locally(reply.status);
            }
            self.end(host, held, None, Ending::Complete);
        }
        self.stage = Stage::Replied;
        Verdict::Stop
    }

    /// Applies the header edits (and the `:path` the filter decided on) and lets the
    /// request go on, holding `held` until its response ends; if the host refuses any
    /// edit, the request is refused instead: never forwarded with the client's key or a
    /// spoofed `x-livegate-*` header still on it.
    fn release_with(
        &mut self,
        host: &impl Host,
        edits: &HeaderEdits,
        path: Option<&str>,
        held: Held,
    ) -> Verdict {
        if apply(host, edits, path).is_err() {
            host.increment(Metric::HeaderRewriteFailed);
            return self.reply_holding(host, &LocalReply::internal_error(), Some(held));
        }
        self.stage = Stage::Released(held);
        Verdict::Continue
    }
}

/// The host ends every stream with `on_done`; should a flow be dropped without it, its
/// slot and its share of the unverified budget are given back all the same, never held
/// for the worker's life.
impl Drop for RequestFlow {
    fn drop(&mut self) {
        self.release_unverified();
        if let Some(request) = self.take_held().and_then(|held| held.in_flight) {
            self.plugin.with_local(|local| local.end(request));
        }
    }
}

fn apply(host: &impl Host, edits: &HeaderEdits, path: Option<&str>) -> Result<(), HeaderRefused> {
    for name in &edits.remove {
        host.remove_request_header(name)?;
    }
    for (name, value) in &edits.set {
        host.set_request_header(name, value)?;
    }
    if let Some(path) = path {
        host.set_request_header(":path", path)?;
    }
    Ok(())
}

fn text(value: Option<&[u8]>) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(value.unwrap_or_default())
}

mod auth;
mod body;
mod deployments;
mod model_limits;
mod response;

#[cfg(test)]
mod deployment_tests;
#[cfg(test)]
mod host_call_tests;
#[cfg(test)]
mod internal_token_tests;
#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod metering_tests;
#[cfg(test)]
mod mock;
#[cfg(test)]
mod model_limit_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod outage_tests;
#[cfg(test)]
mod path_tests;
#[cfg(test)]
mod rate_limit_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod unverified_tests;
