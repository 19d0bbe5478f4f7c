//! The deployment files (docker-compose.yml, deploy/docker/Dockerfile, deploy/kubernetes/,
//! envoy/container.yaml) checked against the code they deploy: ports, paths, variable
//! names, the Envoy version, the filter's configuration parser, and the real Envoy's
//! `--mode validate`. No Docker engine or cluster is needed.

// The very code `cargo xtask envoy-config` runs, so a fresh rendering here is what the
// command writes. The test uses its rendering, not its file writing.
#[allow(dead_code)]
#[path = "../../../xtask/src/envoy_config.rs"]
mod envoy_config;

mod envoy_configs;
mod images;
mod kubernetes;
mod operations_doc;
mod ports;
mod probes;
mod support;
