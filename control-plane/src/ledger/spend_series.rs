//! Tokens and spend by (key alias, team, model), with a bound on the number of series.
//!
//! Prometheus keeps every label combination it ever saw; one series per key would grow
//! without end. [`SpendSeries`] tracks at most `max` distinct (key alias, team, model)
//! triples, first come first kept; every record of a triple beyond them is added to one
//! series labelled `other` (all three labels) and counted as folded. A model the price
//! table does not know is labelled `other` from the start: a client's junk model names
//! (on error answers, say) cannot fill the bound. It also counts the drained records whose
//! counts are estimates, by reason. Pure: no clock, no randomness, natively tested.

use std::collections::BTreeMap;
use std::fmt::Write;

use livegate_contract::EstimateReason;

use crate::model::LedgerEntry;

/// The label value of the series that takes what the bound leaves out.
pub const OTHER: &str = "other";

/// The default bound on (key alias, team, model) series (`--spend-metrics-max-series`).
pub const DEFAULT_MAX_SERIES: usize = 1000;

/// One series' labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeriesLabels {
    pub key_alias: String,
    pub team: String,
    pub model: String,
}

impl SeriesLabels {
    /// A drained record's labels: its key alias, else `hash:` and the first 8 hex digits of
    /// its key hash (not a credential, and what `/spend/logs` shows in full); its team id or
    /// `""`; the model returned, else the one requested (the one priced), `""` when it
    /// names none, and [`OTHER`] when the price table does not know it (`unpriced`).
    pub fn of(entry: &LedgerEntry) -> SeriesLabels {
        let r = &entry.record;
        let key_alias = match r.key_alias.as_deref().filter(|a| !a.is_empty()) {
            Some(alias) => alias.to_string(),
            None => format!(
                "hash:{}",
                r.key_hash.as_str().chars().take(8).collect::<String>()
            ),
        };
        let model = r.model_returned.as_deref().or(r.model_requested.as_deref());
        let model = match model {
            None => "",
            Some(_) if entry.unpriced => OTHER,
            Some(name) => name,
        };
        SeriesLabels {
            key_alias,
            team: r.team_id.clone().unwrap_or_default(),
            model: model.to_string(),
        }
    }

    fn other() -> SeriesLabels {
        SeriesLabels {
            key_alias: OTHER.into(),
            team: OTHER.into(),
            model: OTHER.into(),
        }
    }
}

/// What one record adds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Of the prompt tokens, read from a provider's cache.
    pub cached_tokens: u64,
    /// Of the prompt tokens, written to a provider's cache.
    pub cache_creation_tokens: u64,
    /// Of the completion tokens, spent reasoning.
    pub reasoning_tokens: u64,
    /// USD.
    pub cost: f64,
}

impl Usage {
    pub fn of(entry: &LedgerEntry) -> Usage {
        Usage {
            prompt_tokens: entry.record.prompt_tokens.unwrap_or(0),
            completion_tokens: entry.record.completion_tokens.unwrap_or(0),
            cached_tokens: entry.record.cached_tokens.unwrap_or(0),
            cache_creation_tokens: entry.record.cache_creation_tokens.unwrap_or(0),
            reasoning_tokens: entry.record.reasoning_tokens.unwrap_or(0),
            cost: entry.cost,
        }
    }

    fn add(&mut self, u: Usage) {
        self.prompt_tokens = self.prompt_tokens.saturating_add(u.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(u.completion_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(u.cached_tokens);
        self.cache_creation_tokens = self
            .cache_creation_tokens
            .saturating_add(u.cache_creation_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(u.reasoning_tokens);
        self.cost += u.cost;
    }
}

/// The bounded map of series.
#[derive(Debug)]
pub struct SpendSeries {
    max: usize,
    series: BTreeMap<SeriesLabels, Usage>,
    other: Option<Usage>,
    folded: u64,
    /// Records whose counts are estimates, by reason.
    estimated: BTreeMap<EstimateReason, u64>,
}

impl SpendSeries {
    pub fn new(max: usize) -> SpendSeries {
        SpendSeries {
            max,
            series: BTreeMap::new(),
            other: None,
            folded: 0,
            estimated: BTreeMap::new(),
        }
    }

    /// Adds a drained record: its usage to its series, and its estimate's reason if any.
    pub fn add_entry(&mut self, entry: &LedgerEntry) -> bool {
        if let Some(reason) = entry.record.usage_estimate_reason {
            *self.estimated.entry(reason).or_default() += 1;
        }
        self.add(SeriesLabels::of(entry), Usage::of(entry))
    }

    /// Drained records estimated for `reason`.
    pub fn estimated(&self, reason: EstimateReason) -> u64 {
        self.estimated.get(&reason).copied().unwrap_or(0)
    }

    /// Adds a record's usage to its series, or to `other` when the bound is reached (a triple
    /// that reads exactly `other`, `other`, `other` always goes there, so no two series share
    /// labels). Returns whether it was folded.
    pub fn add(&mut self, labels: SeriesLabels, usage: Usage) -> bool {
        let is_other = labels == SeriesLabels::other();
        if !is_other {
            if let Some(u) = self.series.get_mut(&labels) {
                u.add(usage);
                return false;
            }
            if self.series.len() < self.max {
                self.series.insert(labels, usage);
                return false;
            }
            self.folded += 1;
        }
        self.other.get_or_insert_with(Usage::default).add(usage);
        !is_other
    }

    /// Series tracked by their own labels (`other` not included).
    pub fn tracked(&self) -> usize {
        self.series.len()
    }

    /// Records added to `other` because the bound was reached.
    pub fn folded(&self) -> u64 {
        self.folded
    }

    /// The usage counted under these labels (`other`'s with [`OTHER`] in all three).
    pub fn get(&self, labels: &SeriesLabels) -> Option<Usage> {
        if *labels == SeriesLabels::other() {
            return self.other;
        }
        self.series.get(labels).copied()
    }

    /// The Prometheus text of the token, cost and folded counters.
    pub fn render(&self, out: &mut String) {
        let all = || {
            self.series
                .iter()
                .map(|(l, u)| (l.clone(), *u))
                .chain(self.other.map(|u| (SeriesLabels::other(), u)))
        };
        let _ = writeln!(
            out,
            "# HELP livegate_spend_tokens_total Tokens of drained spend records by key alias, team, model and kind.\n# TYPE livegate_spend_tokens_total counter"
        );
        for (l, u) in all() {
            let labels = render_labels(&l);
            for (kind, v) in [
                ("prompt", u.prompt_tokens),
                ("completion", u.completion_tokens),
                // Parts of the two above (issue 25), once any was stated: a series of a
                // model without caches or reasoning stays two lines.
                ("cached", u.cached_tokens),
                ("cache_creation", u.cache_creation_tokens),
                ("reasoning", u.reasoning_tokens),
            ]
            .into_iter()
            .filter(|(kind, v)| *v > 0 || matches!(*kind, "prompt" | "completion"))
            {
                let _ = writeln!(
                    out,
                    "livegate_spend_tokens_total{{{labels},kind=\"{kind}\"}} {v}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP livegate_spend_cost_total Cost (USD) of drained spend records by key alias, team and model.\n# TYPE livegate_spend_cost_total counter"
        );
        for (l, u) in all() {
            let _ = writeln!(
                out,
                "livegate_spend_cost_total{{{}}} {}",
                render_labels(&l),
                u.cost
            );
        }
        let _ = writeln!(
            out,
            "# HELP livegate_spend_series_folded_total Spend records counted under the series labelled other because the series bound was reached.\n# TYPE livegate_spend_series_folded_total counter\nlivegate_spend_series_folded_total {}",
            self.folded
        );
        let _ = writeln!(
            out,
            "# HELP livegate_spend_estimated_total Drained spend records whose token counts are estimates (usage not stated readably), by reason.\n# TYPE livegate_spend_estimated_total counter"
        );
        for reason in EstimateReason::ALL {
            let _ = writeln!(
                out,
                "livegate_spend_estimated_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                self.estimated(reason)
            );
        }
    }
}

fn render_labels(l: &SeriesLabels) -> String {
    format!(
        "key_alias=\"{}\",team=\"{}\",model=\"{}\"",
        escape(&l.key_alias),
        escape(&l.team),
        escape(&l.model)
    )
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
