//! Writes a generated section of `docs/benchmarks.md` between its markers.

/// Replaces the text between `<!-- {name}:begin -->` and `<!-- {name}:end -->`,
/// appending the section when the markers are not there yet.
pub fn replace_section(document: &str, name: &str, body: &str) -> String {
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let section = format!("{begin}\n{body}\n{end}");
    match (document.find(&begin), document.find(&end)) {
        (Some(start), Some(stop)) if stop > start => {
            format!(
                "{}{section}{}",
                &document[..start],
                &document[stop + end.len()..]
            )
        }
        _ => format!("{}\n{section}\n", document.trim_end()),
    }
}

/// Rewrites the section in `docs/benchmarks.md`.
pub fn update_benchmarks_doc(name: &str, body: &str) -> anyhow::Result<()> {
    let path = livegate_tests::artifacts::workspace_root().join("docs/benchmarks.md");
    let current = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".to_string());
    std::fs::write(&path, replace_section(&current, name, body))?;
    eprintln!("==> wrote the {name} section of {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_between_markers_is_replaced_and_the_rest_kept() {
        let doc = "intro\n<!-- x:begin -->\nold\n<!-- x:end -->\noutro\n";
        let out = replace_section(doc, "x", "new");
        assert_eq!(out, "intro\n<!-- x:begin -->\nnew\n<!-- x:end -->\noutro\n");
    }

    #[test]
    fn a_missing_section_is_appended() {
        let out = replace_section("# Benchmarks\n", "y", "table");
        assert_eq!(
            out,
            "# Benchmarks\n<!-- y:begin -->\ntable\n<!-- y:end -->\n"
        );
    }
}
