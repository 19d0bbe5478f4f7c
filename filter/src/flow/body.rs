//! A request's body on a model route: read once whole, its model checked against the
//! key's policy, and rewritten on its way upstream (an alias resolved, usage asked for).

use super::model_limits::limits_for;
use super::{Admitted, Held, Request, RequestFlow, Stage, Verdict};
use crate::host::{HeaderRefused, Host};
use crate::metering::Requester;
use crate::metrics::Metric;
use crate::model_body::{requested_model, route, BodyError, ModelSource, RequestedModel};
use crate::reply::LocalReply;
use crate::routing::Routes;
use crate::usage::stream_options::{include_usage, stream_flag, Rewrite};
use livegate_contract::{ModelAccess, ModelDenied};

/// What a model route's body said, once whole.
#[derive(Debug)]
pub(super) struct Body {
    model: Result<RequestedModel, BodyError>,
    /// The body's bytes: an estimate's prompt.
    bytes: u64,
    /// The body's `stream` is not a JSON boolean (nor `null`): refused, naming it.
    bad_stream: bool,
    /// The body asks for a stream: only then can it need `include_usage`.
    streams: bool,
    /// The bytes as read, for the rewrite in the same callback (no second read from the
    /// host); dropped when the body waits for an auth check ([`Body::unkept`]), so a
    /// request held across a callout does not hold its body twice.
    copy: Option<Vec<u8>>,
}

impl Body {
    /// A request that ended with its headers: no body, so no model in it.
    pub(super) fn absent() -> Body {
        Body {
            model: Err(BodyError::Empty),
            bytes: 0,
            bad_stream: false,
            streams: false,
            copy: None,
        }
    }

    pub(super) fn read(host: &impl Host) -> Body {
        let body = host.request_body();
        let stream = body.as_deref().map(stream_flag);
        Body {
            bytes: body.as_ref().map_or(0, |b| b.len() as u64),
            bad_stream: stream.is_some_and(|s| s.is_err()),
            streams: stream == Some(Ok(true)),
            model: body
                .as_deref()
                .map_or(Err(BodyError::Empty), requested_model),
            copy: body,
        }
    }

    /// What the body said, without its bytes: it waits for a later callback, which reads
    /// them from the host again if it edits them.
    pub(super) fn unkept(self) -> Body {
        Body { copy: None, ..self }
    }
}

impl RequestFlow {
    /// The body policy. While the filter holds a request, Envoy buffers its body (up to
    /// the route's limit, the largest request body) and calls here as it grows: held until
    /// the decision, then released with the headers. On a model route the body's `model`
    /// is read once it is whole (`end_of_stream`), and checked against the key's policy
    /// as soon as the key is admitted.
    pub fn on_request_body(&mut self, host: &impl Host, end_of_stream: bool) -> Verdict {
        if matches!(self.stage, Stage::AwaitingAuth { .. }) && !self.count_unverified(host) {
            return self.shed(host);
        }
        if !end_of_stream {
            return self.hold_or_pass();
        }
        match std::mem::replace(&mut self.stage, Stage::Headers) {
            Stage::AwaitingBody(admitted) => {
                let body = Body::read(host);
                self.check_model(host, *admitted, body, false)
            }
            Stage::AwaitingAuth { hash, mut request } => {
                if request.model_route() && request.body.is_none() {
                    request.body = Some(Body::read(host).unkept());
                }
                self.stage = Stage::AwaitingAuth { hash, request };
                self.hold_or_pass()
            }
            other => {
                self.stage = other;
                self.hold_or_pass()
            }
        }
    }

    /// Counts the body held so far in the worker's budget for bodies whose keys are being
    /// checked; false: it would go past.
    fn count_unverified(&mut self, host: &impl Host) -> bool {
        let size = u64::try_from(host.request_body_size()).unwrap_or(u64::MAX);
        let counted = self.plugin.unverified.grow(self.unverified_bytes, size);
        if counted.is_ok() {
            self.unverified_bytes = size;
        }
        counted.is_ok()
    }

    /// Answers 503 before the key is known, freeing the body. The stream ends with the
    /// reply, so the check's answer finds no one and is dropped, as when a client goes away
    /// while its check is in flight.
    fn shed(&mut self, host: &impl Host) -> Verdict {
        self.release_unverified();
        host.increment(Metric::UnverifiedBodyShed);
        let retry_after = self.plugin.config.retry_after_seconds;
        self.reply(host, &LocalReply::unverified_bodies_full(retry_after))
    }

    /// A route that names no model, for a key restricted to some models: refused unless
    /// the operator configured it as model-free.
    pub(super) fn model_free_route(
        &self,
        request: &Request,
        access: &ModelAccess,
    ) -> Result<(), ModelDenied> {
        let path = request.normal.path.as_str();
        if Routes::new(&self.plugin.config).model_free(path) {
            return Ok(());
        }
        access.check_model_free_route(path)
    }

    /// The key is admitted and the body's model known: refuse, or send it on (with its
    /// alias resolved in the body, and the body's new length). On a path-model route the
    /// path's model decides (as LiteLLM reads it) and a `model` the body names is held to
    /// the same policy, so neither reading of the request escapes it. A model with a
    /// per-model limit is checked for it first (`model_checked`: it was), and all this
    /// runs again on the answer.
    pub(super) fn check_model(
        &mut self,
        host: &impl Host,
        admitted: Admitted,
        body: Body,
        model_checked: bool,
    ) -> Verdict {
        let Admitted {
            mut request,
            mut edits,
            access,
            requester,
            held,
            model_limits,
            stale,
        } = admitted;
        let path_model = match &request.source {
            ModelSource::Path(path_model) => Some(path_model.clone()),
            _ => None,
        };
        let requested = match (body.model, &path_model) {
            (Ok(requested), _) => Some(requested),
            (Err(_), Some(_)) => None,
            (Err(why), None) => {
                host.increment(Metric::DeniedModel);
                return self.reply_holding(host, &LocalReply::bad_body(why), Some(held));
            }
        };
        let checked = |name: &str| access.check(name);
        let path_resolved = match path_model.as_ref().map(|p| checked(&p.name)).transpose() {
            Ok(resolved) => resolved,
            Err(denied) => return self.model_refused(host, &denied, held),
        };
        let body_resolved = match requested.as_ref().map(|r| checked(&r.name)).transpose() {
            Ok(resolved) => resolved,
            Err(denied) => return self.model_refused(host, &denied, held),
        };
        if let (Some(path_model), Some(resolved)) = (&path_model, &path_resolved) {
            if *resolved != path_model.name {
                let rest = &request.normal.rest;
                request.upstream_path = Some(format!("{}{rest}", path_model.with_model(resolved)));
            }
        }
        let Some(model) = path_resolved.or_else(|| body_resolved.clone()) else {
            // A route without a path model whose body named none was refused above.
            host.increment(Metric::DeniedModel);
            let reply = LocalReply::bad_body(BodyError::NoModel);
            return self.reply_holding(host, &reply, Some(held));
        };
        if body.bad_stream {
            host.increment(Metric::DeniedModel);
            return self.reply_holding(host, &LocalReply::bad_stream(), Some(held));
        }
        if !model_checked {
            if let Some((name, limits)) = limits_for(&model_limits, &model) {
                let admitted = Admitted {
                    request,
                    edits,
                    access,
                    requester,
                    held,
                    model_limits,
                    stale,
                };
                return self.check_model_limits(host, admitted, name, limits);
            }
        }
        let routed = match self.route_to_deployment(host, &request, &model, &mut edits) {
            Ok(routed) => routed,
            Err(why) => {
                host.increment(Metric::DeniedModel);
                return self.reply_holding(host, &LocalReply::unroutable(&why), Some(held));
            }
        };
        // To a deployment, the body names the provider's model (`openai/gpt-4o` → `gpt-4o`).
        let target = match &routed {
            Some(routed) => {
                request.upstream_path = Some(routed.path.clone());
                Some(routed.model.as_str())
            }
            None => body_resolved.as_deref(),
        };
        let body_edit = requested.as_ref().zip(target);
        let asks_usage = request.usage_route && body.streams;
        match self.rewrite_body(host, body.copy, asks_usage, body_edit) {
            Ok(Some(length)) => edits.set.push(("content-length", length.to_string())),
            Ok(None) => {}
            Err(HeaderRefused) => {
                host.increment(Metric::HeaderRewriteFailed);
                return self.reply_holding(host, &LocalReply::internal_error(), Some(held));
            }
        }
        host.increment(Metric::Allowed);
        let requester = Requester {
            model: Some(model),
            deployment: routed.as_ref().map(|r| r.route.clone()),
            ..requester
        };
        let path = request.upstream_path.as_deref();
        self.release_metered(host, &edits, path, requester, body.bytes, held)
    }

    fn model_refused(&mut self, host: &impl Host, denied: &ModelDenied, held: Held) -> Verdict {
        host.increment(Metric::DeniedModel);
        self.reply_holding(host, &LocalReply::model_denied(denied), Some(held))
    }

    /// The body as it goes upstream (`copy`: as read in this callback, else read again):
    /// the key's alias resolved (`model`: the body's model and what it resolved to), and,
    /// when `streamed_usage_route` (a stream on the completions routes), the stream asked
    /// for its usage. The new length when the body changed.
    fn rewrite_body(
        &self,
        host: &impl Host,
        copy: Option<Vec<u8>>,
        streamed_usage_route: bool,
        model: Option<(&RequestedModel, &str)>,
    ) -> Result<Option<usize>, HeaderRefused> {
        let metering = &self.plugin.config.metering;
        let ask_usage = streamed_usage_route && metering.enabled && metering.include_usage;
        let aliased = model.is_some_and(|(requested, model)| model != requested.name);
        if !aliased && !ask_usage {
            return Ok(None);
        }
        let Some(mut body) = copy.or_else(|| host.request_body()) else {
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
}

/// The OpenAI completions routes (and Azure's), whose streams report usage only when asked.
pub(super) fn asks_for_usage(source: &ModelSource, path: &str) -> bool {
    let completions = |p: &str| matches!(p, "/chat/completions" | "/completions");
    let path = route(path);
    match source {
        ModelSource::Body => completions(path) || path.strip_prefix("/v1").is_some_and(completions),
        ModelSource::Path(path_model) => completions(path_model.operation()),
        ModelSource::None => false,
    }
}
