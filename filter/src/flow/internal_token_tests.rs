//! The internal API's credential: on every auth check, never taken from a client.

use super::mock::*;
use super::*;
use crate::host_env::Secret;
use livegate_contract::headers::INTERNAL_TOKEN;

const TOKEN: &str = "internal-test-0123456789abcdef0123456789abcdef";

fn with_token() -> Config {
    Config {
        internal_token: Secret::new(TOKEN),
        ..Config::default()
    }
}

#[test]
fn every_auth_check_carries_the_internal_token_from_the_environment() {
    let host = MockHost::request("POST", "/v1/chat/completions", &[("x-api-key", KEY)]);
    let mut flow = RequestFlow::new(plugin(with_token()));
    assert_eq!(flow.on_request_headers(&host, Some(0)), Verdict::Stop);
    let sent = host.dispatched.borrow().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].token, TOKEN);
}

#[test]
fn a_client_sent_internal_token_is_removed_on_every_route() {
    for path in ["/key/info", "/v1/models"] {
        let host = MockHost::request(
            "GET",
            path,
            &[
                ("authorization", "Bearer sk-test"),
                (INTERNAL_TOKEN, "guess"),
            ],
        );
        let p = plugin(with_token());
        allow_once(&p, 0);
        let mut flow = RequestFlow::new(p);
        assert_eq!(
            flow.on_request_headers(&host, Some(1)),
            Verdict::Continue,
            "{path}"
        );
        assert_eq!(host.header(INTERNAL_TOKEN), None, "{path}");
    }
}

#[test]
fn the_configuration_cannot_carry_the_internal_token() {
    let e = Config::parse(Some(br#"{"internal_token": "x"}"#)).unwrap_err();
    assert!(e.to_string().contains("internal_token"), "{e}");
}
