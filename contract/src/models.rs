//! Which models a key may call: its own `models`, its user's, its team's, and its `aliases`. The
//! control plane sends this with every allow; the filter applies it to each request's
//! `model`, so a cached key's model check costs no round trip.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorObject, ErrorType};

/// LiteLLM's spelling of "every model" in a `models` list.
pub const ALL_MODELS: &str = "all-proxy-models";

/// A key's model policy. An empty list allows every model; an entry ending in `*` allows
/// every model it prefixes (`openai/*`); [`ALL_MODELS`] allows everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelAccess {
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub team_models: Vec<String>,
    /// The key's user's `models` (absent on the wire when the user restricts nothing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_models: Vec<String>,
    /// `{"alias": "model"}`: a request naming the alias is sent on with the model.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// The team's `model_aliases`, consulted after the key's own: left out when empty, so
    /// an allow reads the same to a filter that predates them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub team_aliases: BTreeMap<String, String>,
}

/// Why a request's model was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelDenied {
    /// The key's own `models` does not list it.
    Key { model: String, allowed: Vec<String> },
    /// The key's team's `models` does not list it.
    Team { model: String, allowed: Vec<String> },
    /// The key's user's `models` does not list it.
    User { model: String, allowed: Vec<String> },
    /// The key (`team: false`) or its team has a `models` restriction and the route names
    /// no model the gateway can check (files, batches, images…): refused, or the
    /// restriction could be walked around.
    Route {
        path: String,
        team: bool,
        allowed: Vec<String>,
    },
    /// The same for the key's user's restriction.
    UserRoute { path: String, allowed: Vec<String> },
}

impl ModelAccess {
    /// True when any model passes unchanged: the filter need not read the body for it.
    pub fn is_unrestricted(&self) -> bool {
        allows_all(&self.models)
            && allows_all(&self.team_models)
            && allows_all(&self.user_models)
            && self.aliases.is_empty()
            && self.team_aliases.is_empty()
    }

    /// True when the key or its team limits the models it may call: such a key may use
    /// only routes whose model the gateway can check (and routes configured as model-free).
    pub fn is_restricted(&self) -> bool {
        !allows_all(&self.models)
            || !allows_all(&self.team_models)
            || !allows_all(&self.user_models)
    }

    /// Refusal of a route that names no model, for a restricted key; `Ok` otherwise.
    pub fn check_model_free_route(&self, path: &str) -> Result<(), ModelDenied> {
        let (team, allowed) = if !allows_all(&self.models) {
            (false, &self.models)
        } else if !allows_all(&self.team_models) {
            (true, &self.team_models)
        } else if !allows_all(&self.user_models) {
            return Err(ModelDenied::UserRoute {
                path: path.to_owned(),
                allowed: self.user_models.clone(),
            });
        } else {
            return Ok(());
        };
        Err(ModelDenied::Route {
            path: path.to_owned(),
            team,
            allowed: allowed.clone(),
        })
    }

    /// The model the request is sent on with (its alias resolved: the key's first, then
    /// its team's), or why it is refused. Access is checked against the resolved model.
    pub fn check(&self, requested: &str) -> Result<String, ModelDenied> {
        let model = self
            .aliases
            .get(requested)
            .or_else(|| self.team_aliases.get(requested))
            .map_or(requested, String::as_str);
        if !permits(&self.models, model) {
            return Err(ModelDenied::Key {
                model: model.to_owned(),
                allowed: self.models.clone(),
            });
        }
        if !permits(&self.user_models, model) {
            return Err(ModelDenied::User {
                model: model.to_owned(),
                allowed: self.user_models.clone(),
            });
        }
        if !permits(&self.team_models, model) {
            return Err(ModelDenied::Team {
                model: model.to_owned(),
                allowed: self.team_models.clone(),
            });
        }
        Ok(model.to_owned())
    }
}

fn allows_all(list: &[String]) -> bool {
    list.is_empty() || list.iter().any(|m| m == ALL_MODELS || m == "*")
}

fn permits(list: &[String], model: &str) -> bool {
    allows_all(list)
        || list.iter().any(|entry| match entry.strip_suffix('*') {
            Some(prefix) => model.starts_with(prefix),
            None => entry == model,
        })
}

impl ModelDenied {
    pub fn error_type(&self) -> ErrorType {
        match self {
            ModelDenied::Key { .. } | ModelDenied::Route { team: false, .. } => {
                ErrorType::KeyModelAccessDenied
            }
            ModelDenied::Team { .. } | ModelDenied::Route { team: true, .. } => {
                ErrorType::TeamModelAccessDenied
            }
            ModelDenied::User { .. } | ModelDenied::UserRoute { .. } => {
                ErrorType::UserModelAccessDenied
            }
        }
    }

    /// 401 with LiteLLM's type and a message naming the model, as LiteLLM answers it.
    pub fn error(&self) -> ErrorObject {
        let (who, model, allowed) = match self {
            ModelDenied::Key { model, allowed } => ("key", model, allowed),
            ModelDenied::Team { model, allowed } => ("team", model, allowed),
            ModelDenied::User { model, allowed } => ("user", model, allowed),
            ModelDenied::Route {
                path,
                team,
                allowed,
            } => return route_denied(self, if *team { "team" } else { "key" }, path, allowed),
            ModelDenied::UserRoute { path, allowed } => {
                return route_denied(self, "user", path, allowed)
            }
        };
        let message = format!(
            "{who} not allowed to access model. This {who} can only access models={allowed:?}. Tried to access {model}"
        );
        ErrorObject::new(401, self.error_type(), message)
            .with_param("model")
            .with_reason(self.error_type().as_str())
    }
}

/// The refusal of a route that names no model, for a restricted key, team or user.
fn route_denied(denied: &ModelDenied, who: &str, path: &str, allowed: &[String]) -> ErrorObject {
    let message = format!(
        "{who} not allowed to access route. This {who} can only access models={allowed:?}. Tried to access {path}, a route that names no model the gateway can check"
    );
    ErrorObject::new(401, denied.error_type(), message)
        .with_param("model")
        .with_reason("model_free_route_denied")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(models: &[&str], team: &[&str], aliases: &[(&str, &str)]) -> ModelAccess {
        ModelAccess {
            models: models.iter().map(|m| m.to_string()).collect(),
            team_models: team.iter().map(|m| m.to_string()).collect(),
            user_models: vec![],
            aliases: aliases
                .iter()
                .map(|(a, m)| (a.to_string(), m.to_string()))
                .collect(),
            team_aliases: Default::default(),
        }
    }

    #[test]
    fn empty_lists_allow_every_model() {
        let a = access(&[], &[], &[]);
        assert!(a.is_unrestricted());
        assert_eq!(a.check("claude-3"), Ok("claude-3".into()));
        assert!(access(&["all-proxy-models"], &[], &[]).is_unrestricted());
    }

    #[test]
    fn a_listed_model_passes_and_another_is_refused_by_the_key() {
        let a = access(&["gpt-4o"], &[], &[]);
        assert!(!a.is_unrestricted());
        assert_eq!(a.check("gpt-4o"), Ok("gpt-4o".into()));
        let denied = a.check("claude-3").unwrap_err();
        assert_eq!(denied.error_type(), ErrorType::KeyModelAccessDenied);
        let e = denied.error();
        assert_eq!(e.code, "401");
        assert!(e.message.contains("claude-3"), "{}", e.message);
        assert!(e.message.contains("gpt-4o"), "{}", e.message);
    }

    #[test]
    fn the_team_list_applies_too() {
        let a = access(&[], &["gpt-4o"], &[]);
        assert!(matches!(a.check("claude-3"), Err(ModelDenied::Team { .. })));
        let both = access(&["gpt-4o", "claude-3"], &["gpt-4o"], &[]);
        assert_eq!(both.check("gpt-4o"), Ok("gpt-4o".into()));
        assert_eq!(
            both.check("claude-3").unwrap_err().error_type(),
            ErrorType::TeamModelAccessDenied
        );
    }

    #[test]
    fn a_restricted_key_or_team_is_refused_a_route_without_a_model() {
        assert!(!access(&[], &[], &[("fast", "gpt-4o")]).is_restricted());
        assert_eq!(
            access(&[], &[], &[]).check_model_free_route("/v1/files"),
            Ok(())
        );
        assert_eq!(
            access(&["all-proxy-models"], &[], &[]).check_model_free_route("/v1/files"),
            Ok(())
        );
        let key = access(&["gpt-4o"], &[], &[]);
        assert!(key.is_restricted());
        let denied = key.check_model_free_route("/v1/files").unwrap_err();
        assert_eq!(denied.error_type(), ErrorType::KeyModelAccessDenied);
        let e = denied.error();
        assert_eq!(e.code, "401");
        assert!(e.message.contains("/v1/files"), "{}", e.message);
        let team = access(&[], &["gpt-4o"], &[]).check_model_free_route("/v1/batches");
        assert_eq!(
            team.unwrap_err().error_type(),
            ErrorType::TeamModelAccessDenied
        );
    }

    /// A user's list restricts each of its keys, with LiteLLM's `user_model_access_denied`;
    /// on a route without a model too.
    #[test]
    fn the_user_list_applies_too() {
        let a = ModelAccess {
            user_models: vec!["gpt-4o".into()],
            ..access(&["gpt-4o", "o1"], &[], &[])
        };
        assert!(a.is_restricted() && !a.is_unrestricted());
        assert_eq!(a.check("gpt-4o"), Ok("gpt-4o".into()));
        let denied = a.check("o1").unwrap_err();
        assert_eq!(denied.error_type(), ErrorType::UserModelAccessDenied);
        let e = denied.error();
        assert!(
            e.message.starts_with("user not allowed to access model"),
            "{}",
            e.message
        );
        assert_eq!(e.reason.as_deref(), Some("user_model_access_denied"));
        let open = ModelAccess {
            user_models: vec!["gpt-4o".into()],
            ..ModelAccess::default()
        };
        let route = open.check_model_free_route("/v1/files").unwrap_err();
        assert_eq!(route.error_type(), ErrorType::UserModelAccessDenied);
        assert!(route
            .error()
            .message
            .starts_with("user not allowed to access route"));
    }

    #[test]
    fn wildcards_allow_what_they_prefix() {
        let a = access(&["openai/*"], &[], &[]);
        assert_eq!(a.check("openai/gpt-4o"), Ok("openai/gpt-4o".into()));
        assert!(a.check("anthropic/claude").is_err());
    }

    #[test]
    fn aliases_resolve_before_access_is_checked() {
        let a = access(&["gpt-4o"], &[], &[("fast", "gpt-4o"), ("smart", "o1")]);
        assert!(!a.is_unrestricted());
        assert_eq!(a.check("fast"), Ok("gpt-4o".into()));
        // An alias cannot smuggle in a model the key may not call.
        assert!(matches!(
            a.check("smart"),
            Err(ModelDenied::Key { ref model, .. }) if model == "o1"
        ));
    }

    #[test]
    fn a_keys_alias_wins_over_its_teams_and_both_resolve_before_access() {
        let mut a = access(
            &["gpt-4o", "gpt-4o-mini"],
            &["gpt-4o*"],
            &[("fast", "gpt-4o-mini")],
        );
        a.team_aliases = [("fast", "gpt-4o"), ("smart", "gpt-4o"), ("old", "gpt-3.5")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(a.check("fast"), Ok("gpt-4o-mini".to_owned()));
        assert_eq!(a.check("smart"), Ok("gpt-4o".to_owned()));
        assert!(
            matches!(a.check("old"), Err(ModelDenied::Key { model, .. }) if model == "gpt-3.5")
        );
        assert!(!a.is_unrestricted());
        let only_team = ModelAccess {
            team_aliases: a.team_aliases.clone(),
            ..ModelAccess::default()
        };
        assert!(
            !only_team.is_unrestricted(),
            "the body must be read to resolve an alias"
        );
    }
}
