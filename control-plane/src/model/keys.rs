//! API keys: generation from the OS RNG, references by raw key or hash, durations.
//! How a key is hashed is the contract crate's (`KeyHash`), shared with the filter.

use std::time::Duration;

/// Every key starts with this, like the LLM proxies operators already use.
pub const KEY_PREFIX: &str = "sk-";
/// Minimum random characters after the prefix (22 × 6 bits > 128 bits of entropy).
pub const MIN_KEY_BODY: usize = 22;
/// Generated keys carry 32 characters: 192 bits.
const GENERATED_BODY: usize = 32;
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub use livegate_contract::KeyHash;

/// Management calls accept the raw key or its hash (64 lowercase hex characters).
pub fn key_hash_of_raw_or_hash(s: &str) -> Option<KeyHash> {
    if s.starts_with(KEY_PREFIX) {
        Some(KeyHash::of_raw(s))
    } else {
        KeyHash::parse_hex(s).ok()
    }
}

/// Why a caller-chosen key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyFormatError {
    #[error("key must start with \"sk-\"")]
    Prefix,
    #[error("key must have at least 22 characters after \"sk-\"")]
    TooShort,
    #[error("key may only contain URL-safe characters (A-Z a-z 0-9 - _)")]
    Charset,
}

/// A new key: `sk-` + 32 URL-safe characters from the OS RNG.
pub fn generate_key() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; GENERATED_BODY];
    getrandom::getrandom(&mut bytes)?;
    // 256 is a multiple of 64, so masking keeps every character equally likely.
    let body: String = bytes
        .iter()
        .map(|b| URL_SAFE[(b & 63) as usize] as char)
        .collect();
    Ok(format!("{KEY_PREFIX}{body}"))
}

/// Checks a caller-chosen key against the same rules generated keys follow.
pub fn validate_key(raw: &str) -> Result<(), KeyFormatError> {
    let body = raw.strip_prefix(KEY_PREFIX).ok_or(KeyFormatError::Prefix)?;
    if body.len() < MIN_KEY_BODY {
        return Err(KeyFormatError::TooShort);
    }
    if !body.bytes().all(|b| URL_SAFE.contains(&b)) {
        return Err(KeyFormatError::Charset);
    }
    Ok(())
}

/// The display name LiteLLM shows for a key: `sk-...` and its last four characters.
pub fn key_name(raw: &str) -> String {
    let tail: String = raw
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("sk-...{tail}")
}

/// Why a duration string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("duration must be a positive number followed by s, m, h or d (e.g. 30s, 30m, 24h, 7d)")]
pub struct DurationError;

/// Parses `30s`, `30m`, `24h`, `7d` (LiteLLM's `duration`).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    let unit_at = s.find(|c: char| !c.is_ascii_digit()).ok_or(DurationError)?;
    let (num, unit) = s.split_at(unit_at);
    let n: u64 = num.parse().map_err(|_| DurationError)?;
    let secs_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(DurationError),
    };
    if n == 0 {
        return Err(DurationError);
    }
    n.checked_mul(secs_per)
        .map(Duration::from_secs)
        .ok_or(DurationError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_prefix_and_enough_url_safe_characters() {
        let k = generate_key().unwrap();
        assert!(k.starts_with("sk-"));
        assert_eq!(k.len(), 3 + 32);
        assert_eq!(validate_key(&k), Ok(()));
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(generate_key().unwrap(), generate_key().unwrap());
    }

    #[test]
    fn management_calls_accept_raw_keys_or_hashes() {
        let raw = "sk-abcdefghijklmnopqrstuvwxyz";
        let h = KeyHash::of_raw(raw);
        assert_eq!(key_hash_of_raw_or_hash(raw), Some(h.clone()));
        assert_eq!(key_hash_of_raw_or_hash(h.as_str()), Some(h));
        assert_eq!(key_hash_of_raw_or_hash("nope"), None);
        assert_eq!(key_hash_of_raw_or_hash(&"A".repeat(64)), None);
    }

    #[test]
    fn caller_chosen_keys_follow_the_rules() {
        assert_eq!(
            validate_key("pk-aaaaaaaaaaaaaaaaaaaaaaaa"),
            Err(KeyFormatError::Prefix)
        );
        assert_eq!(validate_key("sk-short"), Err(KeyFormatError::TooShort));
        assert_eq!(
            validate_key("sk-aaaaaaaaaaaaaaaaaaaaaa!a"),
            Err(KeyFormatError::Charset)
        );
        assert_eq!(validate_key("sk-aaaaaaaaaaaaaaaaaaaaaa"), Ok(()));
    }

    #[test]
    fn key_name_shows_the_last_four_characters() {
        assert_eq!(key_name("sk-abcdefgh1234"), "sk-...1234");
    }

    #[test]
    fn durations_parse_litellm_style() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
    }

    #[test]
    fn bad_durations_are_refused() {
        for s in [
            "",
            "30",
            "s",
            "0s",
            "-1s",
            "1.5h",
            "3w",
            "99999999999999999999d",
            "10 m",
        ] {
            assert_eq!(parse_duration(s), Err(DurationError), "{s}");
        }
    }
}
