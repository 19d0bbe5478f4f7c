//! `cargo xtask layout`: the module layout of the contract, the filter and the control
//! plane checked against the layers declared in docs/architecture.md.

mod rules;
mod scan;
mod table;

use std::path::Path;

use anyhow::{bail, Context};

use crate::step;

/// The crates checked, by their folder.
const CRATES: [&str; 3] = ["contract", "filter", "control-plane"];
/// The file whose "Layers" table declares each crate's layers.
const TABLE_FILE: &str = "docs/architecture.md";

/// `cargo xtask layout`, and the check `cargo xtask test` runs first (cheap: it reads
/// sources, compiles nothing).
pub fn check_before_tests() -> anyhow::Result<()> {
    step("checking the module layout (cargo xtask layout)");
    check()
}

/// Prints every problem, and fails when there is one.
pub fn check() -> anyhow::Result<()> {
    let root = livegate_tests::artifacts::workspace_root();
    let table_text = std::fs::read_to_string(root.join(TABLE_FILE))
        .with_context(|| format!("reading {TABLE_FILE}"))?;
    let layers = table::parse(&table_text)
        .with_context(|| format!("{TABLE_FILE}, the \"{}\" table", table::HEADING))?;
    for krate in layers.0.keys() {
        if !CRATES.contains(&krate.as_str()) {
            bail!(
                "{TABLE_FILE}, the \"{}\" table: `{krate}` is not a checked crate ({})",
                table::HEADING,
                CRATES.join(", ")
            );
        }
    }
    let mut count = 0;
    for krate in CRATES {
        let Some(crate_layers) = layers.0.get(krate) else {
            bail!(
                "{TABLE_FILE}, the \"{}\" table: no row for `{krate}`",
                table::HEADING
            );
        };
        let sources = sources(&root, krate)?;
        let problems = rules::check(&sources, crate_layers, TABLE_FILE);
        for problem in &problems {
            eprintln!("layout: {krate}: {problem}");
        }
        count += problems.len();
    }
    if count > 0 {
        bail!("layout: {count} problem(s) above (the layers: {TABLE_FILE}, \"Layers\")");
    }
    eprintln!(
        "layout: {}: no import loop, no upward import, no long file without a reason",
        CRATES.join(", ")
    );
    Ok(())
}

/// Every `.rs` file under `<krate>/src`, sorted.
fn sources(root: &Path, krate: &str) -> anyhow::Result<Vec<rules::Source>> {
    let src = root.join(krate).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let rel = path.strip_prefix(&src).unwrap_or(&path).to_path_buf();
            let shown = format!("{krate}/src/{}", rel.display());
            Ok(rules::Source { rel, shown, text })
        })
        .collect()
}

#[cfg(test)]
mod tests;
