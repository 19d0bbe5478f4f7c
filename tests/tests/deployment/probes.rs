//! Probes.

use std::time::Duration;

use livegate_filter::config::Config as FilterConfig;
use livegate_tests::control_plane::ControlPlane;
use livegate_tests::http;

use super::envoy_config;
use super::support::*;

#[test]
fn envoys_liveness_probe_is_a_path_the_filter_answers_itself_on_the_probe_listener() {
    let probe = probe("livegate-envoy", "livenessProbe");
    let liveness_paths = effective_filter_config(&kubernetes_envoy()).liveness_paths;
    assert!(
        liveness_paths.contains(&probe.path),
        "{} is not one of the filter's liveness paths {liveness_paths:?}",
        probe.path
    );
    assert_eq!(probe.port, "probe");
    assert_eq!(
        container_port("livegate-envoy", "probe"),
        envoy_config::PROBE_PORT
    );
    assert!(
        FilterConfig::default().liveness_paths.contains(&probe.path),
        "the probe relies on a non-default liveness path"
    );
    // The probe listener runs the filter, not disabled on the probe's path.
    let probes = listener(&kubernetes_envoy(), "livegate_probe");
    let filters = seq(&probes["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]);
    assert!(
        filters
            .iter()
            .any(|f| f["name"].as_str() == Some("envoy.filters.http.wasm")),
        "the probe listener has no livegate filter"
    );
    let route = listener_routes(&probes)
        .into_iter()
        .find(|r| r["match"]["path"].as_str() == Some(probe.path.as_str()))
        .unwrap_or_else(|| panic!("the probe listener has no route for {}", probe.path));
    assert!(
        route["typed_per_filter_config"]["envoy.filters.http.wasm"].is_null(),
        "the filter is disabled on {}",
        probe.path
    );
    // The issue asks that the manifest say so, where an operator reads the probe.
    let text = read("deploy/kubernetes/envoy-deployment.yaml");
    let comment = text
        .split("livenessProbe:")
        .next()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        comment.contains("liveness probe is answered by the livegate filter"),
        "no comment above livenessProbe says the filter answers it"
    );
}

#[test]
fn envoys_readiness_probe_is_answered_by_envoy_alone_never_by_the_control_plane() {
    let probe = probe("livegate-envoy", "readinessProbe");
    assert_eq!(probe.port, "probe");
    assert_ne!(
        probe.path, "/health/readiness",
        "the control plane's readiness"
    );
    for envoy in [compose_envoy(), kubernetes_envoy()] {
        let routes = listener_routes(&listener(&envoy, "livegate_probe"));
        let route = routes
            .iter()
            .find(|r| r["match"]["path"].as_str() == Some(probe.path.as_str()))
            .unwrap_or_else(|| panic!("the probe listener has no route for {}", probe.path));
        assert_eq!(route["direct_response"]["status"].as_u64(), Some(200));
        // Nothing on the probe listener leads to a cluster: no probe can depend on one.
        assert!(
            routes.iter().all(|r| r["route"].is_null()),
            "the probe listener routes to a cluster: {routes:?}"
        );
    }
}

#[test]
fn the_probe_listener_is_outside_the_connection_limit_and_the_gateways_is_not() {
    for envoy in [compose_envoy(), kubernetes_envoy()] {
        let monitors = seq(&envoy["overload_manager"]["resource_monitors"]);
        let limit = monitors
            .iter()
            .find(|m| {
                m["name"].as_str()
                    == Some("envoy.resource_monitors.global_downstream_max_connections")
            })
            .expect("a global connection limit");
        assert!(limit["typed_config"]["max_active_downstream_connections"].as_u64() > Some(0));
        assert_eq!(
            listener(&envoy, "livegate_probe")["ignore_global_conn_limit"].as_bool(),
            Some(true)
        );
        assert!(listener(&envoy, "livegate")["ignore_global_conn_limit"].is_null());
        let manager =
            &listener(&envoy, "livegate")["filter_chains"][0]["filters"][0]["typed_config"];
        assert!(
            manager["request_headers_timeout"].is_string(),
            "{manager:?}"
        );
        assert_eq!(
            manager["common_http_protocol_options"]["headers_with_underscores_action"].as_str(),
            Some("DROP_HEADER")
        );
    }
}

#[test]
fn the_control_planes_probes_answer_200_while_its_database_is_away() {
    // Nothing listens on port 1: the engine never connects, so the answers come from memory.
    let control_plane =
        ControlPlane::builder("postgres://livegate@127.0.0.1:1/livegate?connect_timeout=1")
            .start()
            .unwrap();
    for kind in ["livenessProbe", "readinessProbe"] {
        let probe = probe("livegate-control-plane", kind);
        let url = format!("{}{}", control_plane.base_url(), probe.path);
        let answer = http::get_within(&url, Duration::from_secs(5)).unwrap();
        assert_eq!(
            answer.status, 200,
            "the control plane's {kind} ({}) fails while the database is away",
            probe.path
        );
    }
    for service in ["control-plane", "envoy"] {
        let test = compose()["services"][service]["healthcheck"]["test"].clone();
        let words = strings(&test);
        assert_eq!(
            words.len(),
            seq(&test).len(),
            "{service}: a healthcheck word is not a string"
        );
        assert!(
            words.join(" ").contains("/health/liveliness"),
            "{service}: {words:?}"
        );
    }
}
