//! Which of the filter's three behaviours a request path gets.

use crate::config::Config;
use livegate_contract::KeyHash;

/// What the filter does with a request, decided from its path alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Answered inside the VM: no upstream, no dispatch, no shared state.
    Liveness,
    /// Sent on to the control plane untouched: it checks the master key itself.
    Passthrough,
    /// Needs an API key and an allow decision before it reaches the upstream.
    Protected,
}

/// The path-matching part of the configuration, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Routes<'a> {
    liveness_paths: &'a [String],
    passthrough_prefixes: &'a [String],
    model_free_paths: &'a [String],
}

impl<'a> Routes<'a> {
    pub fn new(config: &'a Config) -> Self {
        Routes {
            liveness_paths: &config.liveness_paths,
            passthrough_prefixes: &config.passthrough_prefixes,
            model_free_paths: &config.model_free_paths,
        }
    }

    /// Whether a protected route that names no model is open to a restricted key.
    pub fn model_free(&self, path: &str) -> bool {
        self.model_free_paths.iter().any(|p| passes(p, path))
    }

    /// Routes a `:path` header value; the query string and fragment never count.
    pub fn route(&self, raw_path: &str) -> Route {
        let path = path_only(raw_path);
        if self.liveness_paths.iter().any(|p| p == path) {
            Route::Liveness
        } else if self.passthrough_prefixes.iter().any(|p| passes(p, path)) {
            Route::Passthrough
        } else {
            Route::Protected
        }
    }
}

/// An entry ending in `/` is a prefix; any other entry must be the whole path. So
/// `/health/readiness` cannot be stretched into `/health/readiness/x` or
/// `/health/readinessx`, which the route table (exact match there) sends upstream:
/// skipping authentication for them would open the upstream.
fn passes(entry: &str, path: &str) -> bool {
    if entry.ends_with('/') {
        path.starts_with(entry)
    } else {
        path == entry
    }
}

/// The path without its query string or fragment.
pub fn path_only(raw: &str) -> &str {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    raw.get(..end).unwrap_or(raw)
}

/// `/key/{key}/regenerate` (LiteLLM's rotation route) with a raw key in the path: the
/// same path with the key's hash in its place, which the control plane accepts as well.
/// Envoy's access log writes paths, and the raw key must reach no log.
pub fn hashed_key_path(raw_path: &str) -> Option<String> {
    let path = path_only(raw_path);
    let key = path.strip_prefix("/key/")?.strip_suffix("/regenerate")?;
    if key.is_empty() || key.contains('/') || KeyHash::parse_hex(key).is_ok() {
        return None;
    }
    let query = raw_path.get(path.len()..).unwrap_or_default();
    Some(format!(
        "/key/{}/regenerate{query}",
        KeyHash::of_raw(key).as_str()
    ))
}

/// Liveness answers probes (GET, and HEAD which is GET without a body); other methods get 405.
pub fn is_probe_method(method: &str) -> bool {
    method == "GET" || method == "HEAD"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_key_in_the_rotation_path_is_replaced_by_its_hash() {
        let hash = KeyHash::of_raw("sk-abc").as_str().to_owned();
        assert_eq!(
            hashed_key_path("/key/sk-abc/regenerate?x=1").as_deref(),
            Some(format!("/key/{hash}/regenerate?x=1").as_str())
        );
        // A hash stays, and other paths are not this route.
        assert_eq!(hashed_key_path(&format!("/key/{hash}/regenerate")), None);
        assert_eq!(hashed_key_path("/key/regenerate"), None);
        assert_eq!(hashed_key_path("/key/a/b/regenerate"), None);
        assert_eq!(hashed_key_path("/key//regenerate"), None);
        assert_eq!(hashed_key_path("/key/sk-abc/info"), None);
    }
    use proptest::prelude::*;

    fn route(path: &str) -> Route {
        let config = Config::default();
        Routes::new(&config).route(path)
    }

    #[test]
    fn both_liveness_spellings_are_answered_locally() {
        assert_eq!(route("/health/liveliness"), Route::Liveness);
        assert_eq!(route("/health/liveness"), Route::Liveness);
    }

    #[test]
    fn liveness_ignores_the_query_string() {
        assert_eq!(route("/health/liveliness?probe=k8s"), Route::Liveness);
        assert_eq!(route("/health/liveness#x"), Route::Liveness);
    }

    #[test]
    fn liveness_matches_exactly_not_by_prefix() {
        assert_eq!(route("/health/liveness/extra"), Route::Protected);
        assert_eq!(route("/health/livenessx"), Route::Protected);
        assert_eq!(route("/HEALTH/LIVENESS"), Route::Protected);
    }

    #[test]
    fn admin_and_readiness_paths_pass_through() {
        for path in [
            "/health/readiness",
            "/key/generate",
            "/key/info?key=sk-1",
            "/team/new",
            "/user/new",
            "/spend/logs",
            "/global/spend",
            "/model/info",
            "/v1/model/info?litellm_model_id=livegate_deployment_0",
        ] {
            assert_eq!(route(path), Route::Passthrough, "{path}");
        }
    }

    #[test]
    fn model_info_passes_exactly_and_the_model_list_stays_the_filter_s() {
        for path in ["/v1/models", "/models", "/model/info/x", "/v1/model/infox"] {
            assert_eq!(route(path), Route::Protected, "{path}");
        }
    }

    #[test]
    fn only_the_global_spend_path_passes_under_global() {
        for path in ["/global/spend/logs", "/global/other", "/global/"] {
            assert_eq!(route(path), Route::Protected, "{path}");
        }
    }

    #[test]
    fn an_entry_without_a_trailing_slash_matches_only_the_whole_path() {
        assert_eq!(route("/health/readiness?verbose=1"), Route::Passthrough);
        assert_eq!(route("/health/readiness/"), Route::Protected);
        assert_eq!(route("/health/readiness/../v1/models"), Route::Protected);
        assert_eq!(route("/health/readinessx"), Route::Protected);
    }

    #[test]
    fn a_prefix_without_its_slash_is_protected() {
        assert_eq!(route("/key"), Route::Protected);
        assert_eq!(route("/keys/list"), Route::Protected);
    }

    #[test]
    fn everything_else_is_protected() {
        for path in [
            "/v1/chat/completions",
            "/",
            "",
            "/v1/auth/check",
            "/metrics",
        ] {
            assert_eq!(route(path), Route::Protected, "{path}");
        }
    }

    #[test]
    fn a_query_cannot_smuggle_a_passthrough_prefix() {
        assert_eq!(route("/v1/models?/key/"), Route::Protected);
    }

    #[test]
    fn configured_paths_replace_the_defaults() {
        let config = Config {
            liveness_paths: vec!["/livez".into()],
            passthrough_prefixes: vec![],
            ..Config::default()
        };
        let routes = Routes::new(&config);
        assert_eq!(routes.route("/livez"), Route::Liveness);
        assert_eq!(routes.route("/health/liveness"), Route::Protected);
        assert_eq!(routes.route("/key/generate"), Route::Protected);
    }

    #[test]
    fn probes_may_use_get_or_head_only() {
        assert!(is_probe_method("GET"));
        assert!(is_probe_method("HEAD"));
        assert!(!is_probe_method("POST"));
        assert!(!is_probe_method("get"));
    }

    proptest! {
        #[test]
        fn routing_any_path_never_panics(path in "\\PC*") {
            let _ = route(&path);
        }
    }
}
