//! The spool's file-system steps: names of set-aside and temporary files, synced writes,
//! and a read-only look at a spool file.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::pending::{scan, Pending};
use super::SpoolError;

/// The prefix of a set-aside spool's file name: `<spool file name>.db-`.
pub fn set_aside_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{name}.db-")
}

/// Where [`Spool::set_aside`] puts a spool bound to `identity`: its characters outside
/// `[A-Za-z0-9_-]` become `_` (the identity itself stays inside the file).
pub(super) fn set_aside_path(path: &Path, identity: &str, now_ms: u64) -> PathBuf {
    let safe: String = identity
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    path.with_file_name(format!("{}{safe}.{now_ms}", set_aside_prefix(path)))
}

/// Reads a spool file without changing it (readiness and the `spool drain` command's
/// check): its identity and pending entries.
pub fn inspect(path: &Path) -> Result<Pending, SpoolError> {
    let bytes = std::fs::read(path).map_err(|source| SpoolError::Io {
        path: path.to_path_buf(),
        op: "read",
        source,
    })?;
    Ok(scan(&bytes, path)?.pending)
}

pub(super) fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".compacting");
    PathBuf::from(name)
}

pub(super) fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

pub(super) fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Syncs the directory holding `path`, so a new or renamed entry in it survives a crash.
pub(super) fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}
