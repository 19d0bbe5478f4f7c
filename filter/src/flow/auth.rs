//! The key's side of a request: its credential, the decision cache, the auth check and
//! its answer, a stale allow when the control plane cannot answer, and the admission.

use super::{Admitted, Held, Request, RequestFlow, Stage, Verdict};
use crate::cache::{Cached, DecisionCache};
use crate::config::FailureMode;
use crate::decision::{decide, CallError, CallResponse, DenyReason, Identity, Outcome};
use crate::host::{AuthCheck, Host, RequestHeaders};
use crate::local_limits::InFlight;
use crate::metering::{request_id, Requester, ResponseMeter};
use crate::metrics::Metric;
use crate::reply::LocalReply;
use crate::time::Millis;
use crate::upstream_headers::{for_upstream, Admission, HeaderEdits};
use livegate_contract::headers::{AUTHORIZATION, X_API_KEY};
use livegate_contract::rate_limit::{FILTER_LEASE_MARGIN_MS, WINDOW_MS};
use livegate_contract::{ApiKey, KeyHash, RateLimited};

impl RequestFlow {
    /// The dispatched auth check came back (or failed: zero headers).
    pub fn on_auth_response(
        &mut self,
        host: &impl Host,
        response: CallResponse<'_>,
        now: Option<Millis>,
    ) -> Verdict {
        // Decided (or ended): its body no longer waits for a check.
        self.release_unverified();
        if matches!(self.stage, Stage::Done) {
            host.debug("livegate: auth check answered after its request ended; dropped");
            return Verdict::Stop;
        }
        if matches!(self.stage, Stage::AwaitingModelCheck { .. }) {
            return self.on_model_answer(host, response, now);
        }
        let Stage::AwaitingAuth { hash, request } =
            std::mem::replace(&mut self.stage, Stage::Headers)
        else {
            host.debug("livegate: auth check response without a pending request; ignored");
            self.stage = Stage::Replied;
            return Verdict::Stop;
        };
        match decide(response, &hash) {
            Outcome::Allow {
                identity,
                mut grant,
            } => {
                // A share of a lease, counted from this answer's arrival, ends before the
                // control plane's lease only if the check cannot have taken longer than
                // the margin.
                if self.plugin.config.auth_timeout_ms > FILTER_LEASE_MARGIN_MS {
                    grant.lease = None;
                }
                let revoked = self
                    .with_cache_at(now, |c, now| {
                        c.record_allow(hash.clone(), identity.clone(), grant, now)
                    })
                    .flatten();
                match revoked {
                    // The feed already brought a newer revocation than this answer.
                    Some(reason) => self.refuse(host, reason),
                    None => {
                        let headers = host.request_headers();
                        let key = Key {
                            hash: &hash,
                            identity: &identity,
                            stale: false,
                        };
                        self.admit(host, &headers, *request, key, None)
                    }
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
                let headers = host.request_headers();
                self.on_error(host, &headers, *request, &hash, &error, now)
            }
        }
    }

    pub(super) fn protected(
        &mut self,
        host: &impl Host,
        headers: &RequestHeaders,
        request: Request,
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
                self.admit_cached(host, headers, request, &hash, &identity)
            }
            Some(Cached::Leased(identity)) => {
                host.increment(Metric::CacheLeased);
                self.admit_cached(host, headers, request, &hash, &identity)
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
                self.check(host, headers, request, &key, hash, now)
            }
        }
    }

    fn admit_cached(
        &mut self,
        host: &impl Host,
        headers: &RequestHeaders,
        request: Request,
        hash: &KeyHash,
        identity: &Identity,
    ) -> Verdict {
        host.increment(Metric::CacheHit);
        let key = Key {
            hash,
            identity,
            stale: false,
        };
        self.admit(host, headers, request, key, None)
    }

    fn check(
        &mut self,
        host: &impl Host,
        headers: &RequestHeaders,
        request: Request,
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
            model: None,
        };
        match host.dispatch_auth_check(&check) {
            Ok(()) => {
                let request = Box::new(request);
                self.stage = Stage::AwaitingAuth { hash, request };
                Verdict::Stop
            }
            Err(_) => self.on_error(host, headers, request, &hash, &CallError::Dispatch, now),
        }
    }

    /// No decision: stale allow if one is young enough (held to the worker's share of the
    /// key's rate limits), else fail open or closed.
    fn on_error(
        &mut self,
        host: &impl Host,
        headers: &RequestHeaders,
        request: Request,
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
            let in_flight = match self.admit_locally(hash, &identity, now) {
                Some(Err(limited)) => {
                    host.increment(Metric::RateLimitedLocal);
                    return self.rate_limited(host, &limited, now);
                }
                Some(Ok(in_flight)) => in_flight,
                None => None,
            };
            host.increment(Metric::StaleServed);
            let key = Key {
                hash,
                identity: &identity,
                stale: true,
            };
            return self.admit(host, headers, request, key, in_flight);
        }
        let config = &self.plugin.config;
        if config.failure_mode == FailureMode::Open {
            host.increment(Metric::FailedOpen);
            let auth = config.upstream_authorization.as_deref();
            let edits = for_upstream(headers, Admission::FailedOpen, auth);
            let path = request.upstream_path;
            return self.release_with(host, &edits, path.as_deref(), Held::default());
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

    /// Lets the key's request in: a route without a model goes on now, a model route once
    /// its body's model is checked. `in_flight`: the slot a stale admission already took.
    fn admit(
        &mut self,
        host: &impl Host,
        headers: &RequestHeaders,
        mut request: Request,
        key: Key<'_>,
        in_flight: Option<InFlight>,
    ) -> Verdict {
        let Key {
            hash,
            identity: who,
            stale,
        } = key;
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
        // Admitted by the control plane (a stale admission was counted by
        // `admit_locally`, or had no clock to be held to): in flight all the same, so
        // that an outage starting now sees it.
        let in_flight = in_flight.or_else(|| {
            self.plugin
                .with_local(|local| local.start(hash, who.limits))
                .flatten()
        });
        let requester = Requester {
            request_id: request_id(headers.get(X_REQUEST_ID)),
            key_hash: hash.clone(),
            key_alias: who.key_alias.clone(),
            team_id: who.team_id.clone(),
            model: None,
            deployment: None,
            start: request.started,
        };
        let mut held = Held {
            metering: None,
            counts_tokens: who.limits.tpm_limit.is_some(),
            model_tokens: None,
            in_flight,
        };
        if who.limits.max_parallel_requests.is_some() && self.plugin.config.metering.enabled {
            // The control plane frees the request's parallel slot when its record arrives:
            // a request refused after this (its model) or abandoned before its answer
            // must send one too (its status, no usage), or its slot waits out the lease.
            held.metering = Some(ResponseMeter::new(requester.clone()));
        }
        if !request.model_route() {
            if self.answers_models(headers, &request) {
                host.increment(Metric::Allowed);
                let reply = self.models_reply(&who.access);
                return self.reply_holding(host, &reply, Some(held));
            }
            if let Err(denied) = self.model_free_route(&request, &who.access) {
                host.increment(Metric::DeniedModel);
                return self.reply_holding(host, &LocalReply::model_denied(&denied), Some(held));
            }
            host.increment(Metric::Allowed);
            let path = request.upstream_path.take();
            return self.release_metered(host, &edits, path.as_deref(), requester, 0, held);
        }
        let body = request.body.take();
        let admitted = Admitted {
            request,
            edits,
            access: who.access.clone(),
            requester,
            held,
            model_limits: who.model_limits.clone(),
            stale,
        };
        match body {
            Some(body) => self.check_model(host, admitted, body, false),
            None => {
                self.stage = Stage::AwaitingBody(Box::new(admitted));
                Verdict::Stop
            }
        }
    }

    /// Releases an admitted request; its response is metered if metering is on (its
    /// estimate's prompt: `prompt_bytes` of request body).
    pub(super) fn release_metered(
        &mut self,
        host: &impl Host,
        edits: &HeaderEdits,
        path: Option<&str>,
        requester: Requester,
        prompt_bytes: u64,
        held: Held,
    ) -> Verdict {
        let verdict = self.release_with(host, edits, path, held);
        if let Stage::Released(held) = &mut self.stage {
            if self.plugin.config.metering.enabled {
                held.metering = Some(ResponseMeter::released(requester, prompt_bytes));
            }
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

    /// The cache at a known time; with no time there is no cache (a miss, nothing kept).
    pub(super) fn with_cache_at<T>(
        &self,
        now: Option<Millis>,
        f: impl FnOnce(&mut DecisionCache, Millis) -> T,
    ) -> Option<T> {
        let now = now?;
        self.plugin.with_cache(|c| f(c, now))
    }
}

/// The key a request is admitted for, and how.
#[derive(Debug, Clone, Copy)]
struct Key<'a> {
    hash: &'a KeyHash,
    identity: &'a Identity,
    /// Served from a stale allow while the control plane could not answer.
    stale: bool,
}

/// Envoy's request id: the spend record's identity.
const X_REQUEST_ID: &str = "x-request-id";

/// Set to `identity` on metered requests: the meter does not decompress.
const ACCEPT_ENCODING: &str = "accept-encoding";
