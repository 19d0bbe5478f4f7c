//! `cargo xtask package`: the filter as the OCI image a service mesh pulls (Istio's
//! `WasmPlugin` / `EnvoyFilter`, Envoy Gateway's `EnvoyExtensionPolicy`), without Docker.
//!
//! The image is the "compat" variant of the Wasm OCI image spec: one gzip tar layer whose
//! only file is `plugin.wasm`, the annotation `module.wasm.image/variant: compat`. It is
//! written as an OCI image layout (a directory) and as the same layout in one tar file,
//! which `oras`, `skopeo copy oci-archive:` and `crane push` push as they are.
//!
//! Reproducible: the same `.wasm` gives the same bytes, so the same digests. Every tar
//! entry has a fixed mtime, owner and mode; the gzip stream has no timestamp nor name;
//! every JSON document is written with its keys sorted (serde_json's `Value` map), never
//! in a `HashMap`'s order.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context;
use oci_spec::image::{
    Arch, Descriptor, Digest, ImageConfigurationBuilder, ImageIndexBuilder, ImageManifestBuilder,
    MediaType, OciLayoutBuilder, Os, RootFsBuilder, Sha256Digest, ANNOTATION_REF_NAME,
    ANNOTATION_TITLE, ANNOTATION_VERSION,
};
use sha2::{Digest as _, Sha256};

use crate::step;

/// The file the meshes' image fetchers take out of the layer (Istio `pkg/wasm`).
pub const PLUGIN_FILE: &str = "plugin.wasm";
/// Marks the image as the Wasm OCI spec's "compat" variant: a plain image, one layer.
pub const VARIANT_ANNOTATION: &str = "module.wasm.image/variant";
pub const VARIANT: &str = "compat";
/// The layout's directory and archive, in `target/oci` unless told otherwise.
const OUT_DIR: &str = "oci";
const LAYOUT_DIR: &str = "livegate-filter";
const ARCHIVE: &str = "livegate-filter.tar";
/// Every file of the layer and of the archive: owned by root, this mode, this mtime
/// (`SOURCE_DATE_EPOCH` practice: a constant, so two builds are the same bytes).
const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;
const MTIME: u64 = 0;

/// What `package` wrote.
#[derive(Debug, Clone)]
pub struct Package {
    pub layout: PathBuf,
    pub archive: PathBuf,
    /// `sha256:<hex>` of the image manifest; its hex is what the meshes pin (Istio's
    /// `WasmPlugin.sha256` and `code.remote.sha256` of an `oci://` url, Envoy Gateway's
    /// `image.sha256`).
    pub manifest_digest: String,
    /// Hex SHA-256 of `plugin.wasm` itself, for a plain `https://` download of the module.
    pub plugin_sha256: String,
}

/// Builds the filter (profile `wasm`, the release build) and packages it in `target/oci`;
/// or packages the module at `wasm` as it is, into `out` (the Dockerfile does so).
pub fn run(wasm: Option<PathBuf>, out: Option<PathBuf>) -> anyhow::Result<()> {
    let wasm = match wasm {
        Some(wasm) => wasm,
        None => {
            // Only the wasm target: packaging needs neither Envoy nor Postgres.
            crate::setup::wasm_target()?;
            crate::build::filter()?
        }
    };
    let out = out.unwrap_or_else(|| livegate_tests::artifacts::target_dir().join(OUT_DIR));
    let package = package(&wasm, &out)?;
    println!("layout   {}", package.layout.display());
    println!("archive  {}", package.archive.display());
    println!("manifest {}", package.manifest_digest);
    println!("plugin.wasm sha256 {}", package.plugin_sha256);
    Ok(())
}

/// Writes the layout and its archive for the module at `wasm` into `out`.
pub fn package(wasm: &Path, out: &Path) -> anyhow::Result<Package> {
    step("packaging the filter as an OCI image (plugin.wasm, compat variant)");
    let module = std::fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let layout = out.join(LAYOUT_DIR);
    let archive = out.join(ARCHIVE);
    let image = Image::of(&module, env!("CARGO_PKG_VERSION"))?;
    image.write_layout(&layout)?;
    image.write_archive(&archive)?;
    Ok(Package {
        layout,
        archive,
        manifest_digest: image.manifest.digest.clone(),
        plugin_sha256: hex::encode(Sha256::digest(&module)),
    })
}

/// One content-addressed blob.
#[derive(Debug, Clone)]
pub struct Blob {
    pub bytes: Vec<u8>,
    /// `sha256:<hex>`.
    pub digest: String,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Blob {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        Blob { bytes, digest }
    }

    fn hex(&self) -> &str {
        self.digest.trim_start_matches("sha256:")
    }

    fn descriptor(&self, media_type: MediaType) -> anyhow::Result<Descriptor> {
        let digest = Digest::from(Sha256Digest::from_str(self.hex())?);
        Ok(Descriptor::new(media_type, self.bytes.len() as u64, digest))
    }
}

/// The image in memory: its blobs and the layout's two small files.
#[derive(Debug, Clone)]
pub struct Image {
    pub layer: Blob,
    pub config: Blob,
    pub manifest: Blob,
    pub index: Vec<u8>,
    pub oci_layout: Vec<u8>,
}

impl Image {
    /// The compat-variant image of `module`, tagged `version` in the layout's index.
    pub fn of(module: &[u8], version: &str) -> anyhow::Result<Image> {
        let tar = layer_tar(module)?;
        let diff_id = Blob::new(tar.clone()).digest;
        let layer = Blob::new(gzip(&tar)?);
        let config = ImageConfigurationBuilder::default()
            .architecture(Arch::Wasm)
            .os(Os::Other("wasip1".into()))
            .rootfs(
                RootFsBuilder::default()
                    .typ("layers")
                    .diff_ids(vec![diff_id])
                    .build()?,
            )
            .build()?;
        let config = Blob::new(stable_json(&config)?);
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config.descriptor(MediaType::ImageConfig)?)
            .layers(vec![layer.descriptor(MediaType::ImageLayerGzip)?])
            .annotations(
                [
                    (VARIANT_ANNOTATION.to_string(), VARIANT.to_string()),
                    (ANNOTATION_TITLE.to_string(), "livegate-filter".to_string()),
                    (ANNOTATION_VERSION.to_string(), version.to_string()),
                ]
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
            )
            .build()?;
        let manifest = Blob::new(stable_json(&manifest)?);
        let mut entry = manifest.descriptor(MediaType::ImageManifest)?;
        entry.set_annotations(Some(
            [(ANNOTATION_REF_NAME.to_string(), version.to_string())]
                .into_iter()
                .collect(),
        ));
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(vec![entry])
            .build()?;
        let oci_layout = OciLayoutBuilder::default()
            .image_layout_version("1.0.0")
            .build()?;
        Ok(Image {
            layer,
            config,
            manifest,
            index: stable_json(&index)?,
            oci_layout: stable_json(&oci_layout)?,
        })
    }

    /// The layout's files, relative paths in a fixed order.
    fn files(&self) -> Vec<(String, &[u8])> {
        let mut blobs: Vec<&Blob> = vec![&self.layer, &self.config, &self.manifest];
        blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
        blobs.dedup_by(|a, b| a.digest == b.digest);
        let mut files = vec![
            ("oci-layout".to_string(), self.oci_layout.as_slice()),
            ("index.json".to_string(), self.index.as_slice()),
        ];
        for blob in blobs {
            files.push((
                format!("blobs/sha256/{}", blob.hex()),
                blob.bytes.as_slice(),
            ));
        }
        files
    }

    /// Writes the layout into `dir`, replacing what a previous run left there.
    pub fn write_layout(&self, dir: &Path) -> anyhow::Result<()> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir.join("blobs/sha256"))?;
        for (path, bytes) in self.files() {
            std::fs::write(dir.join(&path), bytes).with_context(|| format!("writing {path}"))?;
        }
        Ok(())
    }

    /// The layout as one tar file (`oci-archive:` for skopeo, a tarball for crane and oras).
    pub fn write_archive(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, self.archive()?).with_context(|| format!("writing {}", path.display()))
    }

    pub fn archive(&self) -> anyhow::Result<Vec<u8>> {
        let mut tar = tar::Builder::new(Vec::new());
        for dir in ["blobs/", "blobs/sha256/"] {
            append(&mut tar, dir, &[], tar::EntryType::Directory)?;
        }
        for (path, bytes) in self.files() {
            append(&mut tar, &path, bytes, tar::EntryType::Regular)?;
        }
        Ok(tar.into_inner()?)
    }
}

/// The layer's tar: `plugin.wasm` alone, at the root.
pub fn layer_tar(module: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    append(&mut tar, PLUGIN_FILE, module, tar::EntryType::Regular)?;
    Ok(tar.into_inner()?)
}

/// One tar entry with nothing of the machine in it: no owner names, no time, no ids.
fn append(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    bytes: &[u8],
    kind: tar::EntryType,
) -> anyhow::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_size(bytes.len() as u64);
    header.set_mode(if kind.is_dir() { DIR_MODE } else { FILE_MODE });
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(MTIME);
    header.set_username("")?;
    header.set_groupname("")?;
    tar.append_data(&mut header, path, bytes)?;
    Ok(())
}

/// Gzip with no timestamp, no file name, a fixed level: the same input, the same bytes.
pub fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?)
}

/// JSON with sorted keys: through `serde_json::Value`, whose map is ordered.
fn stable_json(value: &impl serde::Serialize) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(&serde_json::to_value(value)?)?)
}

#[cfg(test)]
mod tests;
