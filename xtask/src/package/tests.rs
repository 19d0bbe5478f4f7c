use std::collections::BTreeMap;
use std::io::Read;

use serde_json::Value;

use super::*;

/// A stand-in module: any bytes do, the packaging never parses them.
const MODULE: &[u8] = b"\0asm\x01\0\0\0 a stand-in for the filter";

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Every regular file of a tar, by path.
fn tar_files(bytes: &[u8]) -> BTreeMap<String, (tar::Header, Vec<u8>)> {
    let mut archive = tar::Archive::new(bytes);
    let mut files = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        let path = entry.path().unwrap().display().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        if header.entry_type().is_file() {
            files.insert(path, (header, data));
        }
    }
    files
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Reads a layout directory as a registry would: index → manifest → config and layer.
struct Layout {
    files: BTreeMap<String, Vec<u8>>,
}

impl Layout {
    fn blob(&self, descriptor: &Value) -> Vec<u8> {
        let digest = descriptor["digest"].as_str().unwrap();
        let bytes = self.files[&format!("blobs/sha256/{}", &digest["sha256:".len()..])].clone();
        assert_eq!(sha256(&bytes), digest, "the blob is named by its digest");
        assert_eq!(descriptor["size"].as_u64(), Some(bytes.len() as u64));
        bytes
    }

    fn json(&self, descriptor: &Value) -> Value {
        serde_json::from_slice(&self.blob(descriptor)).unwrap()
    }
}

fn read_dir(dir: &Path) -> Layout {
    let mut files = BTreeMap::new();
    for name in ["oci-layout", "index.json"] {
        files.insert(name.to_string(), std::fs::read(dir.join(name)).unwrap());
    }
    for entry in std::fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        let name = format!("blobs/sha256/{}", entry.file_name().to_string_lossy());
        files.insert(name, std::fs::read(entry.path()).unwrap());
    }
    Layout { files }
}

#[test]
fn the_layout_is_one_compat_image_whose_single_layer_holds_plugin_wasm_alone() {
    let dir = tempfile::tempdir().unwrap();
    let image = Image::of(MODULE, "1.2.3").unwrap();
    image.write_layout(dir.path()).unwrap();
    let layout = read_dir(dir.path());

    let oci_layout: Value = serde_json::from_slice(&layout.files["oci-layout"]).unwrap();
    assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0");
    let index: Value = serde_json::from_slice(&layout.files["index.json"]).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1);
    assert_eq!(
        manifests[0]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifests[0]["annotations"]["org.opencontainers.image.ref.name"],
        "1.2.3"
    );

    let manifest = layout.json(&manifests[0]);
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["annotations"]["module.wasm.image/variant"],
        "compat"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "one layer");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );

    let tar = gunzip(&layout.blob(&layers[0]));
    let files = tar_files(&tar);
    assert_eq!(files.keys().collect::<Vec<_>>(), vec!["plugin.wasm"]);
    let (header, bytes) = &files["plugin.wasm"];
    assert_eq!(bytes, MODULE, "the module, byte for byte");
    assert_eq!(header.mtime().unwrap(), 0);
    assert_eq!(header.uid().unwrap(), 0);
    assert_eq!(header.mode().unwrap(), 0o644);

    let config = layout.json(&manifest["config"]);
    assert_eq!(config["architecture"], "wasm");
    assert_eq!(config["rootfs"]["type"], "layers");
    assert_eq!(config["rootfs"]["diff_ids"][0], sha256(&tar));
    // Nothing else lies in the layout: three blobs and the two files.
    assert_eq!(layout.files.len(), 5, "{:?}", layout.files.keys());
}

#[test]
fn the_archive_holds_the_same_files_as_the_layout() {
    let dir = tempfile::tempdir().unwrap();
    let image = Image::of(MODULE, "1.2.3").unwrap();
    image.write_layout(dir.path()).unwrap();
    let layout = read_dir(dir.path());
    let archived: BTreeMap<String, Vec<u8>> = tar_files(&image.archive().unwrap())
        .into_iter()
        .map(|(path, (_, bytes))| (path, bytes))
        .collect();
    assert_eq!(archived, layout.files);
}

#[test]
fn two_packagings_of_the_same_module_are_the_same_bytes() {
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    let wasm = one.path().join("livegate_filter.wasm");
    std::fs::write(&wasm, MODULE).unwrap();
    let first = package(&wasm, one.path()).unwrap();
    let second = package(&wasm, two.path()).unwrap();
    assert_eq!(first.manifest_digest, second.manifest_digest);
    assert_eq!(
        std::fs::read(&first.archive).unwrap(),
        std::fs::read(&second.archive).unwrap()
    );
    assert_eq!(
        read_dir(&first.layout).files,
        read_dir(&second.layout).files
    );
    assert_eq!(first.plugin_sha256, hex::encode(Sha256::digest(MODULE)));
    // Another module is another image.
    let other = Image::of(b"\0asm\x01\0\0\0 another", "1.2.3").unwrap();
    assert_ne!(other.manifest.digest, first.manifest_digest);
}

#[test]
fn a_second_packaging_replaces_the_first_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("m.wasm");
    std::fs::write(&wasm, b"first").unwrap();
    package(&wasm, dir.path()).unwrap();
    std::fs::write(&wasm, MODULE).unwrap();
    let package = package(&wasm, dir.path()).unwrap();
    assert_eq!(read_dir(&package.layout).files.len(), 5);
}
