//! The filter's OCI image as a mesh's image fetcher reads it: `cargo xtask package`'s layout.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Where `cargo xtask test` says the packaged layout is.
pub const OCI_LAYOUT_ENV: &str = "LIVEGATE_FILTER_OCI";

/// The layout `cargo xtask package` wrote: `LIVEGATE_FILTER_OCI`, else `target/oci`.
pub fn oci_layout() -> PathBuf {
    std::env::var_os(OCI_LAYOUT_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::artifacts::target_dir().join("oci/livegate-filter"))
}

/// `plugin.wasm` out of an OCI layout, as a mesh's image fetcher takes it (Istio
/// `pkg/wasm/imagefetcher.go`, compat variant): index → manifest → its one gzip tar layer
/// → the file `plugin.wasm`. Every blob is checked against its digest and size.
pub fn plugin_from_layout(layout: &Path) -> anyhow::Result<Vec<u8>> {
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
    let manifest: Value = serde_json::from_slice(&blob(layout, &index["manifests"][0])?)?;
    let layers = manifest["layers"]
        .as_array()
        .context("the manifest has no layers")?;
    anyhow::ensure!(layers.len() == 1, "{} layers, not one", layers.len());
    anyhow::ensure!(
        layers[0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip",
        "layer media type {}",
        layers[0]["mediaType"]
    );
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(blob(layout, &layers[0])?.as_slice()).read_to_end(&mut tar)?;
    let mut archive = tar::Archive::new(tar.as_slice());
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.path()?.as_os_str() == "plugin.wasm" {
            let mut module = Vec::new();
            entry.read_to_end(&mut module)?;
            return Ok(module);
        }
    }
    anyhow::bail!("no plugin.wasm in the layer")
}

/// A blob of the layout by its descriptor, checked against the descriptor's digest and size.
fn blob(layout: &Path, descriptor: &Value) -> anyhow::Result<Vec<u8>> {
    let digest = descriptor["digest"]
        .as_str()
        .context("descriptor without digest")?;
    let hex = digest
        .strip_prefix("sha256:")
        .context("digest is not sha256")?;
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex))?;
    let actual = hex::encode(Sha256::digest(&bytes));
    anyhow::ensure!(actual == hex, "blob {hex} has digest {actual}");
    anyhow::ensure!(
        descriptor["size"].as_u64() == Some(bytes.len() as u64),
        "blob {hex} is {} bytes, its descriptor says {}",
        bytes.len(),
        descriptor["size"]
    );
    Ok(bytes)
}

/// `plugin.wasm` out of the packaged layout, written into `dir`.
pub fn take_plugin(dir: &Path) -> anyhow::Result<PathBuf> {
    let layout = oci_layout();
    crate::artifacts::require(&layout, "the filter's OCI layout (cargo xtask package)")?;
    let plugin_wasm = dir.join("plugin.wasm");
    std::fs::write(&plugin_wasm, plugin_from_layout(&layout)?)?;
    Ok(plugin_wasm)
}
