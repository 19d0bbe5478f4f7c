//! A recording host, and request fixtures, for native tests of the request flow.

use super::{Plugin, RequestFlow, Verdict};
use crate::config::Config;
use crate::decision::CallResponse;
use crate::host::{AuthCheck, DispatchRefused, HeaderRefused, Host, RequestHeaders};
use crate::metrics::Metric;
use crate::reply::LocalReply;
use crate::time::Millis;
use std::cell::RefCell;
use std::rc::Rc;

/// The auth check as dispatched, owned so tests can inspect it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatched {
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub key: String,
    pub token: String,
    pub timeout_ms: u64,
    /// A model check's model.
    pub model: Option<String>,
}

#[derive(Debug, Default)]
pub struct MockHost {
    pub headers: RefCell<Vec<(String, Vec<u8>)>>,
    pub replies: RefCell<Vec<LocalReply>>,
    pub dispatched: RefCell<Vec<Dispatched>>,
    pub metrics: RefCell<Vec<Metric>>,
    /// How many times the flow read the whole header map from the host.
    pub header_reads: RefCell<usize>,
    /// Every header removal the flow asked for, present or not.
    pub removals: RefCell<Vec<String>>,
    pub refuse_dispatch: bool,
    /// Envoy refuses every header write (a stream torn down under the filter).
    pub refuse_header_writes: bool,
    /// The request body Envoy holds.
    pub body: RefCell<Vec<u8>>,
    /// The response headers, once the upstream answered.
    pub response_headers: RefCell<Vec<(String, Vec<u8>)>>,
    /// The response body chunk Envoy holds now.
    pub response_chunk: RefCell<Vec<u8>>,
    /// Every host call the flow made, by the `Host` method's name, in order.
    pub calls: RefCell<Vec<&'static str>>,
}

impl MockHost {
    pub fn request(method: &str, path: &str, extra: &[(&str, &str)]) -> MockHost {
        let mut headers = vec![
            (":method".to_string(), method.as_bytes().to_vec()),
            (":path".to_string(), path.as_bytes().to_vec()),
        ];
        for (name, value) in extra {
            headers.push(((*name).to_string(), value.as_bytes().to_vec()));
        }
        MockHost {
            headers: RefCell::new(headers),
            ..MockHost::default()
        }
    }

    /// A request header as the upstream would see it (not a host call of the flow's).
    pub fn header(&self, name: &str) -> Option<String> {
        let headers = RequestHeaders::new(self.headers.borrow().clone());
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn count(&self, metric: Metric) -> usize {
        self.metrics
            .borrow()
            .iter()
            .filter(|m| **m == metric)
            .count()
    }

    /// The host's clock at `at`, each read counted as the host call `clock`.
    pub fn clock(&self, at: Millis) -> MockClock<'_> {
        MockClock { host: self, at }
    }

    /// The host calls made so far, forgotten: a test counts one callback's.
    pub fn take_calls(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.calls.borrow_mut())
    }

    fn called(&self, method: &'static str) {
        self.calls.borrow_mut().push(method);
    }

    pub fn last_reply(&self) -> Option<LocalReply> {
        self.replies.borrow().last().cloned()
    }
}

impl Host for MockHost {
    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        self.called("request_header");
        let headers = RequestHeaders::new(self.headers.borrow().clone());
        headers.get(name).map(<[u8]>::to_vec)
    }

    fn request_headers(&self) -> RequestHeaders {
        self.called("request_headers");
        *self.header_reads.borrow_mut() += 1;
        RequestHeaders::new(self.headers.borrow().clone())
    }

    fn set_request_header(&self, name: &str, value: &str) -> Result<(), HeaderRefused> {
        self.called("set_request_header");
        if self.refuse_header_writes {
            return Err(HeaderRefused);
        }
        self.headers.borrow_mut().retain(|(n, _)| n != name);
        let entry = (name.to_string(), value.as_bytes().to_vec());
        self.headers.borrow_mut().push(entry);
        Ok(())
    }

    fn remove_request_header(&self, name: &str) -> Result<(), HeaderRefused> {
        self.called("remove_request_header");
        if self.refuse_header_writes {
            return Err(HeaderRefused);
        }
        self.removals.borrow_mut().push(name.to_string());
        self.headers.borrow_mut().retain(|(n, _)| n != name);
        Ok(())
    }

    fn request_body(&self) -> Option<Vec<u8>> {
        self.called("request_body");
        let body = self.body.borrow();
        (!body.is_empty()).then(|| body.clone())
    }

    fn request_body_size(&self) -> usize {
        self.body.borrow().len()
    }

    fn set_request_body(&self, body: &[u8]) -> Result<(), HeaderRefused> {
        self.called("set_request_body");
        if self.refuse_header_writes {
            return Err(HeaderRefused);
        }
        *self.body.borrow_mut() = body.to_vec();
        Ok(())
    }

    fn send_reply(&self, reply: &LocalReply) {
        self.called("send_reply");
        self.replies.borrow_mut().push(reply.clone());
    }

    fn dispatch_auth_check(&self, check: &AuthCheck<'_>) -> Result<(), DispatchRefused> {
        self.called("dispatch_auth_check");
        if self.refuse_dispatch {
            return Err(DispatchRefused);
        }
        self.dispatched.borrow_mut().push(Dispatched {
            cluster: check.cluster.into(),
            path: check.path.into(),
            authority: check.authority.into(),
            key: check.key.into(),
            token: check.token.into(),
            timeout_ms: check.timeout_ms,
            model: check.model.map(str::to_owned),
        });
        Ok(())
    }

    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        self.called("response_header");
        let headers = RequestHeaders::new(self.response_headers.borrow().clone());
        headers.get(name).map(<[u8]>::to_vec)
    }

    fn take_response_header(&self, name: &str) -> Option<Vec<u8>> {
        let value = self.response_header(name)?;
        self.response_headers
            .borrow_mut()
            .retain(|(n, _)| n != name);
        Some(value)
    }

    fn response_body(&self) -> Option<Vec<u8>> {
        self.called("response_body");
        let chunk = self.response_chunk.borrow();
        (!chunk.is_empty()).then(|| chunk.clone())
    }

    fn increment(&self, metric: Metric) {
        self.called("increment");
        self.metrics.borrow_mut().push(metric);
    }

    fn debug(&self, _message: &str) {
        self.called("debug");
    }
}

pub const KEY: &str = "sk-test";
pub const HASH: &str = "f3abf2a6cc4f00987743db5f544ba345b4899ae31f326d8ee9c4816de153c9e0";

pub fn plugin(config: Config) -> Rc<Plugin> {
    Rc::new(Plugin::new(config))
}

pub fn keyed(path: &str) -> MockHost {
    MockHost::request("POST", path, &[("authorization", "Bearer sk-test")])
}

pub fn respond(
    flow: &mut RequestFlow,
    host: &MockHost,
    status: &str,
    body: &str,
    now: u64,
) -> Verdict {
    respond_at(flow, host, status, body, Some(now))
}

/// `respond` with the host clock as the glue reads it: `None` when it cannot be read.
pub fn respond_at(
    flow: &mut RequestFlow,
    host: &MockHost,
    status: &str,
    body: &str,
    now: Option<u64>,
) -> Verdict {
    let response = CallResponse {
        header_count: 4,
        status: Some(status.as_bytes()),
        body: Some(body.as_bytes()),
    };
    flow.on_auth_response(host, response, now)
}

pub fn reset(flow: &mut RequestFlow, host: &MockHost, now: u64) -> Verdict {
    let response = CallResponse {
        header_count: 0,
        status: None,
        body: None,
    };
    flow.on_auth_response(host, response, Some(now))
}

pub fn allow_body() -> String {
    allow_body_with(livegate_contract::ModelAccess::default())
}

/// An allow carrying this model policy.
pub fn allow_body_with(access: livegate_contract::ModelAccess) -> String {
    allow_body_limited(access, livegate_contract::RateLimits::default())
}

/// An allow carrying this model policy and these rate limits.
pub fn allow_body_limited(
    access: livegate_contract::ModelAccess,
    limits: livegate_contract::RateLimits,
) -> String {
    let answer = livegate_contract::AuthCheckResponse::Allow(livegate_contract::Allow {
        key_hash: livegate_contract::KeyHash::of_raw(KEY),
        key_alias: Some("ci".into()),
        team_id: Some("t1".into()),
        user_id: None,
        cache_ttl_seconds: 60,
        expires_at_ms: None,
        version: 1,
        access,
        limits,
        lease: None,
        model_limits: Default::default(),
    });
    serde_json::to_string(&answer).unwrap_or_default()
}

pub fn deny_body(reason: crate::decision::DenyReason) -> String {
    let answer = livegate_contract::AuthCheckResponse::deny(reason);
    serde_json::to_string(&answer).unwrap_or_default()
}

/// Runs one keyed request through a miss and an allow, at `now`.
pub fn allow_once(plugin: &Rc<Plugin>, now: u64) {
    let host = keyed("/v1/models");
    let mut flow = RequestFlow::new(plugin.clone());
    assert_eq!(flow.on_request_headers(&host, Some(now)), Verdict::Stop);
    assert_eq!(
        respond(&mut flow, &host, "200", &allow_body(), now),
        Verdict::Continue
    );
}

/// A callback's clock that counts its reads among the mock host's calls.
pub struct MockClock<'a> {
    host: &'a MockHost,
    at: Millis,
}

impl crate::time::Clock for MockClock<'_> {
    fn now(&self) -> Option<Millis> {
        self.host.calls.borrow_mut().push("clock");
        Some(self.at)
    }
}
