//! A provider double: HTTPS with its own CA, demanding its own key, answering OpenAI's (and
//! Azure OpenAI's) chat completions and Anthropic's messages in their documented shapes (plain
//! and streamed; Anthropic's with cache writes and reads), and keeping every request it
//! received for the test to read.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::postgres::TestCa;

/// A request as the double received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// It came over HTTP/2 (ALPN `h2`).
    pub http2: bool,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A running double; stops accepting on drop.
pub struct ProviderDouble {
    port: u16,
    ca_file: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl ProviderDouble {
    /// Listens on 127.0.0.1 with a certificate for `localhost` from a CA of its own,
    /// whose PEM goes to `dir/provider-ca.pem`; demands `key`.
    pub fn start(dir: &Path, key: &str) -> anyhow::Result<ProviderDouble> {
        ProviderDouble::start_speaking(dir, key, false)
    }

    /// As [`ProviderDouble::start`], offering HTTP/2 only (ALPN `h2`), as OpenAI's API does.
    pub fn start_http2(dir: &Path, key: &str) -> anyhow::Result<ProviderDouble> {
        ProviderDouble::start_speaking(dir, key, true)
    }

    fn start_speaking(dir: &Path, key: &str, http2: bool) -> anyhow::Result<ProviderDouble> {
        let ca = TestCa::new("livegate provider double CA")?;
        let ca_file = dir.join("provider-ca.pem");
        std::fs::write(&ca_file, ca.pem())?;
        let (cert, private) = ca.server_cert(&["localhost"])?;
        let certs =
            CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<Vec<_>, _>>()?;
        let private = PrivateKeyDer::from_pem_slice(private.as_bytes())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, private)?;
        config.alpn_protocols = if http2 {
            vec![b"h2".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        if http2 {
            let (thread_seen, key) = (Arc::clone(&seen), key.to_owned());
            listener.set_nonblocking(true)?;
            std::thread::spawn(move || serve_http2(listener, config, thread_seen, key));
            return Ok(ProviderDouble {
                port,
                ca_file,
                seen,
                stop,
            });
        }
        let (thread_seen, thread_stop, key) =
            (Arc::clone(&seen), Arc::clone(&stop), key.to_owned());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if thread_stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let _ = stream.set_nodelay(true);
                let (config, seen, key) =
                    (Arc::clone(&config), Arc::clone(&thread_seen), key.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, config, &seen, &key);
                });
            }
        });
        Ok(ProviderDouble {
            port,
            ca_file,
            seen,
            stop,
        })
    }

    /// `https://localhost:PORT`: the name its certificate is for.
    pub fn base_url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// Every request received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for ProviderDouble {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// The most requests kept: a test sends far fewer; a benchmark's run would otherwise grow
/// the list without bound.
const MAX_SEEN: usize = 10_000;

fn remember(seen: &Mutex<Vec<Seen>>, request: Seen) {
    if let Ok(mut seen) = seen.lock() {
        if seen.len() >= MAX_SEEN {
            seen.drain(..MAX_SEEN / 2);
        }
        seen.push(request);
    }
}

fn serve(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    seen: &Mutex<Vec<Seen>>,
    key: &str,
) -> anyhow::Result<()> {
    let connection = rustls::ServerConnection::new(config)?;
    let tls = rustls::StreamOwned::new(connection, tcp);
    let mut reader = BufReader::new(tls);
    // Keep-alive: one request after another until the peer closes.
    while let Some(request) = read_request(&mut reader)? {
        let (status, content_type, body) = answer(&request, key);
        remember(seen, request);
        let head = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
            if status == 200 { "OK" } else { "Error" },
            body.len()
        );
        // One write: a head and a body in two small segments wait on the peer's delayed
        // ACK (Nagle), 40 ms a request.
        let stream = reader.get_mut();
        stream.write_all(format!("{head}{body}").as_bytes())?;
        stream.flush()?;
    }
    Ok(())
}

pub(crate) fn read_request(reader: &mut impl BufRead) -> anyhow::Result<Option<Seen>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v): &(String, String)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(length) = header("content-length") {
        body.resize(length.parse()?, 0);
        reader.read_exact(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim(), 16)?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    Ok(Some(Seen {
        method,
        path,
        headers,
        body,
        http2: false,
    }))
}

/// The HTTP/2 double: its own runtime on its own thread, for the test's life (the
/// listener closes with the process).
fn serve_http2(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    seen: Arc<Mutex<Vec<Seen>>>,
    key: String,
) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            return;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen, key) = (acceptor.clone(), Arc::clone(&seen), key.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut connection) = h2::server::handshake(tls).await else {
                    return;
                };
                while let Some(Ok((request, respond))) = connection.accept().await {
                    let (seen, key) = (Arc::clone(&seen), key.clone());
                    tokio::spawn(answer_http2(request, respond, seen, key));
                }
            });
        }
    });
}

async fn answer_http2(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<bytes::Bytes>,
    seen: Arc<Mutex<Vec<Seen>>>,
    key: String,
) {
    let (parts, mut stream) = request.into_parts();
    let mut body = Vec::new();
    while let Some(Ok(chunk)) = stream.data().await {
        let _ = stream.flow_control().release_capacity(chunk.len());
        body.extend_from_slice(&chunk);
    }
    let mut headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    if let Some(authority) = parts.uri.authority() {
        headers.push(("host".into(), authority.to_string()));
    }
    let request = Seen {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers,
        body,
        http2: true,
    };
    let (status, content_type, text) = answer(&request, &key);
    remember(&seen, request);
    let Ok(response) = http::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(())
    else {
        return;
    };
    if let Ok(mut send) = respond.send_response(response, false) {
        let _ = send.send_data(bytes::Bytes::from(text), true);
    }
}

/// What the double's Anthropic answers state: uncached input, cache writes and reads (each
/// outside `input_tokens`, as Anthropic counts them), output.
pub struct AnthropicUsage {
    pub input: u64,
    pub cache_creation: u64,
    pub cache_read: u64,
    pub output: u64,
}

pub const ANTHROPIC_USAGE: AnthropicUsage = AnthropicUsage {
    input: 11,
    cache_creation: 5,
    cache_read: 3,
    output: 7,
};

impl AnthropicUsage {
    fn json(&self, output: u64) -> serde_json::Value {
        serde_json::json!({"input_tokens": self.input, "output_tokens": output,
            "cache_creation_input_tokens": self.cache_creation,
            "cache_read_input_tokens": self.cache_read})
    }
}

/// Anthropic's stream: the input and cache counts in `message_start` (with a first output
/// count), the final output count in `message_delta`.
fn anthropic_stream(model: &str) -> String {
    let events = [
        (
            "message_start",
            serde_json::json!({"type": "message_start", "message": {
            "id": "msg_double", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": ANTHROPIC_USAGE.json(1)}}),
        ),
        (
            "content_block_start",
            serde_json::json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            serde_json::json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": "hello"}}),
        ),
        (
            "content_block_stop",
            serde_json::json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            serde_json::json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": ANTHROPIC_USAGE.output}}),
        ),
        ("message_stop", serde_json::json!({"type": "message_stop"})),
    ];
    events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect()
}

/// (status, content type, body).
fn answer(request: &Seen, key: &str) -> (u16, &'static str, String) {
    let json = "application/json";
    let path = request.path.split('?').next().unwrap_or_default();
    let model = request.json()["model"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if path.ends_with("/messages") {
        if request.header("x-api-key") != Some(key) || request.header("anthropic-version").is_none()
        {
            let error = serde_json::json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}});
            return (401, json, error.to_string());
        }
        if request.json()["stream"] == serde_json::Value::Bool(true) {
            return (200, "text/event-stream", anthropic_stream(&model));
        }
        let message = serde_json::json!({
            "id": "msg_double", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "hello from the double"}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": ANTHROPIC_USAGE.json(7)
        });
        return (200, json, message.to_string());
    }
    // Azure OpenAI's deployments want `api-key`; OpenAI's API a bearer token.
    let authorized = if path.contains("/openai/deployments/") {
        request.header("api-key") == Some(key)
    } else {
        request.header("authorization") == Some(&format!("Bearer {key}"))
    };
    if !authorized {
        let error = serde_json::json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}});
        return (401, json, error.to_string());
    }
    if !path.ends_with("/chat/completions") {
        return (404, json, r#"{"error": {"message": "no such route", "type": "invalid_request_error", "param": null, "code": null}}"#.into());
    }
    let usage =
        serde_json::json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18});
    if request.json()["stream"] == serde_json::Value::Bool(true) {
        let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
            serde_json::json!({"id": "chatcmpl-double", "object": "chat.completion.chunk", "created": 1,
                "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let mut text = String::new();
        for event in [
            chunk(
                serde_json::json!({"role": "assistant", "content": "hello"}),
                serde_json::Value::Null,
            ),
            chunk(serde_json::json!({}), serde_json::json!("stop")),
            serde_json::json!({"id": "chatcmpl-double", "object": "chat.completion.chunk", "created": 1,
                "model": model, "choices": [], "usage": usage}),
        ] {
            text.push_str(&format!("data: {event}\n\n"));
        }
        text.push_str("data: [DONE]\n\n");
        return (200, "text/event-stream", text);
    }
    let completion = serde_json::json!({
        "id": "chatcmpl-double", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello from the double"},
                     "finish_reason": "stop"}],
        "usage": usage
    });
    (200, json, completion.to_string())
}
