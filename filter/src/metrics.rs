//! The filter's counters: one name each, defined once per VM by the root context.

/// Every counter the filter increments. Envoy shows them in `/stats/prometheus` under
/// exactly these names (it registers Wasm stats in its `wasmcustom` namespace and
/// strips that prefix there), and in `/stats` as `wasmcustom.<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    LivenessServed,
    Allowed,
    DeniedMissingCredential,
    DeniedInvalidKey,
    DeniedKeyBlocked,
    DeniedKeyExpired,
    DeniedTeamBlocked,
    DeniedBudgetExceeded,
    DeniedRateLimited,
    /// Of those, refused by the worker's own limit while no control plane answered.
    RateLimitedLocal,
    DeniedSpendSpoolFull,
    DeniedModel,
    CacheHit,
    /// Of the cache hits, a rate-limited key admitted from a control plane's lease.
    CacheLeased,
    CacheMiss,
    StaleServed,
    ControlPlaneError,
    Unavailable,
    FailedOpen,
    HeaderRewriteFailed,
    SpoofedTrailerRemoved,
    ChangesApplied,
    ChangeFeedError,
    SpendRecordsQueued,
    SpendRecordsSent,
    SpendRecordsAcknowledged,
    SpendRecordsRetried,
    SpendRecordsDropped,
    SpendRecordsSkipped,
    ResponsesWithoutUsage,
    UsageOversized,
    UsageMalformed,
    IncludeUsageAdded,
    IncludeUsageOverridden,
    UsageEstimated,
    /// A request path the filter could not normalise safely (answered 400).
    DeniedBadPath,
    /// A worker found changes missing between the last it applied and the shared window's
    /// oldest: it forgot its cached allows.
    ChangeFeedGap,
    /// A request whose key was being checked, answered 503 because the worker held its
    /// budget of such bodies (`max_unverified_body_bytes`).
    UnverifiedBodyShed,
}

impl Metric {
    /// In definition order; `index()` is the position here.
    pub const ALL: [Metric; 38] = [
        Metric::LivenessServed,
        Metric::Allowed,
        Metric::DeniedMissingCredential,
        Metric::DeniedInvalidKey,
        Metric::DeniedKeyBlocked,
        Metric::DeniedKeyExpired,
        Metric::DeniedTeamBlocked,
        Metric::DeniedBudgetExceeded,
        Metric::DeniedRateLimited,
        Metric::RateLimitedLocal,
        Metric::DeniedSpendSpoolFull,
        Metric::DeniedModel,
        Metric::CacheHit,
        Metric::CacheLeased,
        Metric::CacheMiss,
        Metric::StaleServed,
        Metric::ControlPlaneError,
        Metric::Unavailable,
        Metric::FailedOpen,
        Metric::HeaderRewriteFailed,
        Metric::SpoofedTrailerRemoved,
        Metric::ChangesApplied,
        Metric::ChangeFeedError,
        Metric::SpendRecordsQueued,
        Metric::SpendRecordsSent,
        Metric::SpendRecordsAcknowledged,
        Metric::SpendRecordsRetried,
        Metric::SpendRecordsDropped,
        Metric::SpendRecordsSkipped,
        Metric::ResponsesWithoutUsage,
        Metric::UsageOversized,
        Metric::UsageMalformed,
        Metric::IncludeUsageAdded,
        Metric::IncludeUsageOverridden,
        Metric::UsageEstimated,
        Metric::DeniedBadPath,
        Metric::ChangeFeedGap,
        Metric::UnverifiedBodyShed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::LivenessServed => "livegate_liveness_served_total",
            Metric::Allowed => "livegate_allowed_total",
            Metric::DeniedMissingCredential => "livegate_denied_missing_credential_total",
            Metric::DeniedInvalidKey => "livegate_denied_invalid_key_total",
            Metric::DeniedKeyBlocked => "livegate_denied_key_blocked_total",
            Metric::DeniedKeyExpired => "livegate_denied_key_expired_total",
            Metric::DeniedTeamBlocked => "livegate_denied_team_blocked_total",
            Metric::DeniedBudgetExceeded => "livegate_denied_budget_exceeded_total",
            Metric::DeniedRateLimited => "livegate_denied_rate_limited_total",
            Metric::RateLimitedLocal => "livegate_rate_limited_local_total",
            Metric::DeniedSpendSpoolFull => "livegate_denied_spend_spool_full_total",
            Metric::DeniedModel => "livegate_denied_model_total",
            Metric::CacheHit => "livegate_cache_hit_total",
            Metric::CacheLeased => "livegate_cache_leased_total",
            Metric::CacheMiss => "livegate_cache_miss_total",
            Metric::StaleServed => "livegate_stale_served_total",
            Metric::ControlPlaneError => "livegate_control_plane_error_total",
            Metric::Unavailable => "livegate_unavailable_total",
            Metric::FailedOpen => "livegate_failed_open_total",
            Metric::HeaderRewriteFailed => "livegate_header_rewrite_failed_total",
            Metric::SpoofedTrailerRemoved => "livegate_spoofed_trailers_removed_total",
            Metric::ChangesApplied => "livegate_changes_applied_total",
            Metric::ChangeFeedError => "livegate_change_feed_errors_total",
            Metric::SpendRecordsQueued => "livegate_spend_records_queued_total",
            Metric::SpendRecordsSent => "livegate_spend_records_sent_total",
            Metric::SpendRecordsAcknowledged => "livegate_spend_records_acknowledged_total",
            Metric::SpendRecordsRetried => "livegate_spend_records_retried_total",
            Metric::SpendRecordsDropped => "livegate_spend_records_dropped_total",
            Metric::SpendRecordsSkipped => "livegate_spend_records_skipped_total",
            Metric::ResponsesWithoutUsage => "livegate_responses_without_usage_total",
            Metric::UsageOversized => "livegate_usage_oversized_total",
            Metric::UsageMalformed => "livegate_usage_malformed_total",
            Metric::IncludeUsageAdded => "livegate_include_usage_added_total",
            Metric::IncludeUsageOverridden => "livegate_include_usage_overridden_total",
            Metric::UsageEstimated => "livegate_usage_estimated_total",
            Metric::DeniedBadPath => "livegate_denied_bad_path_total",
            Metric::ChangeFeedGap => "livegate_change_feed_gaps_total",
            Metric::UnverifiedBodyShed => "livegate_unverified_body_shed_total",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_sits_at_its_own_index() {
        for (i, metric) in Metric::ALL.iter().enumerate() {
            assert_eq!(metric.index(), i);
        }
    }

    #[test]
    fn names_are_prometheus_safe_and_unique() {
        let mut names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        for name in &names {
            assert!(name.starts_with("livegate_") && name.ends_with("_total"));
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Metric::ALL.len());
    }
}
