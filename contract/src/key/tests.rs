//! The credential rule and key hashing.

use super::*;
use proptest::prelude::*;

fn key(authorization: Option<&str>, x_api_key: Option<&str>) -> Result<ApiKey, CredentialError> {
    ApiKey::from_headers(
        authorization.map(str::as_bytes),
        x_api_key.map(str::as_bytes),
    )
}

fn key_text(authorization: Option<&str>, x_api_key: Option<&str>) -> String {
    match key(authorization, x_api_key) {
        Ok(k) => k.as_str().to_string(),
        Err(e) => panic!("expected a key, got {e:?}"),
    }
}

#[test]
fn a_bearer_token_is_the_key() {
    assert_eq!(key_text(Some("Bearer sk-abc"), None), "sk-abc");
}

#[test]
fn the_bearer_scheme_is_case_insensitive_and_spacing_tolerant() {
    assert_eq!(key_text(Some("bearer   sk-abc "), None), "sk-abc");
    assert_eq!(key_text(Some("BEARER sk-abc"), None), "sk-abc");
}

#[test]
fn x_api_key_is_the_key_when_authorization_is_absent() {
    assert_eq!(key_text(None, Some("sk-xyz")), "sk-xyz");
}

#[test]
fn authorization_wins_over_x_api_key() {
    assert_eq!(key_text(Some("Bearer sk-a"), Some("sk-b")), "sk-a");
}

#[test]
fn no_header_is_a_missing_credential() {
    assert_eq!(key(None, None), Err(CredentialError::Missing));
}

#[test]
fn empty_values_are_refused() {
    assert_eq!(key(Some(""), None), Err(CredentialError::Empty));
    assert_eq!(key(Some("Bearer"), None), Err(CredentialError::Empty));
    assert_eq!(key(Some("Bearer    "), None), Err(CredentialError::Empty));
    assert_eq!(key(None, Some("  ")), Err(CredentialError::Empty));
}

#[test]
fn other_schemes_are_refused_without_falling_back() {
    assert_eq!(
        key(Some("Basic dXNlcjpwdw=="), Some("sk-b")),
        Err(CredentialError::NotBearer)
    );
    assert_eq!(
        key(Some("Bearersk-abc"), None),
        Err(CredentialError::NotBearer)
    );
}

#[test]
fn a_key_with_inner_whitespace_or_control_bytes_is_refused() {
    assert_eq!(
        key(Some("Bearer sk a"), None),
        Err(CredentialError::BadCharacters)
    );
    assert_eq!(
        ApiKey::from_headers(Some(b"Bearer sk-\x00a"), None),
        Err(CredentialError::BadCharacters)
    );
    assert_eq!(
        ApiKey::from_headers(None, Some(b"sk-\xff")),
        Err(CredentialError::BadCharacters)
    );
}

#[test]
fn an_overlong_key_is_refused() {
    let long = "k".repeat(MAX_KEY_LEN + 1);
    assert_eq!(key(None, Some(&long)), Err(CredentialError::TooLong));
    let longest = "k".repeat(MAX_KEY_LEN);
    assert!(key(None, Some(&longest)).is_ok());
}

#[test]
fn the_hash_is_sha256_lowercase_hex() {
    let k = key(None, Some("sk-test")).expect("valid");
    // printf 'sk-test' | sha256sum
    let expected = "f3abf2a6cc4f00987743db5f544ba345b4899ae31f326d8ee9c4816de153c9e0";
    assert_eq!(k.hash().as_str(), expected);
    assert_eq!(k.hash().short(), "f3abf2a6cc4f0098");
    assert_eq!(KeyHash::parse_hex(expected), Ok(k.hash()));
}

#[test]
fn only_64_lowercase_hex_characters_are_a_hash() {
    let upper = "F3ABF2A6CC4F00987743DB5F544BA345B4899AE31F326D8EE9C4816DE153C9E0";
    assert_eq!(KeyHash::parse_hex(upper), Err(NotAKeyHash));
    assert_eq!(KeyHash::parse_hex("abc"), Err(NotAKeyHash));
    assert_eq!(KeyHash::parse_hex(&"g".repeat(64)), Err(NotAKeyHash));
}

#[test]
fn a_hash_travels_as_its_hex_text_and_nothing_else_deserialises() {
    let h = KeyHash::of_raw("abc");
    let json = serde_json::to_string(&h).unwrap();
    // The FIPS 180-2 test vector for "abc".
    assert_eq!(
        json,
        "\"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\""
    );
    assert_eq!(serde_json::from_str::<KeyHash>(&json).unwrap(), h);
    assert!(serde_json::from_str::<KeyHash>("\"sk-not-a-hash\"").is_err());
}

#[test]
fn the_debug_form_never_shows_the_key() {
    let k = key(None, Some("sk-secret")).expect("valid");
    assert!(!format!("{k:?}").contains("secret"));
}

proptest! {
    #[test]
    fn extracting_from_arbitrary_bytes_never_panics(
        auth in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..600)),
        api in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..600)),
    ) {
        if let Ok(k) = ApiKey::from_headers(auth.as_deref(), api.as_deref()) {
            prop_assert!(!k.as_str().is_empty());
            prop_assert!(k.as_str().bytes().all(|b| b.is_ascii_graphic()));
            prop_assert_eq!(k.hash().as_str().len(), 64);
        }
    }

    #[test]
    fn any_visible_key_round_trips_through_bearer(token in "[!-~]{1,512}") {
        let header = format!("Bearer {token}");
        prop_assert_eq!(key_text(Some(&header), None), token);
    }
}
