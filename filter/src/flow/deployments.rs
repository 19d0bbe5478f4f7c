//! An admitted request and the model list: `GET /v1/models` answered from it, and a model
//! route's request sent to one of its model's deployments with that provider's credential.

use super::{Request, RequestFlow};
use crate::attempt::CLIENT_PATH_HEADER;
use crate::host::{Host, RequestHeaders};
use crate::model_body::ModelSource;
use crate::providers::{
    is_models_path, model_list_body, outbound, pick, Unroutable, ANTHROPIC_VERSION_HEADER,
    AZURE_KEY_HEADER,
};
use crate::reply::LocalReply;
use crate::upstream_headers::HeaderEdits;
use livegate_contract::ModelAccess;

/// Where a routed request goes: its `:path`, and the model its body names there.
#[derive(Debug)]
pub(super) struct Routed {
    pub path: String,
    pub model: String,
    /// The deployment's route (its first try's, with a chain).
    pub route: String,
}

impl RequestFlow {
    /// A `GET` of the model list's models, with a model list to answer it from.
    pub(super) fn answers_models(&self, headers: &RequestHeaders, request: &Request) -> bool {
        !self.plugin.config.deployments.is_empty()
            && headers.get(":method").is_some_and(|m| m == b"GET")
            && is_models_path(&request.normal.path)
    }

    /// The models of the list the key (and its team) may call, each once.
    pub(super) fn models_reply(&self, access: &ModelAccess) -> LocalReply {
        let body = model_list_body(&self.plugin.config.deployments, |name| {
            access.check(name).is_ok()
        });
        LocalReply::ok_json(body)
    }

    /// The deployment for `model` (`None`: no model list, the one upstream as before), with
    /// the route's and the provider's headers added to `edits` and the client's credential
    /// headers of every provider shape removed from it.
    pub(super) fn route_to_deployment(
        &self,
        host: &impl Host,
        request: &Request,
        model: &str,
        edits: &mut HeaderEdits,
    ) -> Result<Option<Routed>, Unroutable> {
        let config = &self.plugin.config;
        if config.deployments.is_empty() {
            return Ok(None);
        }
        if let ModelSource::Path(_) = request.source {
            return Err(Unroutable::PathModel {
                model: model.to_owned(),
                route: request.normal.path.clone(),
            });
        }
        let deployment = pick(&config.deployments, model, self.plugin.next_turn())
            .ok_or_else(|| Unroutable::UnknownModel(model.to_owned()))?;
        let client_version = host.request_header(ANTHROPIC_VERSION_HEADER).is_some();
        let out = outbound(
            deployment,
            &request.normal.path,
            &request.normal.rest,
            &config.provider_keys,
            client_version,
        )?;
        // The configured upstream credential is the one upstream's, never a provider's.
        edits.set.retain(|(name, _)| *name != "authorization");
        if host.request_header(AZURE_KEY_HEADER).is_some() {
            edits.remove.push(AZURE_KEY_HEADER.to_owned());
        }
        edits.set.extend(out.set);
        // Each try of a chain shapes the request again from the client's path
        // (`crate::attempt`); the route of a deployment without a chain removes it.
        edits.set.push((
            CLIENT_PATH_HEADER,
            format!("{}{}", request.normal.path, request.normal.rest),
        ));
        Ok(Some(Routed {
            path: out.path,
            model: deployment.model.clone(),
            route: deployment.route.clone(),
        }))
    }
}
