use std::collections::BTreeMap;
use std::path::PathBuf;

use super::rules::{self, Problem, Source};
use super::{scan, table};

fn targets(source: &str) -> Vec<String> {
    scan::file(source)
        .refs
        .into_iter()
        .map(|reference| reference.target)
        .collect()
}

fn sources(files: &[(&str, &str)]) -> Vec<Source> {
    files
        .iter()
        .map(|(rel, text)| Source {
            rel: PathBuf::from(rel),
            shown: format!("demo/src/{rel}"),
            text: text.to_string(),
        })
        .collect()
}

fn layers(rows: &[(&str, u32)]) -> BTreeMap<String, u32> {
    rows.iter()
        .map(|(module, layer)| (module.to_string(), *layer))
        .collect()
}

fn check(files: &[(&str, &str)], rows: &[(&str, u32)]) -> Vec<Problem> {
    rules::check(&sources(files), &layers(rows), "docs/architecture.md")
}

const ROOT: (&str, &str) = ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n");

#[test]
fn paths_and_use_groups_name_their_top_level_modules() {
    let source = "use crate::a::X;\nuse crate::{b::{Y, Z}, c, self};\nfn f() { crate::d::g(); }\nuse crate::e as f;\n";
    assert_eq!(targets(source), ["a", "b", "c", "d", "e"]);
}

#[test]
fn comments_literals_and_macro_paths_are_not_imports() {
    let source = r####"
// use crate::a::X;
/* crate::b /* nested crate::c */ still a comment crate::d */
//! crate::e
const S: &str = "crate::f { \" crate::g";
const R: &str = r#"crate::h "{" "#;
const C: char = '{';
const Q: char = '\'';
fn f<'a>(x: &'a str) -> &'a str { x }
macro_rules! m { () => { $crate::i::j() }; }
pub(crate) fn k() { crate::real::f() }
"####;
    assert_eq!(targets(source), ["real"]);
}

#[test]
fn a_cfg_test_item_is_skipped_and_a_test_module_file_recorded() {
    let source = "use crate::a::X;\n#[cfg(test)]\nmod tests {\n    use crate::b::Y;\n    fn f() { let s = \"}\"; }\n}\n#[cfg(test)]\nmod mock;\n#[cfg(not(test))]\nuse crate::c::Z;\n#[cfg(test)]\nuse crate::{d::W};\nfn g() { crate::e::h() }\n";
    let scan = scan::file(source);
    let found: Vec<(String, usize)> = scan
        .refs
        .into_iter()
        .map(|reference| (reference.target, reference.line))
        .collect();
    assert_eq!(found, [("a".into(), 1), ("c".into(), 10), ("e".into(), 13)]);
    assert_eq!(scan.test_mods, ["mock"]);
}

#[test]
fn an_import_loop_is_reported_with_one_use_line_per_edge() {
    let problems = check(
        &[
            ROOT,
            ("a.rs", "//! A.\nuse crate::b::B;\n"),
            ("b/mod.rs", "mod inner;\n"),
            ("b/inner.rs", "fn f() {}\nuse crate::a::A;\n"),
            ("c.rs", "use crate::a::A;\n"),
        ],
        &[("a", 1), ("b", 1), ("c", 2)],
    );
    let [Problem::Loop { modules, edges }] = problems.as_slice() else {
        panic!("{problems:?}");
    };
    assert_eq!(modules, &["a", "b"]);
    let shown: Vec<String> = edges
        .iter()
        .map(|edge| format!("{} -> {}: {}", edge.from, edge.to, edge.example))
        .collect();
    assert_eq!(
        shown,
        [
            "a -> b: demo/src/a.rs:2: use crate::b::B;",
            "b -> a: demo/src/b/inner.rs:2: use crate::a::A;",
        ]
    );
}

#[test]
fn an_import_of_a_higher_layer_is_reported_and_a_lower_or_same_one_is_not() {
    let problems = check(
        &[
            ROOT,
            ("a.rs", "use crate::c::C;\nuse crate::b::B;\n"),
            ("b.rs", ""),
            ("c.rs", "use crate::b::B;\n"),
        ],
        &[("a", 1), ("b", 1), ("c", 2)],
    );
    let [Problem::Upward {
        edge,
        from_layer: 1,
        to_layer: Some(2),
    }] = problems.as_slice()
    else {
        panic!("{problems:?}");
    };
    assert_eq!((edge.from.as_str(), edge.to.as_str()), ("a", "c"));
    assert_eq!(
        edge.example.to_string(),
        "demo/src/a.rs:1: use crate::c::C;"
    );
}

#[test]
fn a_module_using_an_item_of_the_crate_root_imports_upward() {
    let problems = check(
        &[
            ("lib.rs", "pub mod a;\npub struct Top;\n"),
            ("a.rs", "use crate::Top;\n"),
        ],
        &[("a", 1)],
    );
    assert!(
        matches!(problems.as_slice(), [Problem::Upward { edge, to_layer: None, .. }] if edge.to == rules::ROOT),
        "{problems:?}"
    );
}

#[test]
fn the_crate_root_and_a_module_s_own_files_import_freely() {
    let problems = check(
        &[
            ("lib.rs", "pub mod a;\npub mod b;\nuse crate::b::B;\n"),
            ("main.rs", "use crate::a::A;\n"),
            ("a.rs", "mod inner;\nuse crate::a::inner::I;\n"),
            ("a/inner.rs", "use crate::a::A;\n"),
            ("b.rs", "use crate::a::A;\n"),
        ],
        &[("a", 1), ("b", 2)],
    );
    assert_eq!(problems, []);
}

#[test]
fn test_files_are_not_part_of_the_graph() {
    let problems = check(
        &[
            ROOT,
            (
                "a.rs",
                "#[cfg(test)]\nmod mock;\n#[cfg(test)]\nmod tests;\n",
            ),
            ("a/tests.rs", "use crate::b::B;\n"),
            ("a/mock.rs", "use crate::b::B;\n"),
            ("a/flow_tests.rs", "use crate::b::B;\n"),
            ("b.rs", "use crate::a::A;\n"),
        ],
        &[("a", 1), ("b", 2)],
    );
    assert_eq!(problems, []);
}

#[test]
fn a_module_in_no_layer_is_reported_with_the_table_s_file() {
    let problems = check(&[ROOT, ("a.rs", ""), ("b/mod.rs", "")], &[("a", 1)]);
    assert_eq!(
        problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["`b` (demo/src/b/mod.rs) is in no layer: add it to the \"Layers\" table of docs/architecture.md"]
    );
}

#[test]
fn a_long_file_needs_a_reason_in_its_opening_comment() {
    let body = "fn f() {}\n".repeat(rules::LONG_FILE_LINES);
    let without = format!("//! Does a thing.\n{body}");
    let with =
        format!("//! Does a thing.\n//! Long because: one table, read top to bottom.\n{body}");
    let just_short = "fn f() {}\n".repeat(rules::LONG_FILE_LINES);
    let late_reason = format!("//! Does a thing.\n{body}// Long because: too late.\n");
    let problems = check(
        &[
            ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\npub mod d;\n"),
            ("a.rs", &without),
            ("b.rs", &with),
            ("c.rs", &just_short),
            ("d.rs", &late_reason),
        ],
        &[("a", 1), ("b", 1), ("c", 1), ("d", 1)],
    );
    let long: Vec<(&str, usize)> = problems
        .iter()
        .map(|problem| match problem {
            Problem::Long { file, lines } => (file.as_str(), *lines),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(long, [("demo/src/a.rs", 501), ("demo/src/d.rs", 502)]);
}

const TABLE: &str = "# T\n\n## Layers\n\nProse.\n\n| crate | layer | modules | why |\n|---|---|---|---|\n| filter | 1 | `path`, `bounded` | leaves |\n| `filter` | 2 | `flow` | top |\n| contract | 1 | `key` | |\n\n## Next\n\n| x | 1 | `not_a_layer` |\n";

#[test]
fn the_layers_table_is_read_under_its_heading_only() {
    let layers = table::parse(TABLE).unwrap();
    let filter = &layers.0["filter"];
    assert_eq!(
        filter
            .iter()
            .map(|(m, l)| (m.as_str(), *l))
            .collect::<Vec<_>>(),
        [("bounded", 1), ("flow", 2), ("path", 1)]
    );
    assert_eq!(layers.0.keys().collect::<Vec<_>>(), ["contract", "filter"]);
}

#[test]
fn a_bad_layers_table_is_refused_with_the_row_named() {
    let twice = TABLE.replace("`flow` |", "`flow`, `path` |");
    let error = format!("{:#}", table::parse(&twice).unwrap_err());
    assert!(
        error.contains("`path` is in layer 1 and in layer 2"),
        "{error}"
    );
    assert!(error.contains("line 10"), "{error}");
    let not_a_number = TABLE.replace("| 2 |", "| two |");
    let error = format!("{:#}", table::parse(&not_a_number).unwrap_err());
    assert!(error.contains("\"two\" is not a number"), "{error}");
    let error = format!("{:#}", table::parse("# T\n\nno table\n").unwrap_err());
    assert!(error.contains("no \"## Layers\" section"), "{error}");
}

#[test]
fn the_docs_declare_layers_for_every_checked_crate() {
    let path = livegate_tests::artifacts::workspace_root().join(super::TABLE_FILE);
    let layers = table::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(layers.0.keys().map(String::as_str).collect::<Vec<_>>(), {
        let mut crates = super::CRATES.to_vec();
        crates.sort();
        crates
    });
}

#[test]
fn the_scanner_is_total_on_unfinished_sources() {
    for source in [
        "",
        "crate",
        "crate::",
        "use crate::{a, ",
        "\"unterminated",
        "r#\"raw",
        "/* open",
        "'",
        "#[cfg(test)]",
        "#[cfg(test)] mod tests {",
        "#[",
        "}}}} crate::a",
    ] {
        let _ = scan::file(source);
    }
    assert_eq!(targets("}}}} crate::a"), ["a"]);
}
