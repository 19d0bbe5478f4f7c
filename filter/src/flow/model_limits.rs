//! Per-model limits (`model_rpm_limit`, `model_tpm_limit`): once a request's body named a
//! model the key has a limit for, the control plane is asked again with that model (the
//! one the request resolved to, aliases applied) and counts it in the key×model and
//! team×model windows; with no answer, the worker's own window of the key×model holds it
//! to its outage share, as a stale allow's own limits are.

use super::body::Body;
use super::{Admitted, RequestFlow, Stage, Verdict};
use crate::config::FailureMode;
use crate::decision::{decide, CallResponse, Outcome};
use crate::host::{AuthCheck, Host};
use crate::metrics::Metric;
use crate::reply::LocalReply;
use crate::time::Millis;
use livegate_contract::headers::{AUTHORIZATION, X_API_KEY};
use livegate_contract::{same_model, ApiKey, KeyHash, ModelLimits, RateLimits};

/// The limits that apply to `model` (the strictest of every entry naming it, case and
/// surrounding whitespace aside) and the name the first such entry is configured as;
/// `None` when no entry names it (nothing to ask).
pub(super) fn limits_for(limits: &ModelLimits, model: &str) -> Option<(String, RateLimits)> {
    let mut matching = limits.iter().filter(|(name, _)| same_model(name, model));
    let (name, first) = matching.next()?;
    let strictest = matching.fold(*first, |acc, (_, l)| RateLimits {
        rpm_limit: RateLimits::stricter(acc.rpm_limit, l.rpm_limit),
        tpm_limit: RateLimits::stricter(acc.tpm_limit, l.tpm_limit),
        max_parallel_requests: None,
    });
    let strictest = RateLimits {
        max_parallel_requests: None,
        ..strictest
    };
    // An entry without a limit is a model with a budget (`model_max_budget`): still asked.
    Some((name.clone(), strictest))
}

/// The worker's window of one key's requests for one model: a hash no key has (a raw key
/// holds no NUL), so it shares no window with a key.
pub(super) fn model_window(key: &KeyHash, model: &str) -> KeyHash {
    KeyHash::of_raw(&format!(
        "{}\0model\0{}",
        key.as_str(),
        model.trim().to_ascii_lowercase()
    ))
}

impl RequestFlow {
    /// The request's model has a per-model limit: ask the control plane (or, for a key
    /// admitted from a stale allow, decide here at once).
    pub(super) fn check_model_limits(
        &mut self,
        host: &impl Host,
        mut admitted: Admitted,
        model: String,
        limits: RateLimits,
    ) -> Verdict {
        let hash = admitted.requester.key_hash.clone();
        if limits.tpm_limit.is_some() {
            admitted.held.model_tokens = Some(model_window(&hash, &model));
        }
        if admitted.stale {
            let now = admitted.request.started;
            return self.model_locally(host, admitted, &model, limits, now);
        }
        let headers = host.request_headers();
        let key = ApiKey::from_headers(headers.get(AUTHORIZATION), headers.get(X_API_KEY));
        let config = &self.plugin.config;
        let dispatched = key.ok().map(|key| {
            host.dispatch_auth_check(&AuthCheck {
                cluster: &config.control_plane_cluster,
                path: &config.auth_check_path,
                authority: &config.control_plane_authority,
                key: key.as_str(),
                token: config.internal_token.expose(),
                timeout_ms: config.auth_timeout_ms,
                model: Some(&model),
            })
        });
        match dispatched {
            Some(Ok(())) => {
                self.stage = Stage::AwaitingModelCheck {
                    hash,
                    admitted: Box::new(admitted),
                    model,
                };
                Verdict::Stop
            }
            _ => {
                host.increment(Metric::ControlPlaneError);
                let now = admitted.request.started;
                self.model_locally(host, admitted, &model, limits, now)
            }
        }
    }

    /// The model check came back (or failed: zero headers). Nothing of it is cached: a
    /// model's refusal is not the key's.
    pub(super) fn on_model_answer(
        &mut self,
        host: &impl Host,
        response: CallResponse<'_>,
        now: Option<Millis>,
    ) -> Verdict {
        let Stage::AwaitingModelCheck {
            hash,
            admitted,
            model,
        } = std::mem::replace(&mut self.stage, Stage::Headers)
        else {
            self.stage = Stage::Replied;
            return Verdict::Stop;
        };
        let admitted = *admitted;
        match decide(response, &hash) {
            Outcome::Allow { .. } => {
                let body = Body::read(host);
                self.check_model(host, admitted, body, true)
            }
            Outcome::RateLimited(limited) => {
                host.increment(Metric::DeniedRateLimited);
                let now = now.unwrap_or_else(|| limited.reset_at_ms.saturating_sub(60_000));
                let reply = LocalReply::rate_limited(&limited, now);
                self.reply_holding(host, &reply, Some(admitted.held))
            }
            Outcome::Deny(reason) => {
                host.increment(Metric::DeniedModel);
                let reply = LocalReply::denied(reason);
                self.reply_holding(host, &reply, Some(admitted.held))
            }
            Outcome::OverBudget(budget) => {
                host.increment(Metric::DeniedBudgetExceeded);
                let reply = LocalReply::over_budget(&budget);
                self.reply_holding(host, &reply, Some(admitted.held))
            }
            Outcome::SpendSpoolFull => {
                host.increment(Metric::DeniedSpendSpoolFull);
                let reply = LocalReply::spend_spool_full(self.plugin.config.retry_after_seconds);
                self.reply_holding(host, &reply, Some(admitted.held))
            }
            Outcome::Error(error) => {
                host.increment(Metric::ControlPlaneError);
                host.debug(&format!("livegate: model check failed: {error}"));
                // As for the key's own check: only a key the worker could serve stale is
                // decided here; else the configured failure mode.
                let stale = self
                    .with_cache_at(now, |c, now| c.stale_allow(&hash, now))
                    .flatten();
                let limits = limits_for(&admitted.model_limits, &model);
                match (stale, limits) {
                    (Some(_), Some((_, limits))) => {
                        self.model_locally(host, admitted, &model, limits, now)
                    }
                    _ if self.plugin.config.failure_mode == FailureMode::Open => {
                        host.increment(Metric::FailedOpen);
                        let body = Body::read(host);
                        self.check_model(host, admitted, body, true)
                    }
                    _ => {
                        host.increment(Metric::Unavailable);
                        let retry_after = self.plugin.config.retry_after_seconds;
                        let reply = LocalReply::unavailable(retry_after);
                        self.reply_holding(host, &reply, Some(admitted.held))
                    }
                }
            }
        }
    }

    /// No answer: the worker's own window of the key×model, at its outage share of the
    /// limits (as a stale allow's own limits are held). Without a clock, nothing is
    /// counted and the request is refused for a window: never let in unbounded.
    fn model_locally(
        &mut self,
        host: &impl Host,
        admitted: Admitted,
        model: &str,
        limits: RateLimits,
        now: Option<Millis>,
    ) -> Verdict {
        let window = model_window(&admitted.requester.key_hash, model);
        let verdict = now.and_then(|now| {
            self.plugin
                .with_local(|local| local.admit(&window, limits, now).map(|_| ()))
        });
        match verdict {
            Some(Ok(())) => {
                host.increment(Metric::StaleServed);
                let body = Body::read(host);
                self.check_model(host, admitted, body, true)
            }
            Some(Err(mut limited)) => {
                host.increment(Metric::RateLimitedLocal);
                limited.model = Some(model.to_owned());
                let now = now.unwrap_or(0);
                let reply = LocalReply::rate_limited(&limited, now);
                host.increment(Metric::DeniedRateLimited);
                self.reply_holding(host, &reply, Some(admitted.held))
            }
            None => {
                host.increment(Metric::Unavailable);
                let reply = LocalReply::unavailable(self.plugin.config.retry_after_seconds);
                self.reply_holding(host, &reply, Some(admitted.held))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rpm: Option<u64>, tpm: Option<u64>) -> RateLimits {
        RateLimits {
            rpm_limit: rpm,
            tpm_limit: tpm,
            max_parallel_requests: None,
        }
    }

    #[test]
    fn a_model_spelled_otherwise_meets_the_strictest_limit_naming_it() {
        let mut all = ModelLimits::new();
        all.insert("gpt-4o".into(), limits(Some(10), None));
        all.insert("GPT-4o".into(), limits(Some(3), Some(100)));
        all.insert("gpt-4o-mini".into(), limits(Some(1), None));
        let (name, found) = limits_for(&all, " Gpt-4O ").unwrap();
        assert_eq!(name, "GPT-4o");
        assert_eq!(found, limits(Some(3), Some(100)));
        assert_eq!(limits_for(&all, "gpt-4"), None);
    }

    #[test]
    fn a_key_model_window_is_shared_by_spellings_and_by_no_key() {
        let key = KeyHash::of_raw("sk-a");
        assert_eq!(model_window(&key, "gpt-4o"), model_window(&key, " GPT-4o"));
        assert_ne!(model_window(&key, "gpt-4o"), model_window(&key, "gpt-4"));
        assert_ne!(model_window(&key, "gpt-4o"), key);
        let other = KeyHash::of_raw("sk-b");
        assert_ne!(model_window(&key, "gpt-4o"), model_window(&other, "gpt-4o"));
    }
}
