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
    ok_json(path, &response)
}

/// A chat completion with `key` through `base` for the demo upstream's model, with a
/// 4-character prompt (4 prompt tokens, 8 completion tokens at the demo) and any `extra`
/// request fields (`livegate_delay_ms`, `stream`).
pub fn demo_chat(base: &str, key: &str, extra: serde_json::Value) -> anyhow::Result<Response> {
    let bearer = format!("Bearer {key}");
    let mut body = serde_json::json!({
        "model": "livegate-demo",
        "messages": [{"role": "user", "content": "abcd"}],
    });
    if let (Some(body), serde_json::Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    post_raw(
        &format!("{base}/v1/chat/completions"),
        &[("authorization", bearer.as_str())],
        "application/json",
        &body.to_string(),
    )
}

/// An admin read (`GET base + path` with the master key) that must answer 200.
pub fn admin_get(
    base_url: &str,
    master_key: &str,
    path: &str,
) -> anyhow::Result<serde_json::Value> {
    let bearer = format!("Bearer {master_key}");
    let response = get(&format!("{base_url}{path}"), &[("authorization", &bearer)])?;
    ok_json(path, &response)
}

/// The JSON body of a 200, or an error carrying the status and body.
fn ok_json(path: &str, response: &Response) -> anyhow::Result<serde_json::Value> {
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

/// Sends `POST path` with a `size`-byte JSON-ish body the way a real client does (curl
/// after its `100 Continue`): the body is written by one thread while the answer is
/// read by another, so an early answer (Envoy's 413) is read even though the body is not
/// finished. `headers` are sent as given (`("authorization", "Bearer …")`). The answer is
/// read raw: a reset after a complete answer is fine; a reset before any answer is an
/// `Err`.
pub fn post_sized_body(
    base_url: &str,
    path: &str,
    headers: &[(&str, &str)],
    size: usize,
) -> anyhow::Result<Response> {
    use std::io::{ErrorKind, Read, Write};
    let address = base_url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(sized_head(path, headers, size).as_bytes())?;
    let mut writer = stream.try_clone()?;
    let sender = std::thread::spawn(move || {
        // A JSON object naming a model, padded with spaces to exactly `size` bytes: what a
        // model route accepts, however large.
        let (open, close) = (br#"{"model":"livegate-demo""#.as_slice(), b"}".as_slice());
        let fits = size >= open.len() + close.len();
        let padding = if fits {
            size - open.len() - close.len()
        } else {
            size
        };
        if fits && writer.write_all(open).is_err() {
            return;
        }
        let chunk = vec![b' '; 64 * 1024];
        let mut sent = 0;
        while sent < padding {
            let n = chunk.len().min(padding - sent);
            // Envoy may close once it has answered: a write error ends the body.
            if writer.write_all(&chunk[..n]).is_err() {
                return;
            }
            sent += n;
        }
        if fits {
            let _ = writer.write_all(close);
        }
    });
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let read = loop {
        match stream.read(&mut buffer) {
            Ok(0) => break Ok(()),
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(error) if error.kind() == ErrorKind::ConnectionReset && !answer.is_empty() => {
                break Ok(())
            }
            Err(error) => break Err(error),
        }
        if complete(&answer) {
            break Ok(());
        }
    };
    // Unblocks the writer if the gateway stopped reading.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = sender.join();
    read?;
    parse_raw(&String::from_utf8_lossy(&answer))
}

/// The head of `POST path` declaring a `size`-byte JSON body.
fn sized_head(path: &str, headers: &[(&str, &str)], size: usize) -> String {
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: livegate\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    ));
    head
}

/// A client that will leave mid-body: `POST path` declaring `declared` bytes of body, of
/// which only `sent` (spaces) are written. The connection stays open until [`Self::leave`].
pub struct PartialBody {
    stream: std::net::TcpStream,
}

impl PartialBody {
    pub fn start(
        base_url: &str,
        path: &str,
        headers: &[(&str, &str)],
        declared: usize,
        sent: usize,
    ) -> anyhow::Result<PartialBody> {
        use std::io::Write;
        let address = base_url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address)?;
        stream.write_all(sized_head(path, headers, declared).as_bytes())?;
        stream.write_all(&vec![b' '; sent.min(declared)])?;
        Ok(PartialBody { stream })
    }

    /// Leaves without finishing the body: a close, or (`reset`) a TCP reset.
    pub fn leave(self, reset: bool) -> anyhow::Result<()> {
        use nix::sys::socket::{setsockopt, sockopt::Linger};
        if reset {
            let now = nix::libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            setsockopt(&self.stream, Linger, &now)?;
        }
        drop(self.stream);
        Ok(())
    }
}

/// A complete HTTP/1.1 response with a content-length body.
fn complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    body.len() >= length
}

/// A raw HTTP/1.1 answer as a [`Response`] (status and body; headers lowercased).
pub fn parse_raw(raw: &str) -> anyhow::Result<Response> {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("not an HTTP answer: {raw:?}"))?;
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in lines.filter_map(|line| line.split_once(':')) {
        headers.insert(name.to_ascii_lowercase(), value.trim().to_string());
    }
    Ok(Response {
        status,
        headers,
        body: body.to_string(),
    })
}
