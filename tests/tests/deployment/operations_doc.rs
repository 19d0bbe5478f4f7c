//! docs/operations.md is the configuration reference: complete and true to the code.

use livegate_filter::config::Config as FilterConfig;

use super::support::*;

#[test]
fn operations_md_documents_every_control_plane_flag_with_its_variable_and_default() {
    let doc = read("docs/operations.md");
    let flags = control_plane_flags();
    assert!(flags.len() >= 5, "{flags:?}");
    for flag in flags {
        let row = doc
            .lines()
            .find(|line| line.starts_with(&format!("| `{}` |", flag.long)))
            .unwrap_or_else(|| panic!("docs/operations.md has no row for {}", flag.long));
        assert!(
            row.contains(&format!("`{}`", flag.env)),
            "{}: the row does not name {}",
            flag.long,
            flag.env
        );
        let default = row.split('|').nth(3).unwrap_or_default().trim();
        match &flag.default {
            Some(value) => assert_eq!(default, format!("`{value}`"), "{}", flag.long),
            None => assert!(!default.is_empty(), "{}: no default documented", flag.long),
        }
    }
}

#[test]
fn operations_md_documents_the_filters_fields_with_the_parsers_defaults() {
    let doc = read("docs/operations.md");
    let section = doc
        .split("### The filter")
        .nth(1)
        .expect("a section on the filter's configuration");
    let json = section
        .split("```json")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a JSON block of the defaults");
    assert_eq!(
        FilterConfig::parse(Some(json.as_bytes())),
        Ok(FilterConfig::default()),
        "the documented defaults are not the parser's"
    );
    for field in filter_config_fields() {
        assert!(
            section.contains(&format!("| `{field}` |")),
            "docs/operations.md has no row for the filter field {field}"
        );
    }
}

#[test]
fn operations_md_explains_every_metric_the_filter_and_the_control_plane_export() {
    let doc = read("docs/operations.md");
    let mut names: Vec<String> = livegate_filter::metrics::Metric::ALL
        .iter()
        .map(|metric| metric.name().to_string())
        .collect();
    names.extend(control_plane_metric_names());
    assert!(names.len() >= 20, "{names:?}");
    for name in names {
        assert!(
            doc.contains(&format!("| `{name}` |")) || doc.contains(&format!("| `{name}{{")),
            "docs/operations.md does not explain {name}"
        );
    }
}
