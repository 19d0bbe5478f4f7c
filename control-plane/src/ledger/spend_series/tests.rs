use super::*;
use livegate_contract::spend::SpendRecord;
use livegate_contract::KeyHash;

fn labels(alias: &str, team: &str, model: &str) -> SeriesLabels {
    SeriesLabels {
        key_alias: alias.into(),
        team: team.into(),
        model: model.into(),
    }
}

fn usage(prompt: u64, completion: u64, cost: f64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        cost,
        ..Usage::default()
    }
}

fn entry(
    alias: Option<&str>,
    team: Option<&str>,
    requested: &str,
    returned: Option<&str>,
) -> LedgerEntry {
    LedgerEntry {
        record: SpendRecord {
            request_id: "r".into(),
            key_hash: KeyHash::of_raw("sk-series"),
            key_alias: alias.map(str::to_owned),
            team_id: team.map(str::to_owned),
            model_requested: Some(requested.into()),
            model_returned: returned.map(str::to_owned),
            deployment: None,
            prompt_tokens: Some(3),
            completion_tokens: None,
            total_tokens: Some(3),
            cached_tokens: None,
            reasoning_tokens: None,
            cache_creation_tokens: None,
            usage_known: true,
            usage_estimate_reason: None,
            status: 200,
            streamed: false,
            start_time_ms: 1,
            end_time_ms: 2,
        },
        cost: 0.5,
        unpriced: false,
        user_id: None,
    }
}

fn rendered(s: &SpendSeries) -> String {
    let mut text = String::new();
    s.render(&mut text);
    text
}

#[test]
fn a_series_sums_the_records_of_its_labels() {
    let mut s = SpendSeries::new(10);
    assert!(!s.add(labels("a", "t", "m"), usage(1, 2, 0.25)));
    assert!(!s.add(labels("a", "t", "m"), usage(10, 20, 0.5)));
    assert!(!s.add(labels("a", "", "m"), usage(5, 5, 1.0)));
    assert_eq!(s.get(&labels("a", "t", "m")), Some(usage(11, 22, 0.75)));
    assert_eq!(s.get(&labels("a", "", "m")), Some(usage(5, 5, 1.0)));
    assert_eq!(s.tracked(), 2);
    assert_eq!(s.folded(), 0);
    assert_eq!(s.get(&labels(OTHER, OTHER, OTHER)), None);
}

#[test]
fn cached_cache_write_and_reasoning_tokens_are_counted_as_kinds_of_their_own() {
    let mut s = SpendSeries::new(10);
    let mut e = entry(Some("a"), Some("t"), "m", None);
    e.record.cached_tokens = Some(2);
    e.record.cache_creation_tokens = Some(1);
    e.record.reasoning_tokens = Some(4);
    s.add(labels("a", "t", "m"), Usage::of(&e));
    s.add(labels("a", "t", "m"), Usage::of(&e));
    let text = rendered(&s);
    for (kind, n) in [
        ("cached", 4),
        ("cache_creation", 2),
        ("reasoning", 8),
        ("prompt", 6),
    ] {
        let line = format!(
            "livegate_spend_tokens_total{{key_alias=\"a\",team=\"t\",model=\"m\",kind=\"{kind}\"}} {n}\n"
        );
        assert!(text.contains(&line), "{line}{text}");
    }
}

#[test]
fn beyond_the_bound_new_triples_fold_into_other_and_known_ones_keep_counting() {
    let mut s = SpendSeries::new(2);
    s.add(labels("a", "", "m"), usage(1, 1, 1.0));
    s.add(labels("b", "", "m"), usage(1, 1, 1.0));
    assert!(s.add(labels("c", "", "m"), usage(2, 3, 0.5)));
    assert!(s.add(labels("d", "", "m"), usage(4, 5, 0.25)));
    assert!(!s.add(labels("a", "", "m"), usage(1, 1, 1.0)));
    assert_eq!(s.tracked(), 2);
    assert_eq!(s.folded(), 2);
    assert_eq!(s.get(&labels("a", "", "m")), Some(usage(2, 2, 2.0)));
    assert_eq!(s.get(&labels("c", "", "m")), None);
    assert_eq!(s.get(&labels(OTHER, OTHER, OTHER)), Some(usage(6, 8, 0.75)));
}

#[test]
fn thousands_of_keys_never_make_more_than_the_bound_plus_other() {
    let mut s = SpendSeries::new(1000);
    for i in 0..5000 {
        s.add(labels(&format!("key-{i}"), "t", "m"), usage(1, 0, 0.0));
    }
    assert_eq!(s.tracked(), 1000);
    assert_eq!(s.folded(), 4000);
    let text = rendered(&s);
    let prompt_lines = text
        .lines()
        .filter(|l| l.contains("kind=\"prompt\""))
        .count();
    assert_eq!(prompt_lines, 1001);
    assert!(text.contains(
        "livegate_spend_tokens_total{key_alias=\"other\",team=\"other\",model=\"other\",kind=\"prompt\"} 4000\n"
    ));
    assert!(text.contains("livegate_spend_series_folded_total 4000\n"));
}

#[test]
fn a_real_triple_reading_other_counts_under_other_without_a_second_series() {
    let mut s = SpendSeries::new(10);
    assert!(!s.add(labels(OTHER, OTHER, OTHER), usage(1, 1, 1.0)));
    assert_eq!(s.tracked(), 0);
    assert_eq!(s.folded(), 0);
    let text = rendered(&s);
    let cost_lines = text
        .lines()
        .filter(|l| l.starts_with("livegate_spend_cost_total{"))
        .count();
    assert_eq!(cost_lines, 1);
}

#[test]
fn a_key_without_alias_is_labelled_by_its_hash_prefix_and_the_model_priced_is_used() {
    let e = entry(None, Some("team-1"), "asked", Some("answered"));
    let hash: String = e.record.key_hash.as_str().chars().take(8).collect();
    assert_eq!(
        SeriesLabels::of(&e),
        labels(&format!("hash:{hash}"), "team-1", "answered")
    );
    let e = entry(Some(""), None, "asked", None);
    assert_eq!(SeriesLabels::of(&e).key_alias, format!("hash:{hash}"));
    assert_eq!(SeriesLabels::of(&e).model, "asked");
    let aliased = entry(Some("al"), None, "x", None);
    assert_eq!(SeriesLabels::of(&aliased).key_alias, "al");
    assert_eq!(Usage::of(&e), usage(3, 0, 0.5));
}

#[test]
fn label_values_are_escaped_for_the_text_format() {
    let mut s = SpendSeries::new(10);
    s.add(labels("a\"b\\c\nd", "", "m"), usage(1, 0, 0.0));
    let text = rendered(&s);
    assert!(text.contains(r#"key_alias="a\"b\\c\nd""#), "{text}");
    assert_eq!(text.lines().filter(|l| l.contains("a\\\"b")).count(), 3);
}

#[test]
fn junk_model_names_are_other_from_the_start_and_never_fill_the_bound() {
    let mut s = SpendSeries::new(3);
    for i in 0..1_000 {
        let mut junk = entry(Some("k"), None, &format!("junk-{i}"), None);
        junk.unpriced = true;
        assert!(!s.add_entry(&junk), "never folded: other from the start");
    }
    assert_eq!(s.tracked(), 1, "one series: (k, \"\", other)");
    assert_eq!(s.folded(), 0);
    assert_eq!(
        s.get(&labels("k", "", OTHER)).map(|u| u.prompt_tokens),
        Some(3_000)
    );
    // A priced model still has its own series.
    assert!(!s.add_entry(&entry(Some("k"), None, "gpt-4o", None)));
    assert_eq!(
        s.get(&labels("k", "", "gpt-4o")).map(|u| u.prompt_tokens),
        Some(3)
    );
}

#[test]
fn estimated_records_are_counted_by_reason() {
    let mut s = SpendSeries::new(10);
    let mut cut = entry(Some("k"), None, "gpt-4o", None);
    cut.record.usage_known = false;
    cut.record.usage_estimate_reason = Some(EstimateReason::ClientDisconnected);
    s.add_entry(&cut);
    s.add_entry(&cut);
    s.add_entry(&entry(Some("k"), None, "gpt-4o", None));
    assert_eq!(s.estimated(EstimateReason::ClientDisconnected), 2);
    let text = rendered(&s);
    assert!(text.contains("livegate_spend_estimated_total{reason=\"client_disconnected\"} 2\n"));
    assert!(text.contains("livegate_spend_estimated_total{reason=\"encoded\"} 0\n"));
    // The tokens of an estimate count like stated ones.
    assert_eq!(
        s.get(&labels("k", "", "gpt-4o")).map(|u| u.prompt_tokens),
        Some(9)
    );
}
