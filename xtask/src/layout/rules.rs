//! The layout rules over one crate's sources: no import loop between top-level modules, no
//! import of a higher layer, every module in a layer, no long file without a reason.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use super::scan;

/// A file over this many lines says why in its opening `//!` block.
pub const LONG_FILE_LINES: usize = 500;
/// What that reason starts with (any case).
pub const LONG_MARKER: &str = "Long because:";

/// One source file of a crate's `src/`.
pub struct Source {
    /// Relative to `src/`: `lib.rs`, `db/mod.rs`, `ledger/bind.rs`.
    pub rel: PathBuf,
    /// As the report shows it: `control-plane/src/db/mod.rs`.
    pub shown: String,
    pub text: String,
}

/// Where an import is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub file: String,
    pub line: usize,
    pub text: String,
}

/// An import of top-level module `to` from inside top-level module `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub example: Example,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Problem {
    /// Modules that import each other in a cycle; each edge inside it, with one example.
    Loop {
        modules: Vec<String>,
        edges: Vec<Edge>,
    },
    /// An import of a module in a higher layer (or of an item of the crate root).
    Upward {
        edge: Edge,
        from_layer: u32,
        to_layer: Option<u32>,
    },
    /// A top-level module in no layer of the table.
    Unplaced {
        module: String,
        file: String,
        table: String,
    },
    Long {
        file: String,
        lines: usize,
    },
}

/// The crate root's name in reports (`crate::Item` of lib.rs).
pub const ROOT: &str = "crate root";

/// Every problem of one crate, given its layers (`module → layer`) and the table's file.
pub fn check(sources: &[Source], layers: &BTreeMap<String, u32>, table: &str) -> Vec<Problem> {
    let scans: Vec<(&Source, scan::Scan)> = sources
        .iter()
        .map(|source| (source, scan::file(&source.text)))
        .collect();
    let test_dirs: Vec<PathBuf> = scans
        .iter()
        .flat_map(|(source, scan)| {
            let dir = child_dir(&source.rel);
            scan.test_mods.iter().map(move |name| dir.join(name))
        })
        .collect();
    let code: Vec<&(&Source, scan::Scan)> = scans
        .iter()
        .filter(|(source, scan)| !scan.test_only && !is_test_file(&source.rel, &test_dirs))
        .collect();

    let mut modules: BTreeMap<String, String> = BTreeMap::new();
    for (source, _) in &code {
        if let Some(module) = top_module(&source.rel) {
            modules
                .entry(module)
                .or_insert_with(|| source.shown.clone());
        }
    }

    let mut edges: BTreeMap<(String, String), Example> = BTreeMap::new();
    for (source, scan) in &code {
        let Some(from) = top_module(&source.rel) else {
            continue; // the crate root may import anything
        };
        for reference in &scan.refs {
            let to = if modules.contains_key(&reference.target) {
                reference.target.clone()
            } else {
                ROOT.to_string()
            };
            if to != from {
                edges.entry((from.clone(), to)).or_insert_with(|| Example {
                    file: source.shown.clone(),
                    line: reference.line,
                    text: line_text(&source.text, reference.line),
                });
            }
        }
    }
    let edges: Vec<Edge> = edges
        .into_iter()
        .map(|((from, to), example)| Edge { from, to, example })
        .collect();

    let mut problems = Vec::new();
    for component in strongly_connected(&edges) {
        let inside = |module: &String| component.contains(module);
        problems.push(Problem::Loop {
            edges: edges
                .iter()
                .filter(|edge| inside(&edge.from) && inside(&edge.to))
                .cloned()
                .collect(),
            modules: component.into_iter().collect(),
        });
    }
    for edge in &edges {
        let Some(&from_layer) = layers.get(&edge.from) else {
            continue;
        };
        let to_layer = layers.get(&edge.to).copied();
        let upward = match to_layer {
            Some(to_layer) => to_layer > from_layer,
            None => edge.to == ROOT,
        };
        if upward {
            problems.push(Problem::Upward {
                edge: edge.clone(),
                from_layer,
                to_layer,
            });
        }
    }
    for (module, file) in &modules {
        if !layers.contains_key(module) {
            problems.push(Problem::Unplaced {
                module: module.clone(),
                file: file.clone(),
                table: table.to_string(),
            });
        }
    }
    for (source, _) in &code {
        let lines = source.text.lines().count();
        let reason = scan::opening_doc(&source.text)
            .to_lowercase()
            .contains(&LONG_MARKER.to_lowercase());
        if lines > LONG_FILE_LINES && !reason {
            problems.push(Problem::Long {
                file: source.shown.clone(),
                lines,
            });
        }
    }
    problems
}

/// The top-level module a file belongs to; `None` for the crate root (lib.rs, main.rs).
fn top_module(rel: &Path) -> Option<String> {
    let mut components = rel.components();
    let first = components
        .next()?
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    if components.next().is_some() {
        return Some(first);
    }
    match first.strip_suffix(".rs") {
        Some("lib" | "main") => None,
        Some(module) => Some(module.to_string()),
        None => Some(first),
    }
}

/// The directory holding the files of the modules that `rel` declares.
fn child_dir(rel: &Path) -> PathBuf {
    let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
    match rel.file_name().and_then(|name| name.to_str()) {
        Some("mod.rs") => parent,
        Some("lib.rs" | "main.rs") if rel.components().count() == 1 => parent,
        _ => rel.with_extension(""),
    }
}

/// `tests.rs`, `*_tests.rs`, and the files of a `#[cfg(test)] mod name;`.
fn is_test_file(rel: &Path, test_dirs: &[PathBuf]) -> bool {
    let name = rel.file_name().and_then(|name| name.to_str()).unwrap_or("");
    let declared_as_test = test_dirs.iter().any(|dir| {
        rel.starts_with(dir) || rel.with_extension("") == *dir && rel.extension().is_some()
    });
    name == "tests.rs" || name.ends_with("_tests.rs") || declared_as_test
}

fn line_text(text: &str, line: usize) -> String {
    let text = text
        .lines()
        .nth(line.saturating_sub(1))
        .unwrap_or("")
        .trim();
    match text.char_indices().nth(120) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// The cycles of the graph: its strongly connected components of more than one module
/// (Tarjan's algorithm), each sorted, in a stable order.
fn strongly_connected(edges: &[Edge]) -> Vec<BTreeSet<String>> {
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for edge in edges {
        graph.entry(&edge.from).or_default().push(&edge.to);
        graph.entry(&edge.to).or_default();
    }
    struct Tarjan<'a> {
        graph: &'a BTreeMap<&'a str, Vec<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<BTreeSet<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let index = self.index.len();
            self.index.insert(v, index);
            self.low.insert(v, index);
            self.stack.push(v);
            self.on_stack.insert(v);
            for &w in self.graph.get(v).map(Vec::as_slice).unwrap_or(&[]) {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.insert(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut tarjan = Tarjan {
        graph: &graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for &v in graph.keys() {
        if !tarjan.index.contains_key(v) {
            tarjan.visit(v);
        }
    }
    tarjan.found.sort();
    tarjan.found
}

impl fmt::Display for Example {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.text)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Loop { modules, edges } => {
                write!(
                    f,
                    "an import loop among {} (move what they share to a lower module, or drop an edge):",
                    modules.join(", ")
                )?;
                for edge in edges {
                    write!(f, "\n    {} -> {}: {}", edge.from, edge.to, edge.example)?;
                }
                Ok(())
            }
            Problem::Upward {
                edge,
                from_layer,
                to_layer,
            } => {
                let to = match to_layer {
                    Some(layer) => format!("`{}` (layer {layer})", edge.to),
                    None => "an item of the crate root (the top)".to_string(),
                };
                write!(
                    f,
                    "`{}` (layer {from_layer}) imports {to}, a higher layer:\n    {}",
                    edge.from, edge.example
                )
            }
            Problem::Unplaced {
                module,
                file,
                table,
            } => write!(
                f,
                "`{module}` ({file}) is in no layer: add it to the \"Layers\" table of {table}"
            ),
            Problem::Long { file, lines } => write!(
                f,
                "{file} has {lines} lines (over {LONG_FILE_LINES}) and its opening `//!` \
                 block gives no reason (`//! {LONG_MARKER} …`): split it, or say why not"
            ),
        }
    }
}
