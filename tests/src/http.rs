//! A small blocking HTTP client for tests: every status is a value, never an error.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

/// What a test reads from a response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lowercased; repeated headers joined with `, `.
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The body as JSON; fails with the body in the message when it is not JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .map_err(|error| anyhow::anyhow!("body is not JSON ({error}): {}", self.body))
    }
}

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(15)))
            .max_idle_connections(0)
            .build()
            .into()
    })
}

/// `GET url` with `headers`.
pub fn get(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Response> {
    let mut request = agent().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    read(request.call()?)
}

/// `POST url` with a JSON body.
pub fn post_json(
    url: &str,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
) -> anyhow::Result<Response> {
    post_raw(url, headers, "application/json", &body.to_string())
}

/// `POST url` with a raw body and content type (for malformed-input tests).
pub fn post_raw(
    url: &str,
    headers: &[(&str, &str)],
    content_type: &str,
    body: &str,
) -> anyhow::Result<Response> {
    let mut request = agent().post(url).header("content-type", content_type);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    read(request.send(body)?)
}

/// `GET url` with its own short timeout: `Err` when nothing answered in time.
pub fn get_within(url: &str, timeout: Duration) -> anyhow::Result<Response> {
    get_with_headers_within(url, &[], timeout)
}

/// `GET url` with `headers` and its own timeout.
pub fn get_with_headers_within(
    url: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> anyhow::Result<Response> {
    let mut request = agent()
        .get(url)
        .config()
        .timeout_global(Some(timeout))
        .build();
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    read(request.call()?)
}

/// An admin call (`POST base + path` with the master key) that must answer 200;
/// its JSON body, or an error carrying the status and body.
pub fn admin_post(
    base_url: &str,
    master_key: &str,
    path: &str,
    body: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let bearer = format!("Bearer {master_key}");
    let response = post_json(
        &format!("{base_url}{path}"),
        &[("authorization", &bearer)],
        body,
    )?;
    anyhow::ensure!(
        response.status == 200,
        "{path} answered {}: {}",
        response.status,
        response.body
    );
    response.json()
}

fn read(mut response: ureq::http::Response<ureq::Body>) -> anyhow::Result<Response> {
    let status = response.status().as_u16();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in response.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|existing| {
                existing.push_str(", ");
                existing.push_str(&value);
            })
            .or_insert(value);
    }
    let body = response.body_mut().read_to_string()?;
    Ok(Response {
        status,
        headers,
        body,
    })
}
