//! Builds what the stack runs: the filter for wasm, and the native binaries.

use std::path::PathBuf;
use std::process::Command;

use crate::setup::{run, WASM_TARGET};
use crate::step;

/// Where the built artifacts are.
pub struct Built {
    pub filter_wasm: PathBuf,
    pub control_plane: PathBuf,
    pub demo_upstream: PathBuf,
}

pub fn all(release: bool) -> anyhow::Result<Built> {
    let filter_wasm = filter()?;
    let profile = if release { "release" } else { "debug" };
    step(&format!(
        "building the control plane and the demo upstream ({profile})"
    ));
    let mut native = cargo();
    native.args(["build", "--package", "livegate-control-plane"]);
    native.args(["--package", "livegate-demo-upstream"]);
    if release {
        native.arg("--release");
    }
    run(&mut native)?;
    let target = livegate_tests::artifacts::target_dir();
    Ok(Built {
        filter_wasm,
        control_plane: target.join(profile).join("livegate-control-plane"),
        demo_upstream: target.join(profile).join("livegate-demo-upstream"),
    })
}

/// Builds the filter alone (wasm32-wasip1, profile `wasm`: the release build that ships).
pub fn filter() -> anyhow::Result<PathBuf> {
    step("building the filter (wasm32-wasip1, profile wasm)");
    wasm_package("livegate-filter", "wasm/livegate_filter.wasm")
}

/// Builds the benchmarks' floor filter (xtask/floor-filter) like the filter.
pub fn floor_filter() -> anyhow::Result<PathBuf> {
    step("building the floor filter (wasm32-wasip1, profile wasm)");
    wasm_package("livegate-floor-filter", "wasm/livegate_floor_filter.wasm")
}

/// Builds `package` for wasm32-wasip1 with profile `wasm`; `artifact` is where Cargo puts
/// its module under the target's directory.
fn wasm_package(package: &str, artifact: &str) -> anyhow::Result<PathBuf> {
    run(cargo()
        .args(["build", "--package", package, "--target", WASM_TARGET])
        .args(["--profile", "wasm"]))?;
    Ok(livegate_tests::artifacts::target_dir()
        .join(WASM_TARGET)
        .join(artifact))
}

/// `cargo`, the same one running this xtask, without the variables `cargo run` set for
/// the xtask binary itself (see [`set_for_this_crate`]).
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(livegate_tests::artifacts::workspace_root());
    without_this_crate_s_env(&mut command);
    command
}

/// Removes from a cargo command what Cargo set for this crate ([`set_for_this_crate`]).
pub fn without_this_crate_s_env(command: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_for_this_crate) {
            command.env_remove(name);
        }
    }
    command
}

/// Whether Cargo set this variable for the crate it runs (`cargo run -p xtask`, the
/// `cargo xtask` alias): `CARGO_MANIFEST_DIR=…/xtask`, `CARGO_PKG_NAME=xtask`, ….
///
/// A nested cargo must not inherit them. ring's build script declares
/// `rerun-if-env-changed` on `CARGO_MANIFEST_DIR`, `CARGO_MANIFEST_LINKS` and
/// `CARGO_PKG_NAME`/`_VERSION_*`, and Cargo compares those against its own environment:
/// inherited, they differ from what the `cargo xtask` build saw, so ring's build script
/// reran, ring and everything above it (rcgen, rustls, tokio-postgres-rustls, the control
/// plane, then the xtask again) recompiled on every command, each build evicting the
/// other's. `CARGO` itself stays: it names the cargo to run.
pub fn set_for_this_crate(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_MANIFEST_")
        || name.starts_with("CARGO_BIN_")
        || matches!(
            name,
            "CARGO_CRATE_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
                | "OUT_DIR"
        )
}

/// Installs, builds, and points the harness at the artifacts (`up` and `bench`).
pub fn prepare_stack(release: bool) -> anyhow::Result<()> {
    let tools = crate::setup::all()?;
    let built = all(release)?;
    for (name, value) in artifact_env(&tools, &built) {
        std::env::set_var(name, value);
    }
    Ok(())
}

/// The environment through which the harness finds every tool and artifact.
pub fn artifact_env(tools: &crate::setup::Tools, built: &Built) -> [(&'static str, PathBuf); 6] {
    [
        ("LIVEGATE_TEST_PYTHON", tools.client_python.clone()),
        ("LIVEGATE_ENVOY", tools.envoy.clone()),
        ("LIVEGATE_PG_BIN", tools.postgres_bin.clone()),
        ("LIVEGATE_FILTER_WASM", built.filter_wasm.clone()),
        ("LIVEGATE_CONTROL_PLANE_BIN", built.control_plane.clone()),
        ("LIVEGATE_DEMO_UPSTREAM_BIN", built.demo_upstream.clone()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nested_cargo_does_not_inherit_what_cargo_set_for_this_crate() {
        // `cargo test` sets these for this binary as `cargo run` does for the xtask.
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        let command = cargo();
        let removed: Vec<String> = command
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        for name in [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
        ] {
            assert!(removed.iter().any(|r| r == name), "{name} is inherited");
        }
        assert!(
            !removed.iter().any(|r| r == "CARGO"),
            "CARGO names the cargo to run"
        );
    }

    #[test]
    fn the_caller_s_own_cargo_settings_pass_through() {
        for name in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_JOBS",
            "CARGO_INCREMENTAL",
            "CARGO_PROFILE_DEV_DEBUG",
            "CARGO_TERM_COLOR",
            "CARGO_LOG",
            "RUSTFLAGS",
        ] {
            assert!(!set_for_this_crate(name), "{name} is the caller's setting");
        }
        for name in [
            "CARGO_PKG_VERSION_PRE",
            "CARGO_MANIFEST_LINKS",
            "CARGO_BIN_NAME",
        ] {
            assert!(
                set_for_this_crate(name),
                "{name} is set by cargo for the crate"
            );
        }
    }
}
