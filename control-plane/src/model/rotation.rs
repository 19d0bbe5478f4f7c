//! Key rotation's one decision: when a regenerated key's old secret stops working.

use chrono::{DateTime, Utc};

use super::keys::{parse_duration, DurationError};

/// When the old secret stops, for a `grace_period` asked at `now`: `None` at once (no
/// grace period, or one of zero: `"0"`, `"0s"`, `"0h"`, …, as LiteLLM reads them), else
/// `now` plus the duration (LiteLLM's grammar, as `duration` and `budget_duration`).
pub fn grace_end(
    now: DateTime<Utc>,
    grace_period: Option<&str>,
) -> Result<Option<DateTime<Utc>>, DurationError> {
    let Some(grace) = grace_period.map(str::trim) else {
        return Ok(None);
    };
    let digits = grace.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    if !digits.is_empty() && digits.bytes().all(|b| b == b'0') {
        // Zero of a unit livegate knows, or a bare zero: no grace at all.
        return match &grace[digits.len()..] {
            "" | "s" | "m" | "h" | "d" => Ok(None),
            _ => Err(DurationError),
        };
    }
    let d = parse_duration(grace)?;
    let d = chrono::Duration::from_std(d).map_err(|_| DurationError)?;
    now.checked_add_signed(d).map(Some).ok_or(DurationError)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn a_grace_period_ends_that_long_after_the_rotation() {
        assert_eq!(grace_end(at(0), Some("24h")), Ok(Some(at(86_400))));
        assert_eq!(grace_end(at(0), Some("3s")), Ok(Some(at(3))));
        assert_eq!(grace_end(at(10), Some(" 2m ")), Ok(Some(at(130))));
        assert_eq!(grace_end(at(0), Some("7d")), Ok(Some(at(7 * 86_400))));
    }

    #[test]
    fn no_grace_period_or_a_zero_one_revokes_the_old_secret_at_once() {
        for zero in [None, Some("0"), Some("0s"), Some("00h"), Some("0d")] {
            assert_eq!(grace_end(at(0), zero), Ok(None), "{zero:?}");
        }
    }

    #[test]
    fn what_is_not_a_duration_is_refused() {
        for bad in ["", "24", "soon", "-1h", "1.5h", "0x", "1w", "24 h", "h"] {
            assert_eq!(grace_end(at(0), Some(bad)), Err(DurationError), "{bad}");
        }
    }

    #[test]
    fn a_grace_period_past_the_calendar_is_refused_not_wrapped() {
        let huge = format!("{}d", u64::MAX / 86_400);
        assert_eq!(grace_end(at(0), Some(&huge)), Err(DurationError));
    }
}
