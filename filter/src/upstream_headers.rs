//! Header hygiene: what the filter removes from and adds to a request it lets through.

use crate::decision::Identity;
use crate::host::RequestHeaders;
use livegate_contract::headers::{
    CREDENTIAL_HEADERS, FAILURE_MODE, KEY_ALIAS, KEY_HASH, LIVEGATE_PREFIX, STALE, TEAM_ID, USER_ID,
};
use livegate_contract::KeyHash;

/// Why a protected request is allowed to continue.
#[derive(Debug, Clone, Copy)]
pub enum Admission<'a> {
    /// The control plane vouched for the key (now, or within the stale window).
    Identified {
        hash: &'a KeyHash,
        identity: &'a Identity,
        stale: bool,
    },
    /// Nobody vouched: `failure_mode: open` let it through, without identity.
    FailedOpen,
}

/// Header edits to apply, removals first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    pub remove: Vec<String>,
    pub set: Vec<(&'static str, String)>,
}

/// Pass-through routes keep their credentials (the control plane checks the master
/// key itself) but lose client-supplied `x-livegate-*` headers, so none can be spoofed.
pub fn for_passthrough(request: &RequestHeaders) -> HeaderEdits {
    HeaderEdits {
        remove: livegate_headers(request),
        set: Vec::new(),
    }
}

/// A protected request on its way upstream: the client's key never travels on. Only
/// headers the request has are removed: each removal is a call into Envoy.
pub fn for_upstream(
    request: &RequestHeaders,
    admission: Admission<'_>,
    upstream_authorization: Option<&str>,
) -> HeaderEdits {
    let mut remove: Vec<String> = CREDENTIAL_HEADERS
        .iter()
        .filter(|name| request.contains(name))
        .map(|name| (*name).to_string())
        .collect();
    remove.extend(livegate_headers(request));
    let mut set = Vec::new();
    match admission {
        Admission::Identified {
            hash,
            identity,
            stale,
        } => {
            push_some(&mut set, KEY_ALIAS, &identity.key_alias);
            set.push((KEY_HASH, hash.short().to_string()));
            push_some(&mut set, TEAM_ID, &identity.team_id);
            push_some(&mut set, USER_ID, &identity.user_id);
            if stale {
                set.push((STALE, "true".to_string()));
            }
        }
        Admission::FailedOpen => set.push((FAILURE_MODE, "open".to_string())),
    }
    if let Some(value) = upstream_authorization {
        set.push(("authorization", value.to_string()));
    }
    HeaderEdits { remove, set }
}

/// The `x-livegate-*` names a request's headers or trailers carry, lowercased, once each:
/// a client may send none of them, in either place.
pub fn livegate_headers(request: &RequestHeaders) -> Vec<String> {
    let mut found: Vec<String> = request
        .names()
        .filter(|name| is_livegate_header(name))
        .map(|name| name.to_ascii_lowercase())
        .collect();
    found.sort();
    found.dedup();
    found
}

fn is_livegate_header(name: &str) -> bool {
    name.get(..LIVEGATE_PREFIX.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(LIVEGATE_PREFIX))
}

fn push_some(set: &mut Vec<(&'static str, String)>, name: &'static str, value: &Option<String>) {
    if let Some(value) = value {
        set.push((name, header_encoded(value)));
    }
}

/// An identity as a header value: printable ASCII as is, every other byte (and `%`
/// itself, so that decoding is unambiguous) as `%XX` of its UTF-8. An id of plain
/// printable ASCII without `%` reads the same either way.
pub fn header_encoded(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (b == b' ' || b.is_ascii_graphic()) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
