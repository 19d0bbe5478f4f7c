//! Where the built artifacts and installed tools live: from the environment that
//! `cargo xtask test` sets, else from the workspace's default locations.

use std::path::{Path, PathBuf};

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The checked-in price file that prices the demo upstream's model (`cargo xtask up` gives
/// it to the control planes).
pub fn demo_prices_file() -> PathBuf {
    workspace_root().join("deploy/prices/model_prices.json")
}

/// Cargo's target directory, honouring `CARGO_TARGET_DIR`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("target"),
    }
}

/// The `.livegate/` state directory of the local stack and its installed tools.
pub fn state_dir() -> PathBuf {
    workspace_root().join(".livegate")
}

/// The Envoy binary: `LIVEGATE_ENVOY`, else the one `cargo xtask setup` installs.
pub fn envoy_bin() -> PathBuf {
    from_env_or("LIVEGATE_ENVOY", || {
        state_dir().join("envoy/envoy/_bin/envoy")
    })
}

/// The filter: `LIVEGATE_FILTER_WASM`, else the `wasm` profile build.
pub fn filter_wasm() -> PathBuf {
    from_env_or("LIVEGATE_FILTER_WASM", || {
        target_dir().join("wasm32-wasip1/wasm/livegate_filter.wasm")
    })
}

/// The control-plane binary: `LIVEGATE_CONTROL_PLANE_BIN`, else the debug build.
pub fn control_plane_bin() -> PathBuf {
    from_env_or("LIVEGATE_CONTROL_PLANE_BIN", || {
        target_dir().join("debug/livegate-control-plane")
    })
}

/// The demo upstream binary: `LIVEGATE_DEMO_UPSTREAM_BIN`, else the debug build.
pub fn demo_upstream_bin() -> PathBuf {
    from_env_or("LIVEGATE_DEMO_UPSTREAM_BIN", || {
        target_dir().join("debug/livegate-demo-upstream")
    })
}

/// Fails with the command that produces `path` when it is missing.
pub fn require(path: &Path, what: &str) -> anyhow::Result<PathBuf> {
    if path.exists() {
        Ok(path.to_path_buf())
    } else {
        anyhow::bail!(
            "{what} not found at {}: run `cargo xtask test` (it installs and builds everything)",
            path.display()
        )
    }
}

fn from_env_or(var: &str, default: impl FnOnce() -> PathBuf) -> PathBuf {
    std::env::var_os(var)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(default)
}
