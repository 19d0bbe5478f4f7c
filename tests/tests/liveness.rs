//! Liveness is answered by the filter inside Envoy, with nothing else running.

use livegate_tests::envoy::{Endpoint, Envoy, EnvoyConfig};
use livegate_tests::http;
use livegate_tests::process::Scratch;
use livegate_tests::stack::{Stack, StackOptions};

#[test]
fn liveliness_is_answered_by_the_filter_with_no_control_plane_and_no_postgres() {
    let stack = Stack::start(StackOptions::envoy_only()).unwrap();
    assert!(stack.control_plane.is_none() && stack.postgres.is_none());

    for path in ["/health/liveliness", "/health/liveness"] {
        let response = http::get(&stack.url(path), &[]).unwrap();
        assert_eq!(response.status, 200, "{path}: {}", response.body);
        assert_eq!(response.body, "\"I'm alive!\"", "{path}");
        assert_eq!(
            response.header("content-type"),
            Some("application/json"),
            "{path}"
        );
    }
}

#[test]
fn a_query_string_does_not_hide_the_liveness_path() {
    let stack = Stack::start(StackOptions::envoy_only()).unwrap();
    let response = http::get(&stack.url("/health/liveliness?probe=kubelet"), &[]).unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
}

#[test]
fn a_path_outside_liveness_is_not_answered_by_the_filter() {
    // Readiness belongs to the control plane, which is not running: Envoy itself
    // reports the missing upstream, so the filter did not answer.
    let stack = Stack::start(StackOptions::envoy_only()).unwrap();
    let response = http::get(&stack.url("/health/readiness"), &[]).unwrap();
    assert_eq!(response.status, 503, "{}", response.body);
    assert_ne!(response.body, "\"I'm alive!\"");
}

#[test]
fn liveness_paths_come_from_the_plugin_configuration() {
    let options = StackOptions {
        filter_config: r#"{"liveness_paths": ["/livez"]}"#.to_string(),
        ..StackOptions::envoy_only()
    };
    let stack = Stack::start(options).unwrap();
    let response = http::get(&stack.url("/livez"), &[]).unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body, "\"I'm alive!\"");
}

#[test]
fn a_broken_plugin_configuration_makes_envoy_refuse_to_start_and_says_which_field() {
    let scratch = Scratch::new("livegate-bad-config-").unwrap();
    let nowhere = Endpoint::loopback(livegate_tests::ports::free_port().unwrap());
    let mut config = EnvoyConfig::on_free_ports(nowhere.clone(), nowhere).unwrap();
    config.filter_config = r#"{"cache": {"max_entries": "lots"}}"#.to_string();

    let (status, log) = Envoy::start_expecting_exit(config, scratch.path()).unwrap();

    assert!(!status.success(), "Envoy should refuse the plugin:\n{log}");
    assert!(
        log.contains("cache.max_entries"),
        "the log must name the field:\n{log}"
    );
}
