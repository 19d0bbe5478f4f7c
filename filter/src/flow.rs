//! One request's path through the filter: route, credential, cache, auth check, verdict.

use crate::cache::{Cached, DecisionCache};
use crate::config::{Config, FailureMode};
use crate::decision::{decide, CallError, CallResponse, DenyReason, Identity, Outcome};
use crate::host::{AuthCheck, HeaderRefused, Host, RequestHeaders};
use crate::local_limits::{InFlight, LocalLimits};
use crate::metering::{request_id, Ending, Requester, ResponseMeter};
use crate::metrics::Metric;
use crate::model_body::{
    model_source, requested_model, route, BodyError, ModelSource, RequestedModel,
};
use crate::path::{normalize, NormalPath, PathError};
use crate::reply::LocalReply;
use crate::routing::{is_probe_method, Route, Routes};
use crate::spend_queue::SpendQueue;
use crate::time::Millis;
use crate::upstream_headers::{for_passthrough, for_upstream, Admission, HeaderEdits};
use crate::usage::stream_options::{include_usage, stream_flag, Rewrite};
use livegate_contract::headers::{AUTHORIZATION, X_API_KEY};
use livegate_contract::rate_limit::WINDOW_MS;
use livegate_contract::{ApiKey, KeyHash, ModelAccess, ModelDenied, RateLimited};
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
        Plugin {
            config,
            cache,
            spend,
            local,
        }
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

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    Headers,
    AwaitingAuth(KeyHash),
    /// The key is admitted; a model route waits for its body to check the model.
    AwaitingBody(Box<Admitted>),
    Released,
    Replied,
    /// The stream ended (completed, or reset by a client that went away): nothing is
    /// kept, and an answer that still arrives is dropped.
    Done,
}

/// An admitted key's request, waiting for its body on a model route.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Admitted {
    edits: HeaderEdits,
    access: ModelAccess,
    requester: Requester,
}

/// What a model route's body said, once seen.
type BodyModel = Result<RequestedModel, BodyError>;

/// The state of one HTTP request.
#[derive(Debug)]
pub struct RequestFlow {
    plugin: Rc<Plugin>,
    stage: Stage,
    /// Where the request names its model: the key's model policy applies to it, and a
    /// route that names none is refused to a key restricted to some models.
    source: ModelSource,
    /// The request's normal path; `None` until the headers are seen.
    normal: Option<NormalPath>,
    /// The `:path` the request goes on with, when it differs from the one sent (not in
    /// normal form, or an alias resolved in an Azure path): the upstream sees the path
    /// the filter decided on.
    upstream_path: Option<String>,
    /// The body's model, when the body came before the decision.
    body: Option<BodyModel>,
    /// The request body's bytes, once read (a model route's): an estimate's prompt.
    prompt_bytes: u64,
    /// The body's `stream` is not a JSON boolean (nor `null`): refused, naming it.
    bad_stream: bool,
    /// An OpenAI completions route: a streamed request is asked for its usage.
    usage_route: bool,
    /// When the request reached the filter.
    started: Option<Millis>,
    /// The response of an admitted request, metered as it passes.
    metering: Option<ResponseMeter>,
    /// The admitted key has a token limit: its metered tokens count toward the worker's
    /// window of it (real usage, whoever admitted the request).
    counts_tokens: bool,
    /// The admitted key has `max_parallel_requests`: the worker counts this request in
    /// flight until it ends (`end_in_flight`).
    in_flight: Option<InFlight>,
}

impl RequestFlow {
    pub fn new(plugin: Rc<Plugin>) -> RequestFlow {
        RequestFlow {
            plugin,
            stage: Stage::Headers,
            source: ModelSource::None,
            normal: None,
            upstream_path: None,
            body: None,
            prompt_bytes: 0,
            bad_stream: false,
            usage_route: false,
            started: None,
            metering: None,
            counts_tokens: false,
            in_flight: None,
        }
    }

    /// Whether body and trailers must be held back: nothing passes before a decision.
    pub fn holds_body(&self) -> bool {
        matches!(
            self.stage,
            Stage::AwaitingAuth(_) | Stage::AwaitingBody(_) | Stage::Replied
        )
    }

    /// The body policy. While the filter holds a request, Envoy buffers its body (up to
    /// the route's limit, the largest request body) and calls here as it grows: held until
    /// the decision, then released with the headers. On a model route the body's `model`
    /// is read once it is whole (`end_of_stream`), and checked against the key's policy
    /// as soon as the key is admitted.
    pub fn on_request_body(&mut self, host: &impl Host, end_of_stream: bool) -> Verdict {
        let decided = matches!(self.stage, Stage::Replied | Stage::Done);
        if !self.model_route() || !end_of_stream || self.body.is_some() || decided {
            return self.hold_or_pass();
        }
        let body = host.request_body();
        self.prompt_bytes = body.as_ref().map_or(0, |b| b.len() as u64);
        self.bad_stream = body.as_ref().is_some_and(|b| stream_flag(b).is_err());
        let seen = body.map_or(Err(BodyError::Empty), |b| requested_model(&b));
        match std::mem::replace(&mut self.stage, Stage::Headers) {
            Stage::AwaitingBody(admitted) => self.check_model(host, *admitted, seen),
            other => {
                self.stage = other;
                self.body = Some(seen);
                self.hold_or_pass()
            }
        }
    }

    /// A route whose model the filter reads (from the body, or the path and the body).
    fn model_route(&self) -> bool {
        !matches!(self.source, ModelSource::None)
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
    pub fn on_done(&mut self, host: &impl Host, now: Option<Millis>) {
        self.finish_metering(host, now, Ending::Early);
        self.end_in_flight();
        self.stage = Stage::Done;
    }

    /// The request no longer holds a parallel slot of its key: its response ended, a local
    /// reply refused it after its admission, or the stream is done. Called from each; the
    /// slot is given back at the first, once.
    fn end_in_flight(&mut self) {
        if let Some(request) = self.in_flight.take() {
            self.plugin.with_local(|local| local.end(request));
        }
    }

    /// The key whose check this request waits for, if any.
    pub fn pending_check(&self) -> Option<&KeyHash> {
        match &self.stage {
            Stage::AwaitingAuth(hash) => Some(hash),
            _ => None,
        }
    }

    /// `now` is `None` when the host clock cannot be read: the cache is then bypassed
    /// (every check goes to the control plane), never consulted at a guessed time.
    pub fn on_request_headers(&mut self, host: &impl Host, now: Option<Millis>) -> Verdict {
        self.on_request_headers_with(host, now, false)
    }

    /// As `on_request_headers`; `end_of_stream` says the request has no body.
    pub fn on_request_headers_with(
        &mut self,
        host: &impl Host,
        now: Option<Millis>,
        end_of_stream: bool,
    ) -> Verdict {
        self.started = now;
        // Every decision is made on the normal path: `/v1/chat%2Fcompletions` is the chat
        // route for an upstream that decodes it, so it is for the filter too.
        let normal = match normalize(&text(host.request_header(":path"))) {
            Ok(normal) => normal,
            Err(why) => return self.bad_path(host, why),
        };
        match Routes::new(&self.plugin.config).route(&normal.path) {
            Route::Liveness => self.liveness(host),
            Route::Passthrough if normal.changed => self.bad_path(host, PathError::NotNormal),
            Route::Passthrough => {
                let edits = for_passthrough(&host.request_headers());
                self.release_with(host, &edits)
            }
            Route::Protected => {
                self.source = model_source(&normal.path);
                self.usage_route = asks_for_usage(&self.source, &normal.path);
                if self.model_route() && end_of_stream {
                    self.body = Some(Err(BodyError::Empty));
                }
                self.upstream_path = normal.changed.then(|| normal.full());
                self.normal = Some(normal);
                self.protected(host, &host.request_headers(), now)
            }
        }
    }

    /// The dispatched auth check came back (or failed: zero headers).
    pub fn on_auth_response(
        &mut self,
        host: &impl Host,
        response: CallResponse<'_>,
        now: Option<Millis>,
    ) -> Verdict {
        if self.stage == Stage::Done {
            host.debug("livegate: auth check answered after its request ended; dropped");
            return Verdict::Stop;
        }
        let Stage::AwaitingAuth(hash) = std::mem::replace(&mut self.stage, Stage::Headers) else {
            host.debug("livegate: auth check response without a pending request; ignored");
            self.stage = Stage::Replied;
            return Verdict::Stop;
        };
        match decide(response, &hash) {
            Outcome::Allow { identity, grant } => {
                let revoked = self
                    .with_cache_at(now, |c, now| {
                        c.record_allow(hash.clone(), identity.clone(), grant, now)
                    })
                    .flatten();
                match revoked {
                    // The feed already brought a newer revocation than this answer.
                    Some(reason) => self.refuse(host, reason),
                    None => self.admit(host, &host.request_headers(), &hash, &identity, false),
                }
            }
            Outcome::Deny(reason) => {
                self.with_cache_at(now, |c, now| c.record_deny(hash.clone(), reason, now));
                self.refuse(host, reason)
            }
            Outcome::RateLimited(limited) => {
                self.with_cache_at(now, |c, now| {
                    c.record_rate_limited(hash.clone(), limited.clone(), now);
                });
                self.rate_limited(host, &limited, now)
            }
            Outcome::OverBudget(budget) => {
                host.increment(Metric::DeniedBudgetExceeded);
                self.reply(host, &LocalReply::over_budget(&budget))
            }
            Outcome::SpendSpoolFull => {
                host.increment(Metric::DeniedSpendSpoolFull);
                let retry_after = self.plugin.config.retry_after_seconds;
                self.reply(host, &LocalReply::spend_spool_full(retry_after))
            }
            Outcome::Error(error) => {
                self.on_error(host, &host.request_headers(), &hash, &error, now)
            }
        }
    }

    fn bad_path(&mut self, host: &impl Host, why: PathError) -> Verdict {
        host.increment(Metric::DeniedBadPath);
        self.reply(host, &LocalReply::bad_path(why))
    }

    fn liveness(&mut self, host: &impl Host) -> Verdict {
        if is_probe_method(&text(host.request_header(":method"))) {
            host.increment(Metric::LivenessServed);
            self.reply(host, &LocalReply::liveness())
        } else {
            self.reply(host, &LocalReply::method_not_allowed())
        }
    }

    fn protected(
        &mut self,
        host: &impl Host,
        headers: &RequestHeaders,
        now: Option<Millis>,
    ) -> Verdict {
        let authorization = headers.get(AUTHORIZATION);
        let x_api_key = headers.get(X_API_KEY);
        let key = match ApiKey::from_headers(authorization, x_api_key) {
            Ok(key) => key,
            Err(why) => {
                host.increment(Metric::DeniedMissingCredential);
                return self.reply(host, &LocalReply::missing_credential(why));
            }
        };
        let hash = key.hash();
        match self
            .with_cache_at(now, |c, now| c.fresh(&hash, now))
            .flatten()
        {
            Some(Cached::Allow(identity)) => {
                host.increment(Metric::CacheHit);
                self.admit(host, headers, &hash, &identity, false)
            }
            Some(Cached::Deny(reason)) => {
                host.increment(Metric::CacheHit);
                self.refuse(host, reason)
            }
            Some(Cached::RateLimited(limited)) => {
                host.increment(Metric::CacheHit);
                self.rate_limited(host, &limited, now)
            }
            None => {
                host.increment(Metric::CacheMiss);
                self.check(host, headers, &key, hash, now)
            }
        }
    }

    fn check(
        &mut self,
        host: &impl Host,
        headers: &RequestHeaders,
        key: &ApiKey,
        hash: KeyHash,
        now: Option<Millis>,
    ) -> Verdict {
        let config = &self.plugin.config;
        let check = AuthCheck {
            cluster: &config.control_plane_cluster,
            path: &config.auth_check_path,
            authority: &config.control_plane_authority,
            key: key.as_str(),
            token: config.internal_token.expose(),
            timeout_ms: config.auth_timeout_ms,
        };
        match host.dispatch_auth_check(&check) {
            Ok(()) => {
                self.stage = Stage::AwaitingAuth(hash);
                Verdict::Stop
            }
            Err(_) => self.on_error(host, headers, &hash, &CallError::Dispatch, now),
        }
    }

    /// No decision: stale allow if one is young enough (held to the worker's share of the
    /// key's rate limits), else fail open or closed.
    fn on_error(
        &mut self,
        host: &impl Host,
        headers: &RequestHeaders,
        hash: &KeyHash,
        error: &CallError,
        now: Option<Millis>,
    ) -> Verdict {
        host.increment(Metric::ControlPlaneError);
        host.debug(&format!("livegate: auth check failed: {error}"));
        if let Some(identity) = self
            .with_cache_at(now, |c, now| c.stale_allow(hash, now))
            .flatten()
        {
            match self.admit_locally(hash, &identity, now) {
                Some(Err(limited)) => {
                    host.increment(Metric::RateLimitedLocal);
                    return self.rate_limited(host, &limited, now);
                }
                Some(Ok(request)) => self.in_flight = request,
                None => {}
            }
            host.increment(Metric::StaleServed);
            return self.admit(host, headers, hash, &identity, true);
        }
        let config = &self.plugin.config;
        if config.failure_mode == FailureMode::Open {
            host.increment(Metric::FailedOpen);
            let auth = config.upstream_authorization.as_deref();
            let edits = for_upstream(headers, Admission::FailedOpen, auth);
            return self.release_with(host, &edits);
        }
        host.increment(Metric::Unavailable);
        let reply = LocalReply::unavailable(config.retry_after_seconds);
        self.reply(host, &reply)
    }

    /// A stale allow's admission against the worker's own window of the key's limits
    /// (`None`: no time, or no window to count in; a key without limits is always admitted),
    /// with the request counted in flight if the key has `max_parallel_requests`.
    fn admit_locally(
        &self,
        hash: &KeyHash,
        identity: &Identity,
        now: Option<Millis>,
    ) -> Option<Result<Option<InFlight>, RateLimited>> {
        let now = now?;
        self.plugin
            .with_local(|local| local.admit(hash, identity.limits, now))
    }

    fn admit(
        &mut self,
        host: &impl Host,
        headers: &RequestHeaders,
        hash: &KeyHash,
        who: &Identity,
        stale: bool,
    ) -> Verdict {
        let admission = Admission::Identified {
            hash,
            identity: who,
            stale,
        };
        let auth = self.plugin.config.upstream_authorization.as_deref();
        let mut edits = for_upstream(headers, admission, auth);
        if self.plugin.config.metering.enabled {
            // The meter reads only identity bodies: the answer comes uncompressed, and the
            // client (which must accept identity) gets it so (docs/metering.md, "Compression").
            edits.set.push((ACCEPT_ENCODING, "identity".to_string()));
        }
        self.counts_tokens = who.limits.tpm_limit.is_some();
        if self.in_flight.is_none() {
            // Admitted by the control plane (a stale admission was counted by
            // `admit_locally`, or had no clock to be held to): in flight all the same, so
            // that an outage starting now sees it.
            self.in_flight = self
                .plugin
                .with_local(|local| local.start(hash, who.limits))
                .flatten();
        }
        let requester = Requester {
            request_id: request_id(headers.get(X_REQUEST_ID)),
            key_hash: hash.clone(),
            key_alias: who.key_alias.clone(),
            team_id: who.team_id.clone(),
            model: None,
            start: self.started,
        };
        if who.limits.max_parallel_requests.is_some() && self.plugin.config.metering.enabled {
            // The control plane frees the request's parallel slot when its record arrives:
            // a request refused after this (its model) or abandoned before its answer
            // must send one too (its status, no usage), or its slot waits out the lease.
            self.metering = Some(ResponseMeter::new(requester.clone()));
        }
        if !self.model_route() {
            if let Err(denied) = self.model_free_route(&who.access) {
                host.increment(Metric::DeniedModel);
                return self.reply(host, &LocalReply::model_denied(&denied));
            }
            host.increment(Metric::Allowed);
            return self.release_metered(host, &edits, requester);
        }
        let admitted = Admitted {
            edits,
            access: who.access.clone(),
            requester,
        };
        match self.body.take() {
            Some(seen) => self.check_model(host, admitted, seen),
            None => {
                self.stage = Stage::AwaitingBody(Box::new(admitted));
                Verdict::Stop
            }
        }
    }

    /// A route that names no model, for a key restricted to some models: refused unless
    /// the operator configured it as model-free.
    fn model_free_route(&self, access: &ModelAccess) -> Result<(), ModelDenied> {
        let path = self.normal.as_ref().map_or("", |n| n.path.as_str());
        if Routes::new(&self.plugin.config).model_free(path) {
            return Ok(());
        }
        access.check_model_free_route(path)
    }

    /// The key is admitted and the body's model known: refuse, or send it on (with its
    /// alias resolved in the body, and the body's new length). On a path-model route the
    /// path's model decides (as LiteLLM reads it) and a `model` the body names is held to
    /// the same policy, so neither reading of the request escapes it.
    fn check_model(&mut self, host: &impl Host, admitted: Admitted, seen: BodyModel) -> Verdict {
        let path_model = match &self.source {
            ModelSource::Path(path_model) => Some(path_model.clone()),
            _ => None,
        };
        let requested = match (seen, &path_model) {
            (Ok(requested), _) => Some(requested),
            (Err(_), Some(_)) => None,
            (Err(why), None) => {
                host.increment(Metric::DeniedModel);
                return self.reply(host, &LocalReply::bad_body(why));
            }
        };
        let checked = |name: &str| admitted.access.check(name);
        let path_resolved = match path_model.as_ref().map(|p| checked(&p.name)).transpose() {
            Ok(resolved) => resolved,
            Err(denied) => return self.model_refused(host, &denied),
        };
        let body_resolved = match requested.as_ref().map(|r| checked(&r.name)).transpose() {
            Ok(resolved) => resolved,
            Err(denied) => return self.model_refused(host, &denied),
        };
        if let (Some(path_model), Some(resolved)) = (&path_model, &path_resolved) {
            if *resolved != path_model.name {
                let rest = self.normal.as_ref().map_or("", |n| n.rest.as_str());
                self.upstream_path = Some(format!("{}{rest}", path_model.with_model(resolved)));
            }
        }
        let Some(model) = path_resolved.or_else(|| body_resolved.clone()) else {
            // A route without a path model whose body named none was refused above.
            host.increment(Metric::DeniedModel);
            return self.reply(host, &LocalReply::bad_body(BodyError::NoModel));
        };
        if self.bad_stream {
            host.increment(Metric::DeniedModel);
            return self.reply(host, &LocalReply::bad_stream());
        }
        let mut edits = admitted.edits;
        let body_edit = requested.as_ref().zip(body_resolved.as_deref());
        match self.rewrite_body(host, body_edit) {
            Ok(Some(length)) => edits.set.push(("content-length", length.to_string())),
            Ok(None) => {}
            Err(HeaderRefused) => {
                host.increment(Metric::HeaderRewriteFailed);
                return self.reply(host, &LocalReply::internal_error());
            }
        }
        host.increment(Metric::Allowed);
        let requester = Requester {
            model: Some(model),
            ..admitted.requester
        };
        self.release_metered(host, &edits, requester)
    }

    fn model_refused(&mut self, host: &impl Host, denied: &ModelDenied) -> Verdict {
        host.increment(Metric::DeniedModel);
        self.reply(host, &LocalReply::model_denied(denied))
    }

    /// The body as it goes upstream: the key's alias resolved (`model`: the body's model
    /// and what it resolved to), and, on the completions routes, a stream asked for its
    /// usage. The new length when the body changed.
    fn rewrite_body(
        &self,
        host: &impl Host,
        model: Option<(&RequestedModel, &str)>,
    ) -> Result<Option<usize>, HeaderRefused> {
        let metering = &self.plugin.config.metering;
        let ask_usage = self.usage_route && metering.enabled && metering.include_usage;
        let aliased = model.is_some_and(|(requested, model)| model != requested.name);
        if !aliased && !ask_usage {
            return Ok(None);
        }
        let Some(mut body) = host.request_body() else {
            // No body to edit: an alias cannot reach the upstream unresolved.
            return if aliased {
                Err(HeaderRefused)
            } else {
                Ok(None)
            };
        };
        if let Some((requested, model)) = model.filter(|_| aliased) {
            body = requested.replaced(&body, model).ok_or(HeaderRefused)?;
        }
        let mut overrode = None;
        if ask_usage {
            // The body is already bounded by Envoy (the route's largest request body).
            if let Rewrite::Rewritten {
                body: with_usage,
                overrode: o,
            } = include_usage(&body, usize::MAX)
            {
                body = with_usage;
                overrode = Some(o);
            }
        }
        if !aliased && overrode.is_none() {
            return Ok(None);
        }
        host.set_request_body(&body)?;
        match overrode {
            Some(true) => host.increment(Metric::IncludeUsageOverridden),
            Some(false) => host.increment(Metric::IncludeUsageAdded),
            None => {}
        }
        Ok(Some(body.len()))
    }

    /// Releases an admitted request; its response is metered if metering is on.
    fn release_metered(
        &mut self,
        host: &impl Host,
        edits: &HeaderEdits,
        requester: Requester,
    ) -> Verdict {
        let verdict = self.release_with(host, edits);
        if self.stage == Stage::Released && self.plugin.config.metering.enabled {
            self.metering = Some(ResponseMeter::released(requester, self.prompt_bytes));
        }
        verdict
    }

    fn refuse(&mut self, host: &impl Host, reason: DenyReason) -> Verdict {
        host.increment(match reason {
            DenyReason::InvalidKey => Metric::DeniedInvalidKey,
            DenyReason::KeyBlocked => Metric::DeniedKeyBlocked,
            DenyReason::KeyExpired => Metric::DeniedKeyExpired,
            DenyReason::TeamBlocked => Metric::DeniedTeamBlocked,
            DenyReason::BudgetExceeded => Metric::DeniedBudgetExceeded,
            DenyReason::RateLimited => Metric::DeniedRateLimited,
        });
        self.reply(host, &LocalReply::denied(reason))
    }

    /// 429 for a rate limit: the control plane's, cached, or the worker's own.
    fn rate_limited(
        &mut self,
        host: &impl Host,
        limited: &RateLimited,
        now: Option<Millis>,
    ) -> Verdict {
        host.increment(Metric::DeniedRateLimited);
        // Without a clock the whole window is the wait: never an invitation to retry at once.
        let now = now.unwrap_or_else(|| limited.reset_at_ms.saturating_sub(WINDOW_MS));
        self.reply(host, &LocalReply::rate_limited(limited, now))
    }

    /// Sends a local reply: the request ends here, and gives back its slot if it was
    /// admitted (a model refused, a body it could not edit).
    fn reply(&mut self, host: &impl Host, reply: &LocalReply) -> Verdict {
        host.send_reply(reply);
        if let Some(meter) = &mut self.metering {
            meter.answered_locally(reply.status);
        }
        self.finish_metering(host, None, Ending::Complete);
        self.end_in_flight();
        self.stage = Stage::Replied;
        Verdict::Stop
    }

    /// Applies the header edits and lets the request go on; if the host refuses any
    /// edit, the request is refused instead: never forwarded with the client's key or a
    /// spoofed `x-livegate-*` header still on it.
    fn release_with(&mut self, host: &impl Host, edits: &HeaderEdits) -> Verdict {
        if apply(host, edits, self.upstream_path.as_deref()).is_err() {
            host.increment(Metric::HeaderRewriteFailed);
            return self.reply(host, &LocalReply::internal_error());
        }
        self.stage = Stage::Released;
        Verdict::Continue
    }

    fn with_cache<T>(&self, f: impl FnOnce(&mut DecisionCache) -> T) -> Option<T> {
        self.plugin.with_cache(f)
    }

    /// The cache at a known time; with no time there is no cache (a miss, nothing kept).
    fn with_cache_at<T>(
        &self,
        now: Option<Millis>,
        f: impl FnOnce(&mut DecisionCache, Millis) -> T,
    ) -> Option<T> {
        let now = now?;
        self.with_cache(|c| f(c, now))
    }
}

/// The host ends every stream with `on_done`; should a flow be dropped without it, its
/// slot is given back all the same, never held for the worker's life.
impl Drop for RequestFlow {
    fn drop(&mut self) {
        self.end_in_flight();
    }
}

/// Envoy's request id: the spend record's identity.
const X_REQUEST_ID: &str = "x-request-id";

/// Set to `identity` on metered requests: the meter does not decompress.
const ACCEPT_ENCODING: &str = "accept-encoding";

/// The OpenAI completions routes (and Azure's), whose streams report usage only when asked.
fn asks_for_usage(source: &ModelSource, path: &str) -> bool {
    let completions = |p: &str| matches!(p, "/chat/completions" | "/completions");
    let path = route(path);
    match source {
        ModelSource::Body => completions(path) || path.strip_prefix("/v1").is_some_and(completions),
        ModelSource::Path(path_model) => completions(path_model.operation()),
        ModelSource::None => false,
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

fn text(value: Option<Vec<u8>>) -> String {
    value
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default()
}

mod response;

#[cfg(test)]
mod internal_token_tests;
#[cfg(test)]
mod metering_tests;
#[cfg(test)]
mod mock;
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
