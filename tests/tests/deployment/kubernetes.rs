//! Kubernetes objects fit together.

use std::collections::BTreeSet;

use serde_norway::Value;

use super::support::*;

#[test]
fn kustomization_lists_every_manifest_and_every_manifest_parses() {
    let listed: BTreeSet<String> = strings(&kustomization()["resources"]).into_iter().collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        // Examples to fill in are never applied as they are.
        .filter(|name| !name.ends_with(".example.yaml"))
        .collect();
    assert_eq!(listed, on_disk);
    assert!(kubernetes().len() >= 9);
}

#[test]
fn every_service_and_budget_selects_the_pods_of_a_deployment() {
    let documents = kubernetes();
    let deployments: Vec<&Value> = documents
        .iter()
        .filter(|d| d["kind"].as_str() == Some("Deployment"))
        .collect();
    let selects = |selector: &Value| {
        deployments.iter().find(|d| {
            let labels = &d["spec"]["template"]["metadata"]["labels"];
            !mapping(selector).is_empty()
                && mapping(selector)
                    .iter()
                    .all(|(k, v)| &labels[k.as_str().unwrap()] == v)
        })
    };
    let mut budgets = 0;
    for document in &documents {
        match document["kind"].as_str() {
            Some("Service") => {
                let deployment = selects(&document["spec"]["selector"]).unwrap_or_else(|| {
                    panic!("{:?} selects no pods", document["metadata"]["name"])
                });
                let ports =
                    seq(&deployment["spec"]["template"]["spec"]["containers"][0]["ports"]).to_vec();
                for port in seq(&document["spec"]["ports"]) {
                    let target = &port["targetPort"];
                    assert!(
                        ports
                            .iter()
                            .any(|p| &p["name"] == target || &p["containerPort"] == target),
                        "targetPort {target:?} is no port of the pods"
                    );
                }
            }
            Some("PodDisruptionBudget") => {
                budgets += 1;
                assert!(
                    selects(&document["spec"]["selector"]["matchLabels"]).is_some(),
                    "{:?} protects no pods",
                    document["metadata"]["name"]
                );
            }
            _ => {}
        }
    }
    assert!(
        budgets >= 2,
        "Envoy and the control plane each have a budget"
    );
}

#[test]
fn every_container_requests_resources_and_the_control_plane_runs_several_replicas() {
    for document in kubernetes() {
        if document["kind"].as_str() != Some("Deployment") {
            continue;
        }
        for container in seq(&document["spec"]["template"]["spec"]["containers"]) {
            let requests = &container["resources"]["requests"];
            assert!(
                !requests["cpu"].is_null() && !requests["memory"].is_null(),
                "{:?} requests no cpu or memory",
                container["name"]
            );
        }
    }
    let replicas = manifest("Deployment", "livegate-control-plane")["spec"]["replicas"]
        .as_u64()
        .unwrap();
    assert!(replicas >= 2, "{replicas}");
}

#[test]
fn the_envoy_deployment_runs_the_livegate_envoy_image_on_as_many_workers_as_its_cpu_limit() {
    let deployment = manifest("Deployment", "livegate-envoy");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"].as_str(), Some("livegate/envoy"));
    let images: Vec<String> = seq(&kustomization()["images"])
        .iter()
        .filter_map(|image| image["name"].as_str().map(str::to_string))
        .collect();
    assert!(images.contains(&"livegate/envoy".to_string()), "{images:?}");
    let args = strings(&container["args"]);
    let workers = args
        .iter()
        .position(|a| a == "--concurrency")
        .and_then(|i| args.get(i + 1))
        .expect("--concurrency N");
    assert_eq!(
        container["resources"]["limits"]["cpu"].as_str(),
        Some(workers.as_str())
    );
}

#[test]
fn only_envoy_pods_may_reach_the_control_plane_api_and_only_on_its_port() {
    let policy = manifest("NetworkPolicy", "livegate-control-plane");
    let pod_labels =
        |name: &str| manifest("Deployment", name)["spec"]["template"]["metadata"]["labels"].clone();
    let selects = |selector: &Value, labels: &Value| {
        let wanted = mapping(selector);
        !wanted.is_empty()
            && wanted
                .iter()
                .all(|(k, v)| &labels[k.as_str().unwrap()] == v)
    };
    assert!(selects(
        &policy["spec"]["podSelector"]["matchLabels"],
        &pod_labels("livegate-control-plane")
    ));
    let rules = seq(&policy["spec"]["ingress"]);
    assert_eq!(
        rules.len(),
        2,
        "two rules: the API from Envoy, the metrics port"
    );
    // The second opens the metrics listener only, which serves /metrics and nothing else.
    let metrics: Vec<u64> = seq(&rules[1]["ports"])
        .iter()
        .filter_map(|p| p["port"].as_u64())
        .collect();
    assert_eq!(metrics, vec![4005]);
    assert_eq!(
        kubernetes_env("livegate-control-plane", "LIVEGATE_METRICS_LISTEN"),
        "0.0.0.0:4005"
    );
    let from = seq(&rules[0]["from"]);
    assert!(from.iter().all(|peer| selects(
        &peer["podSelector"]["matchLabels"],
        &pod_labels("livegate-envoy")
    )));
    let ports: Vec<u64> = seq(&rules[0]["ports"])
        .iter()
        .filter_map(|p| p["port"].as_u64())
        .collect();
    assert_eq!(ports, vec![u64::from(documented_port("control plane"))]);
}

#[test]
fn both_deployments_read_the_internal_token_from_one_secret_and_envoys_upstream_credential_from_a_secret(
) {
    let secret_of = |deployment: &str, variable: &str| -> (String, bool) {
        let container =
            &manifest("Deployment", deployment)["spec"]["template"]["spec"]["containers"][0];
        let entry = seq(&container["env"])
            .iter()
            .find(|e| e["name"].as_str() == Some(variable))
            .unwrap_or_else(|| panic!("{deployment} has no {variable}"))
            .clone();
        let reference = &entry["valueFrom"]["secretKeyRef"];
        assert_eq!(reference["key"].as_str(), Some(variable), "{deployment}");
        (
            reference["name"].as_str().unwrap().to_string(),
            reference["optional"].as_bool().unwrap_or(false),
        )
    };
    let cp = secret_of("livegate-control-plane", "LIVEGATE_INTERNAL_TOKEN");
    let envoy = secret_of("livegate-envoy", "LIVEGATE_INTERNAL_TOKEN");
    assert_eq!(cp, envoy);
    assert_eq!(cp, ("livegate-internal".to_string(), false));
    let upstream = secret_of("livegate-envoy", "LIVEGATE_UPSTREAM_AUTHORIZATION");
    assert_eq!(upstream, ("livegate-upstream".to_string(), true));
    for (file, name) in [
        (
            "deploy/kubernetes/internal-secret.example.yaml",
            "livegate-internal",
        ),
        (
            "deploy/kubernetes/upstream-secret.example.yaml",
            "livegate-upstream",
        ),
    ] {
        let secret: Value = serde_norway::from_str(&read(file)).unwrap();
        assert_eq!(secret["kind"].as_str(), Some("Secret"), "{file}");
        assert_eq!(secret["metadata"]["name"].as_str(), Some(name), "{file}");
    }
    // No secret value in the ConfigMap: the filter's configuration names none.
    let config = kubernetes_envoy_text();
    assert!(config.contains("host_env_keys"));
    assert!(!config.contains("upstream_authorization"));
}
