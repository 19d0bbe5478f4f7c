//! Path normalisation: every spelling of a path to the one the filter decides on.

use super::*;
use proptest::prelude::*;

fn normal(raw: &str) -> String {
    normalize(raw).unwrap().full()
}

#[test]
fn an_escaped_slash_in_either_case_is_a_slash() {
    assert_eq!(normal("/v1/chat%2Fcompletions"), "/v1/chat/completions");
    assert_eq!(normal("/v1/chat%2fcompletions"), "/v1/chat/completions");
    assert_eq!(
        normal("/v1%2Fchat%2Fcompletions?x=%2F"),
        "/v1/chat/completions?x=%2F"
    );
}

#[test]
fn duplicate_slashes_and_dot_segments_go() {
    assert_eq!(normal("//v1/chat/completions"), "/v1/chat/completions");
    assert_eq!(normal("/v1/./chat/completions"), "/v1/chat/completions");
    assert_eq!(normal("/v1/x/../chat//completions"), "/v1/chat/completions");
    assert_eq!(
        normal("/v1/%2E/chat/%2e%2E/chat/completions"),
        "/v1/chat/completions"
    );
    assert_eq!(normal("/../../v1/models"), "/v1/models");
    assert_eq!(
        normal("/key/..%2Fv1/chat/completions"),
        "/v1/chat/completions"
    );
}

#[test]
fn backslashes_are_slashes() {
    assert_eq!(normal("/v1\\chat%5Ccompletions"), "/v1/chat/completions");
}

#[test]
fn unreserved_escapes_are_decoded_and_others_kept_in_upper_case() {
    assert_eq!(normal("/v1/ch%61t/completions"), "/v1/chat/completions");
    assert_eq!(normal("/a%3fb%c3%a9"), "/a%3Fb%C3%A9");
    // Never decoded twice: `%252F` is a percent sign and `2F`, not a slash.
    assert_eq!(
        normal("/v1/chat%252Fcompletions"),
        "/v1/chat%252Fcompletions"
    );
}

#[test]
fn trailing_slashes_are_kept_and_the_root_is_a_slash() {
    assert_eq!(normal("/v1/models/"), "/v1/models/");
    assert_eq!(normal("/v1/models/."), "/v1/models/");
    assert_eq!(normal("/"), "/");
    assert_eq!(normal("/.."), "/");
}

#[test]
fn a_normal_path_is_unchanged_and_says_so() {
    let n = normalize("/v1/chat/completions?stream=true").unwrap();
    assert!(!n.changed);
    assert_eq!(n.path, "/v1/chat/completions");
    assert_eq!(n.rest, "?stream=true");
    assert!(normalize("/v1/chat%2Fcompletions").unwrap().changed);
    assert!(
        normalize("/a%c3").unwrap().changed,
        "lower-case hex is not normal"
    );
}

#[test]
fn what_cannot_be_normalised_safely_is_an_error() {
    assert_eq!(normalize("v1/chat"), Err(PathError::NotAbsolute));
    assert_eq!(normalize(""), Err(PathError::NotAbsolute));
    assert_eq!(normalize("*"), Err(PathError::NotAbsolute));
    assert_eq!(normalize("/v1/%zz"), Err(PathError::BadEscape));
    assert_eq!(normalize("/v1/%2"), Err(PathError::BadEscape));
    assert_eq!(normalize("/v1/%00x"), Err(PathError::ControlCharacter));
    assert_eq!(normalize("/v1/%0a"), Err(PathError::ControlCharacter));
    assert_eq!(normalize("/v1/%7F"), Err(PathError::ControlCharacter));
    assert_eq!(normalize("/v1/a b"), Err(PathError::ControlCharacter));
    assert_eq!(normalize("/v1/é"), Err(PathError::NotAscii));
}

#[test]
fn segments_decode_and_encode() {
    assert_eq!(
        decode_segment("gpt%2D4o%2Fmini").as_deref(),
        Some("gpt-4o/mini")
    );
    assert_eq!(decode_segment("%C3%A9").as_deref(), Some("é"));
    assert_eq!(decode_segment("%FF"), None);
    assert_eq!(
        encode_segment("openai/gpt-4o é"),
        "openai%2Fgpt-4o%20%C3%A9"
    );
}

proptest! {
    #[test]
    fn normalising_never_panics_and_is_idempotent(raw in "\\PC{0,40}") {
        if let Ok(n) = normalize(&raw) {
            let again = normalize(&n.path).unwrap();
            prop_assert_eq!(&again.path, &n.path);
            prop_assert!(!again.changed);
            prop_assert!(!n.path.contains("//"));
            prop_assert!(!n.path.split('/').any(|s| s == "." || s == ".."));
        }
    }

    #[test]
    fn escaped_paths_normalise_like_plain_ones(
        segments in proptest::collection::vec("[a-z]{1,6}", 1..5)
    ) {
        let plain = format!("/{}", segments.join("/"));
        let escaped = format!("/{}", segments.join("%2F"));
        prop_assert_eq!(normalize(&escaped).unwrap().path, plain);
    }

    #[test]
    fn an_encoded_segment_decodes_back(text in "\\PC{0,20}") {
        prop_assert_eq!(decode_segment(&encode_segment(&text)), Some(text));
    }
}
