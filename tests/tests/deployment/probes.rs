//! Probes.

use std::time::Duration;

use livegate_filter::config::Config as FilterConfig;
use livegate_tests::control_plane::ControlPlane;
use livegate_tests::http;

use super::support::*;

#[test]
fn envoys_liveness_probe_is_a_path_the_filter_answers_itself() {
    let probe = probe("livegate-envoy", "livenessProbe");
    let liveness_paths = effective_filter_config(&kubernetes_envoy()).liveness_paths;
    assert!(
        liveness_paths.contains(&probe.path),
        "{} is not one of the filter's liveness paths {liveness_paths:?}",
        probe.path
    );
    assert_eq!(probe.port, "http");
    assert!(
        FilterConfig::default().liveness_paths.contains(&probe.path),
        "the probe relies on a non-default liveness path"
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
fn envoys_readiness_probe_is_routed_to_the_control_plane_and_passed_through_by_the_filter() {
    let probe = probe("livegate-envoy", "readinessProbe");
    let routes = &seq(
        &compose_envoy()["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["route_config"]["virtual_hosts"][0]["routes"],
    )
    .to_vec();
    let routed = routes.iter().any(|route| {
        route["match"]["path"].as_str() == Some(probe.path.as_str())
            && route["route"]["cluster"].as_str() == Some("livegate_control_plane")
    });
    assert!(
        routed,
        "the template routes no exact {} to the control plane",
        probe.path
    );
    let filter = effective_filter_config(&kubernetes_envoy());
    assert!(
        filter
            .passthrough_prefixes
            .iter()
            .any(|p| probe.path.starts_with(p.as_str())),
        "the filter would demand a key on {}",
        probe.path
    );
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
