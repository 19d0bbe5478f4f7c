//! Policy on every spelling of a path: the filter decides on the normal path, Azure paths
//! carry their model, and a route without a readable model refuses a restricted key.

use super::mock::*;
use super::{RequestFlow, Verdict};
use crate::config::Config;
use crate::metrics::Metric;
use livegate_contract::ModelAccess;

const NOW: u64 = 1_000_000;

fn only(models: &[&str]) -> ModelAccess {
    ModelAccess {
        models: models.iter().map(|m| m.to_string()).collect(),
        ..ModelAccess::default()
    }
}

/// A keyed request on `path` with `body`, answered with an allow carrying `access`.
fn run(path: &str, body: &str, access: ModelAccess) -> (MockHost, Verdict) {
    run_with(Config::default(), path, body, access)
}

fn run_with(config: Config, path: &str, body: &str, access: ModelAccess) -> (MockHost, Verdict) {
    let host = keyed(path);
    *host.body.borrow_mut() = body.as_bytes().to_vec();
    let mut flow = RequestFlow::new(plugin(config));
    let first = flow.on_request_headers(&host, Some(NOW));
    if first == Verdict::Continue || !host.replies.borrow().is_empty() {
        return (host, first);
    }
    flow.on_request_body(&host, true);
    let verdict = respond(&mut flow, &host, "200", &allow_body_with(access), NOW);
    (host, verdict)
}

fn error_type(host: &MockHost) -> String {
    let reply = host.last_reply().unwrap();
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    body["error"]["type"].as_str().unwrap().to_string()
}

#[test]
fn every_spelling_of_the_chat_route_is_the_chat_route() {
    for path in [
        "/v1/chat%2Fcompletions",
        "/v1/chat%2fcompletions",
        "//v1/chat/completions",
        "/v1/./chat/completions",
        "/v1/x/../chat/completions",
        "/v1%2Fchat%2Fcompletions",
        "/v1/ch%61t/completions",
        "/v1\\chat/completions",
    ] {
        let (host, verdict) = run(path, r#"{"model": "o1"}"#, only(&["gpt-4o"]));
        assert_eq!(verdict, Verdict::Stop, "{path}");
        assert_eq!(host.last_reply().unwrap().status, 401, "{path}");
        assert_eq!(error_type(&host), "key_model_access_denied", "{path}");

        let body = r#"{"model": "gpt-4o", "stream": true}"#;
        let (host, verdict) = run(path, body, only(&["gpt-4o"]));
        assert_eq!(verdict, Verdict::Continue, "{path}");
        // The upstream gets the path the filter decided on, the stream asked for usage.
        assert_eq!(
            host.header(":path").as_deref(),
            Some("/v1/chat/completions"),
            "{path}"
        );
        assert_eq!(host.count(Metric::IncludeUsageAdded), 1, "{path}");
    }
}

#[test]
fn a_normal_path_is_left_as_sent_with_its_query() {
    let (host, verdict) = run("/v1/chat/completions?x=%2F", r#"{"model": "a"}"#, only(&[]));
    assert_eq!(verdict, Verdict::Continue);
    assert_eq!(
        host.header(":path").as_deref(),
        Some("/v1/chat/completions?x=%2F")
    );
    let (host, _) = run("/v1//chat/completions?x=1", r#"{"model": "a"}"#, only(&[]));
    assert_eq!(
        host.header(":path").as_deref(),
        Some("/v1/chat/completions?x=1")
    );
}

#[test]
fn a_path_that_cannot_be_normalised_is_a_400_before_any_check() {
    for path in ["/v1/%zz", "/v1/chat%00/completions", "v1/chat/completions"] {
        let (host, verdict) = run(path, r#"{"model": "a"}"#, only(&[]));
        assert_eq!(verdict, Verdict::Stop, "{path}");
        assert_eq!(host.last_reply().unwrap().status, 400, "{path}");
        assert_eq!(host.count(Metric::DeniedBadPath), 1, "{path}");
        assert!(host.dispatched.borrow().is_empty(), "{path}");
    }
}

#[test]
fn a_keyless_path_must_be_sent_in_normal_form() {
    // A router that does not normalise may send these elsewhere than the control plane:
    // never let through unchecked.
    for path in [
        "/key//generate",
        "/team/./new",
        "/key/%67enerate",
        "/key\\generate",
    ] {
        let host = MockHost::request("POST", path, &[]);
        let mut flow = RequestFlow::new(plugin(Config::default()));
        assert_eq!(
            flow.on_request_headers(&host, Some(NOW)),
            Verdict::Stop,
            "{path}"
        );
        assert_eq!(host.last_reply().unwrap().status, 400, "{path}");
    }
    // A path that leaves the prefix is the protected route it names, key and policy.
    for path in [
        "/key/../v1/chat/completions",
        "/key/..%2Fv1/chat/completions",
    ] {
        let (host, verdict) = run(path, r#"{"model": "o1"}"#, only(&["a"]));
        assert_eq!(verdict, Verdict::Stop, "{path}");
        assert_eq!(error_type(&host), "key_model_access_denied", "{path}");
    }
    let host = MockHost::request("POST", "/key/generate", &[]);
    let mut flow = RequestFlow::new(plugin(Config::default()));
    assert_eq!(flow.on_request_headers(&host, Some(NOW)), Verdict::Continue);
}

#[test]
fn an_azure_path_is_held_to_the_key_policy() {
    let azure = "/openai/deployments/o1/chat/completions?api-version=2024-06-01";
    let (host, verdict) = run(azure, "{}", only(&["gpt-4o"]));
    assert_eq!(verdict, Verdict::Stop);
    assert_eq!(error_type(&host), "key_model_access_denied");
    assert!(host.last_reply().unwrap().body.contains("o1"));

    let allowed = "/openai/deployments/gpt-4o/chat/completions";
    let (host, verdict) = run(allowed, r#"{"messages": []}"#, only(&["gpt-4o"]));
    assert_eq!(verdict, Verdict::Continue);
    // The path's model is the record's model; a streamed request is asked for usage.
    let (_, verdict) = run(allowed, "", only(&["gpt-4o"]));
    assert_eq!(
        verdict,
        Verdict::Continue,
        "no body is fine: the path names the model"
    );
    assert_eq!(host.count(Metric::DeniedModel), 0);

    // A body naming a model the key may not call is refused on an allowed path too.
    let (host, verdict) = run(allowed, r#"{"model": "o1"}"#, only(&["gpt-4o"]));
    assert_eq!(verdict, Verdict::Stop);
    assert_eq!(host.last_reply().unwrap().status, 401);

    // Escaped and engines spellings.
    for path in [
        "/openai/deployments/o1%2Fchat/completions",
        "/openai//deployments/o1/embeddings",
        "/engines/o1/completions",
    ] {
        let (host, verdict) = run(path, "{}", only(&["gpt-4o"]));
        assert_eq!(verdict, Verdict::Stop, "{path}");
        assert_eq!(host.last_reply().unwrap().status, 401, "{path}");
    }
}

#[test]
fn an_alias_in_an_azure_path_reaches_the_upstream_as_its_model() {
    let access = ModelAccess {
        models: vec!["gpt-4o".into()],
        aliases: [("fast".to_string(), "gpt-4o".to_string())].into(),
        ..ModelAccess::default()
    };
    let (host, verdict) = run(
        "/openai/deployments/fast/chat/completions?api-version=1",
        r#"{"model":"fast"}"#,
        access,
    );
    assert_eq!(verdict, Verdict::Continue);
    assert_eq!(
        host.header(":path").as_deref(),
        Some("/openai/deployments/gpt-4o/chat/completions?api-version=1")
    );
    let body = String::from_utf8(host.body.borrow().clone()).unwrap();
    assert!(body.contains(r#""model":"gpt-4o""#), "{body}");
}

#[test]
fn routes_without_a_model_refuse_a_restricted_key_only() {
    for path in [
        "/v1/files",
        "/v1/batches",
        "/v1/images/generations",
        "/v1/audio/speech",
        "/v1/assistants",
        "/v1/realtime",
        "/v1/fine_tuning/jobs",
        "/openai/deployments/gpt-4o/audio/speech",
        "/v1/models/gpt-4o",
    ] {
        let (host, verdict) = run(path, "{}", only(&["gpt-4o"]));
        assert_eq!(verdict, Verdict::Stop, "{path}");
        assert_eq!(host.last_reply().unwrap().status, 401, "{path}");
        assert_eq!(error_type(&host), "key_model_access_denied", "{path}");
        let team = ModelAccess {
            team_models: vec!["gpt-4o".into()],
            ..ModelAccess::default()
        };
        let (host, _) = run(path, "{}", team);
        assert_eq!(error_type(&host), "team_model_access_denied", "{path}");

        let (host, verdict) = run(path, "{}", only(&[]));
        assert_eq!(verdict, Verdict::Continue, "{path}");
        assert!(host.replies.borrow().is_empty(), "{path}");
    }
    // Listing the models is model-free by default.
    let (_, verdict) = run("/v1/models", "", only(&["gpt-4o"]));
    assert_eq!(verdict, Verdict::Continue);
}

#[test]
fn a_configured_model_free_route_admits_a_restricted_key() {
    let config = Config {
        model_free_paths: vec!["/v1/files/".into(), "/v1/batches".into()],
        ..Config::default()
    };
    for path in ["/v1/files/abc", "/v1/batches"] {
        let (_, verdict) = run_with(config.clone(), path, "{}", only(&["gpt-4o"]));
        assert_eq!(verdict, Verdict::Continue, "{path}");
    }
    for path in ["/v1/files", "/v1/batches/x", "/v1/models"] {
        let (host, verdict) = run_with(config.clone(), path, "{}", only(&["gpt-4o"]));
        assert_eq!(verdict, Verdict::Stop, "{path}");
        assert_eq!(host.last_reply().unwrap().status, 401, "{path}");
    }
}
