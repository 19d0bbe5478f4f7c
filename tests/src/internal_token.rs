//! The internal API's shared token of this test process: generated once, handed to every
//! control plane and Envoy the harness starts, so tests never have to think of it.

use std::sync::OnceLock;

/// The header the filter sends it in (the contract's `headers::INTERNAL_TOKEN`).
pub const HEADER: &str = "x-livegate-internal-token";
/// The variable both processes read it from.
pub const ENV: &str = "LIVEGATE_INTERNAL_TOKEN";

/// 32 random bytes as hex, the same for every process this test binary starts.
pub fn internal_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let mut bytes = [0u8; 32];
        let random = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
        if random.is_err() {
            // Never a fixed value: at worst the clock and the pid, still no placeholder.
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
                ^ u128::from(std::process::id());
            bytes[..16].copy_from_slice(&seed.to_le_bytes());
        }
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    })
}

/// The header pair that makes a call an internal one, for tests that play the filter.
pub fn header() -> (&'static str, &'static str) {
    (HEADER, internal_token())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_stable_within_a_process_and_long_enough() {
        let token = internal_token();
        assert_eq!(token, internal_token());
        assert_eq!(token.len(), 64);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
