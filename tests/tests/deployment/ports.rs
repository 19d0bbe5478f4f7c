//! Ports and addresses: the documented contracts and the defaults of `cargo xtask up`.

use super::envoy_config;
use super::support::*;

#[test]
fn the_listener_port_is_the_documented_one_in_compose_kubernetes_and_xtask_up() {
    let documented = documented_port("Envoy listener");
    assert_eq!(up_default("port"), documented);
    for envoy in [compose_envoy(), kubernetes_envoy()] {
        let listener = &envoy["static_resources"]["listeners"][0]["address"]["socket_address"];
        assert_eq!(listener["port_value"].as_u64(), Some(documented.into()));
        assert_eq!(listener["address"].as_str(), Some("0.0.0.0"));
    }
    let services = compose();
    let published = seq(&services["services"]["envoy"]["ports"]);
    assert_eq!(published.len(), 1, "compose publishes one port of Envoy");
    let mapping = published[0].as_str().expect("a port mapping string");
    assert!(
        mapping.ends_with(&format!(":{documented}")),
        "compose publishes {mapping}, not the listener {documented}"
    );
    assert_eq!(container_port("livegate-envoy", "http"), documented);
    assert_eq!(service_port("livegate-envoy"), documented);
}

#[test]
fn the_control_plane_port_is_the_documented_one_everywhere_it_is_named() {
    let documented = documented_port("control plane");
    assert_eq!(up_default("control_plane_port"), documented);
    let compose_listen = compose()["services"]["control-plane"]["environment"]["LIVEGATE_LISTEN"]
        .as_str()
        .map(str::to_string);
    assert_eq!(compose_listen, Some(format!("0.0.0.0:{documented}")));
    assert_eq!(
        kubernetes_env("livegate-control-plane", "LIVEGATE_LISTEN"),
        format!("0.0.0.0:{documented}")
    );
    assert_eq!(container_port("livegate-control-plane", "http"), documented);
    assert_eq!(service_port("livegate-control-plane"), documented);
    let dockerfile_listen = format!("LIVEGATE_LISTEN=0.0.0.0:{documented}");
    assert!(
        stage(&dockerfile(), "control-plane")
            .iter()
            .any(|line| line.contains(&dockerfile_listen)),
        "the control-plane image does not set {dockerfile_listen}"
    );
    assert_eq!(
        cluster_endpoint(&compose_envoy(), "livegate_control_plane"),
        ("control-plane".to_string(), documented)
    );
    assert_eq!(
        cluster_endpoint(&kubernetes_envoy(), "livegate_control_plane"),
        ("livegate-control-plane".to_string(), documented)
    );
}

#[test]
fn the_demo_upstream_port_is_the_documented_one_and_envoy_resolves_its_service_names() {
    let documented = documented_port("demo upstream");
    assert_eq!(up_default("demo_upstream_port"), documented);
    let listen = compose()["services"]["upstream"]["environment"]["LIVEGATE_DEMO_UPSTREAM_LISTEN"]
        .as_str()
        .map(str::to_string);
    assert_eq!(listen, Some(format!("0.0.0.0:{documented}")));
    assert_eq!(
        cluster_endpoint(&compose_envoy(), "livegate_upstream"),
        ("upstream".to_string(), documented)
    );
    assert_eq!(
        cluster_endpoint(&kubernetes_envoy(), "livegate_upstream"),
        ("livegate-upstream".to_string(), documented)
    );
    assert_eq!(service_port("livegate-upstream"), documented);
    assert_eq!(container_port("livegate-demo-upstream", "http"), documented);
}

#[test]
fn envoy_admin_is_on_the_documented_port_and_never_published() {
    let documented = documented_port("Envoy admin");
    assert_eq!(up_default("admin_port"), documented);
    let compose_admin = &compose_envoy()["admin"]["address"]["socket_address"];
    let kubernetes_admin = &kubernetes_envoy()["admin"]["address"]["socket_address"];
    assert_eq!(
        compose_admin["port_value"].as_u64(),
        Some(documented.into())
    );
    assert_eq!(
        kubernetes_admin["port_value"].as_u64(),
        Some(documented.into())
    );
    // Loopback inside the container: any container of the compose network could call
    // `/quitquitquit` otherwise.
    assert_eq!(compose_admin["address"].as_str(), Some("127.0.0.1"));
    for (name, service) in mapping(&compose()["services"]) {
        let ports = strings(&service["ports"]);
        assert!(
            ports.iter().all(|p| !p.contains(&documented.to_string())),
            "compose publishes admin through {name:?}: {ports:?}"
        );
        assert!(
            service["network_mode"].is_null(),
            "{name:?} uses network_mode"
        );
    }
    // A pod's address is reachable from the whole cluster: loopback, and no port for it.
    assert_eq!(kubernetes_admin["address"].as_str(), Some("127.0.0.1"));
    for document in kubernetes() {
        let text = serde_norway::to_string(&document).unwrap();
        assert!(
            !text.contains(&format!("Port: {documented}"))
                && !text.contains(&format!("port: {documented}")),
            "a manifest exposes the admin port:\n{text}"
        );
    }
}

#[test]
fn compose_publishes_nothing_but_envoys_listener() {
    let services = compose();
    for (name, service) in mapping(&services["services"]) {
        let published = seq(&service["ports"]).len();
        if name.as_str() == Some("envoy") {
            assert_eq!(published, 1);
        } else {
            assert_eq!(published, 0, "{name:?} publishes a port");
        }
    }
}

#[test]
fn the_probe_port_is_the_documented_one_in_compose_kubernetes_and_xtask_up() {
    let documented = documented_port("Envoy probe listener");
    assert_eq!(documented, envoy_config::PROBE_PORT);
    assert_eq!(up_default("probe_port"), documented);
    for envoy in [compose_envoy(), kubernetes_envoy()] {
        let probes = &listener(&envoy, "livegate_probe")["address"]["socket_address"];
        assert_eq!(probes["port_value"].as_u64(), Some(documented.into()));
        // The kubelet reaches the pod's address.
        assert_eq!(probes["address"].as_str(), Some("0.0.0.0"));
    }
    assert_eq!(container_port("livegate-envoy", "probe"), documented);
    // The Service carries clients only; compose's health check uses the probe port.
    let service_ports: Vec<u64> = seq(&manifest("Service", "livegate-envoy")["spec"]["ports"])
        .iter()
        .filter_map(|p| p["port"].as_u64())
        .collect();
    assert!(
        !service_ports.contains(&documented.into()),
        "{service_ports:?}"
    );
    let check = strings(&compose()["services"]["envoy"]["healthcheck"]["test"]).join(" ");
    assert!(
        check.contains(&format!("/dev/tcp/127.0.0.1/{documented}")),
        "{check}"
    );
}
