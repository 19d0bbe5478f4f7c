//! The committed Envoy configurations are renderings of the one template.

use std::path::Path;

use livegate_filter::config::Config as FilterConfig;
use livegate_tests::artifacts;
use livegate_tests::envoy::{Endpoint, Envoy, EnvoyConfig};

use super::envoy_config::{self, Target, FILTER_WASM_IN_IMAGE};
use super::support::*;

#[test]
fn the_committed_compose_envoy_config_is_a_fresh_rendering_of_the_template() {
    let fresh = Target::Compose.render("{}", None).unwrap();
    assert!(
        read(envoy_config::COMPOSE_FILE) == fresh,
        "{} differs from the template's rendering: run `cargo xtask envoy-config`",
        envoy_config::COMPOSE_FILE
    );
}

#[test]
fn the_committed_kubernetes_configmap_is_a_fresh_rendering_of_the_template() {
    let fresh = Target::Kubernetes.render("{}", None).unwrap();
    assert!(
        read(envoy_config::KUBERNETES_FILE) == fresh,
        "{} differs from the template's rendering: run `cargo xtask envoy-config --kubernetes`",
        envoy_config::KUBERNETES_FILE
    );
}

#[test]
fn envoy_accepts_the_compose_config_with_the_filter_at_its_image_path() {
    assert_envoy_validates("compose", &compose_envoy_text());
}

#[test]
fn envoy_accepts_the_kubernetes_config_from_the_configmap() {
    assert_envoy_validates("kubernetes", &kubernetes_envoy_text());
}

#[test]
fn envoy_accepts_every_template_and_config_under_envoy() {
    let local =
        EnvoyConfig::on_free_ports(Endpoint::loopback(4001), Endpoint::loopback(4002)).unwrap();
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(root().join("envoy")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let text = if name.ends_with(".yaml.tmpl") {
            local.render_template(&format!("envoy/{name}")).unwrap()
        } else if name.ends_with(".yaml") {
            read(&format!("envoy/{name}"))
        } else {
            continue;
        };
        assert_envoy_validates(&name, &text);
        checked.push(name);
    }
    for expected in ["livegate.yaml.tmpl", "container.yaml"] {
        assert!(checked.iter().any(|name| name == expected), "{checked:?}");
    }
}

#[test]
fn envoy_refuses_a_config_whose_filter_file_is_missing_so_validation_means_something() {
    assert!(
        !Path::new(FILTER_WASM_IN_IMAGE).exists(),
        "this test needs a machine without the image's {FILTER_WASM_IN_IMAGE}"
    );
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("envoy.yaml");
    std::fs::write(&path, compose_envoy_text()).unwrap();
    let (valid, log) = Envoy::validate(&path).unwrap();
    assert!(
        !valid,
        "Envoy accepted a missing {FILTER_WASM_IN_IMAGE}:\n{log}"
    );
}

#[test]
fn envoys_validation_runs_the_filters_configuration_so_a_broken_one_is_refused() {
    let wasm = artifacts::require(&artifacts::filter_wasm(), "the filter (.wasm)").unwrap();
    let broken = compose_envoy_text()
        .replace(FILTER_WASM_IN_IMAGE, &wasm.display().to_string())
        .replace(
            r#"value: "{}""#,
            r#"value: "{\"cache\": {\"max_entries\": \"lots\"}}""#,
        );
    assert!(
        broken.contains("lots"),
        "the plugin configuration was not replaced"
    );
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("broken.yaml");
    std::fs::write(&path, broken).unwrap();
    let (valid, log) = Envoy::validate(&path).unwrap();
    assert!(
        !valid,
        "Envoy accepted a plugin configuration the filter refuses:\n{log}"
    );
}

#[test]
fn the_filter_accepts_the_plugin_configuration_of_every_container_config() {
    for (name, envoy) in [
        ("compose", compose_envoy()),
        ("kubernetes", kubernetes_envoy()),
    ] {
        let raw = wasm_filter(&envoy)["config"]["configuration"]["value"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| panic!("{name}: no plugin configuration string"));
        let parsed = FilterConfig::parse(Some(raw.as_bytes()));
        assert!(
            parsed.is_ok(),
            "{name}: the filter refuses {raw}: {parsed:?}"
        );
    }
}

#[test]
fn the_filter_wasm_is_copied_where_both_container_configs_load_it() {
    for (name, envoy) in [
        ("compose", compose_envoy()),
        ("kubernetes", kubernetes_envoy()),
    ] {
        let filename = &wasm_filter(&envoy)["config"]["vm_config"]["code"]["local"]["filename"];
        assert_eq!(filename.as_str(), Some(FILTER_WASM_IN_IMAGE), "{name}");
    }
    let envoy_stage = stage(&dockerfile(), "envoy");
    assert!(
        envoy_stage.iter().any(|line| line.starts_with("COPY")
            && line.contains("livegate_filter.wasm")
            && line.ends_with(&format!(" {FILTER_WASM_IN_IMAGE}"))),
        "the envoy stage does not copy the filter to {FILTER_WASM_IN_IMAGE}"
    );
}

#[test]
fn the_envoy_image_carries_the_compose_config_where_its_command_reads_it() {
    let envoy_stage = stage(&dockerfile(), "envoy");
    let copy = format!("COPY {} /etc/envoy/envoy.yaml", envoy_config::COMPOSE_FILE);
    assert!(
        envoy_stage.contains(&copy),
        "no `{copy}` in the envoy stage"
    );
    let cmd = envoy_stage
        .iter()
        .find(|line| line.starts_with("CMD"))
        .expect("the envoy stage has a CMD");
    assert!(cmd.contains(r#""-c", "/etc/envoy/envoy.yaml""#), "{cmd}");
}

#[test]
fn kubernetes_mounts_the_envoy_configmap_where_envoy_reads_its_config() {
    let deployment = manifest("Deployment", "livegate-envoy");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args = strings(&container["args"]);
    let config_path = args
        .iter()
        .position(|arg| arg == "-c")
        .and_then(|i| args.get(i + 1))
        .expect("envoy is started with -c PATH");
    let volume = seq(&pod["volumes"])
        .iter()
        .find(|v| v["configMap"]["name"].as_str() == Some(envoy_config::KUBERNETES_CONFIGMAP))
        .expect("a volume from the envoy ConfigMap");
    let mount = seq(&container["volumeMounts"])
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the ConfigMap volume is mounted");
    let mount_path = mount["mountPath"].as_str().unwrap();
    assert_eq!(
        config_path,
        &format!("{mount_path}/envoy.yaml"),
        "Envoy reads a file the ConfigMap does not provide"
    );
    assert!(
        manifest("ConfigMap", envoy_config::KUBERNETES_CONFIGMAP)["data"]["envoy.yaml"]
            .as_str()
            .is_some()
    );
}
