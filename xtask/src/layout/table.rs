//! The declared layering, parsed from the "Layers" table of docs/architecture.md: the one
//! place it is written, so the docs and the check cannot drift.

use std::collections::BTreeMap;

use anyhow::{bail, Context};

/// The heading the table sits under.
pub const HEADING: &str = "## Layers";

/// Each crate's top-level modules with their layer (1 = the bottom).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Layers(pub BTreeMap<String, BTreeMap<String, u32>>);

/// Reads the first table after [`HEADING`]: rows `| crate | layer | modules | … |`, the
/// modules written as `code`, comma separated; further columns are prose.
pub fn parse(markdown: &str) -> anyhow::Result<Layers> {
    let mut lines = markdown
        .lines()
        .enumerate()
        .skip_while(|(_, line)| line.trim() != HEADING);
    if lines.next().is_none() {
        bail!("no \"{HEADING}\" section");
    }
    let rows = lines
        .take_while(|(_, line)| !line.starts_with("# ") && !line.starts_with("## "))
        .skip_while(|(_, line)| !line.trim_start().starts_with('|'))
        .take_while(|(_, line)| line.trim_start().starts_with('|'))
        .skip(2); // the header and the |---| line
    let mut layers = Layers::default();
    for (index, line) in rows {
        row(&mut layers, line).with_context(|| format!("line {}: {line}", index + 1))?;
    }
    if layers.0.is_empty() {
        bail!("the \"{HEADING}\" section has no table rows");
    }
    Ok(layers)
}

fn row(layers: &mut Layers, line: &str) -> anyhow::Result<()> {
    let cells: Vec<&str> = line
        .trim()
        .trim_matches('|')
        .split('|')
        .map(str::trim)
        .collect();
    let [krate, layer, modules, ..] = cells.as_slice() else {
        bail!("a row needs at least three cells: crate, layer, modules");
    };
    let krate = krate.trim_matches('`');
    let layer: u32 = layer
        .parse()
        .with_context(|| format!("the layer {layer:?} is not a number"))?;
    let names: Vec<&str> = modules.split('`').skip(1).step_by(2).collect();
    if names.is_empty() {
        bail!("no `module` in the modules cell");
    }
    let placed = layers.0.entry(krate.to_string()).or_default();
    for name in names {
        if let Some(other) = placed.insert(name.to_string(), layer) {
            bail!("{krate}: `{name}` is in layer {other} and in layer {layer}");
        }
    }
    Ok(())
}
