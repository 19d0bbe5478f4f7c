//! The header edits toward the upstream: the key removed, identities set, spoofed headers dropped.

use super::*;
use proptest::prelude::*;

/// A request with these header names (values are irrelevant to hygiene).
fn names(list: &[&str]) -> RequestHeaders {
    RequestHeaders::new(
        list.iter()
            .map(|s| ((*s).to_string(), b"v".to_vec()))
            .collect(),
    )
}

fn none() -> RequestHeaders {
    RequestHeaders::default()
}

fn hash() -> KeyHash {
    KeyHash::parse_hex("f3abf2a6cc4f00987743db5f544ba345b4899ae31f326d8ee9c4816de153c9e0").unwrap()
}

fn full_identity() -> Identity {
    Identity {
        model_limits: Default::default(),
        key_alias: Some("ci".into()),
        team_id: Some("t1".into()),
        user_id: Some("u1".into()),
        access: Default::default(),
        limits: Default::default(),
    }
}

/// The edits for a request the control plane vouched for, with no upstream credential.
fn identified(request: &RequestHeaders, identity: &Identity, stale: bool) -> HeaderEdits {
    let h = hash();
    let admission = Admission::Identified {
        hash: &h,
        identity,
        stale,
    };
    for_upstream(request, admission, None)
}

fn value<'a>(edits: &'a HeaderEdits, name: &str) -> Option<&'a str> {
    edits
        .set
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn the_clients_key_headers_are_removed_upstream() {
    let request = names(&[":path", "authorization", "x-api-key"]);
    let edits = for_upstream(&request, Admission::FailedOpen, None);
    assert!(edits.remove.contains(&"authorization".to_string()));
    assert!(edits.remove.contains(&"x-api-key".to_string()));
}

#[test]
fn a_header_the_request_lacks_costs_no_removal() {
    let edits = for_upstream(&names(&[":path", "x-api-key"]), Admission::FailedOpen, None);
    assert_eq!(edits.remove, vec!["x-api-key".to_string()]);
}

#[test]
fn client_livegate_headers_are_stripped_upstream() {
    let request = names(&[
        "x-livegate-team-id",
        "X-Livegate-Stale",
        "x-livegatex",
        "accept",
    ]);
    let edits = identified(&request, &full_identity(), false);
    assert!(edits.remove.contains(&"x-livegate-team-id".to_string()));
    assert!(edits.remove.contains(&"x-livegate-stale".to_string()));
    assert!(!edits.remove.contains(&"x-livegatex".to_string()));
    assert!(!edits.remove.contains(&"accept".to_string()));
}

#[test]
fn an_identified_request_carries_identity_and_a_short_hash() {
    let edits = identified(&none(), &full_identity(), false);
    assert_eq!(value(&edits, KEY_ALIAS), Some("ci"));
    assert_eq!(value(&edits, KEY_HASH), Some("f3abf2a6cc4f0098"));
    assert_eq!(value(&edits, TEAM_ID), Some("t1"));
    assert_eq!(value(&edits, USER_ID), Some("u1"));
    assert_eq!(value(&edits, STALE), None);
    assert_eq!(value(&edits, "authorization"), None);
}

#[test]
fn absent_identity_fields_add_no_header() {
    let edits = identified(&none(), &Identity::default(), false);
    assert_eq!(edits.set, vec![(KEY_HASH, "f3abf2a6cc4f0098".to_string())]);
}

#[test]
fn a_stale_allow_is_marked() {
    assert_eq!(
        value(&identified(&none(), &full_identity(), true), STALE),
        Some("true")
    );
}

#[test]
fn a_failed_open_request_is_marked_and_carries_no_identity() {
    let edits = for_upstream(&none(), Admission::FailedOpen, None);
    assert_eq!(edits.set, vec![(FAILURE_MODE, "open".to_string())]);
}

#[test]
fn a_configured_upstream_authorization_replaces_the_clients() {
    let edits = for_upstream(
        &names(&["authorization"]),
        Admission::FailedOpen,
        Some("Bearer up"),
    );
    assert!(edits.remove.contains(&"authorization".to_string()));
    assert_eq!(value(&edits, "authorization"), Some("Bearer up"));
}

#[test]
fn passthrough_keeps_credentials_but_strips_livegate_headers() {
    let request = names(&["authorization", "x-api-key", "x-livegate-key-hash"]);
    let edits = for_passthrough(&request);
    assert_eq!(edits.remove, vec!["x-livegate-key-hash".to_string()]);
    assert!(edits.set.is_empty());
}

#[test]
fn identities_outside_printable_ascii_travel_percent_encoded() {
    assert_eq!(header_encoded("team-1 a"), "team-1 a");
    assert_eq!(header_encoded("équipe"), "%C3%A9quipe");
    assert_eq!(header_encoded("50%"), "50%25");
    assert_eq!(header_encoded("a\r\nx: y"), "a%0D%0Ax: y");
    let identity = Identity {
        model_limits: Default::default(),
        team_id: Some("研究".into()),
        ..full_identity()
    };
    let edits = identified(&none(), &identity, false);
    assert_eq!(value(&edits, TEAM_ID), Some("%E7%A0%94%E7%A9%B6"));
}

proptest! {
    #[test]
    fn an_encoded_identity_is_always_a_clean_header_value(id in "\\PC{0,40}") {
        let encoded = header_encoded(&id);
        prop_assert!(encoded.bytes().all(|b| b == b' ' || b.is_ascii_graphic()));
    }

    #[test]
    fn no_client_livegate_header_survives(request in proptest::collection::vec("[a-zA-Z:-]{0,24}", 0..12)) {
        let list: Vec<&str> = request.iter().map(String::as_str).collect();
        let edits = for_passthrough(&names(&list));
        for name in &request {
            if name.to_ascii_lowercase().starts_with(LIVEGATE_PREFIX) {
                prop_assert!(edits.remove.contains(&name.to_ascii_lowercase()));
            }
        }
    }

    #[test]
    fn no_client_key_travels_upstream(request in proptest::collection::vec("authorization|x-api-key|accept|x-livegate-[a-z]{1,6}", 0..8)) {
        let list: Vec<&str> = request.iter().map(String::as_str).collect();
        let edits = for_upstream(&names(&list), Admission::FailedOpen, None);
        for name in &request {
            if CREDENTIAL_HEADERS.contains(&name.as_str()) {
                prop_assert!(edits.remove.contains(name));
            }
        }
        prop_assert!(edits.set.iter().all(|(n, _)| !CREDENTIAL_HEADERS.contains(n)));
    }
}
