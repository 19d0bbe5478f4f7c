//! A provider that fails, for the fallback tests: plain HTTP (an in-cluster server's
//! api_base), answering every request with a 429 carrying its rate-limit headers, a 503,
//! no answer at all (the connection closed) or silence; and an address where nothing
//! listens.

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::provider_double::{read_request, Seen};

/// How it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 429 with `retry-after` and OpenAI's `x-ratelimit-*` headers.
    TooManyRequests,
    /// 503, OpenAI's "overloaded".
    Unavailable,
    /// Reads the request, then closes the connection without a byte of answer.
    HangUp,
    /// Reads the request and never answers (until the peer closes).
    Silent,
}

/// The headers of its 429, as OpenAI sends them.
pub const RATE_LIMIT_HEADERS: [(&str, &str); 4] = [
    ("retry-after", "7"),
    ("x-ratelimit-limit-requests", "500"),
    ("x-ratelimit-remaining-requests", "0"),
    ("x-ratelimit-reset-requests", "7s"),
];

/// A running failing provider; stops accepting on drop.
pub struct FailingProvider {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl FailingProvider {
    pub fn start(failure: Failure) -> anyhow::Result<FailingProvider> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_seen, thread_stop) = (Arc::clone(&seen), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if thread_stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let seen = Arc::clone(&thread_seen);
                std::thread::spawn(move || {
                    let _ = serve(stream, failure, &seen);
                });
            }
        });
        Ok(FailingProvider { port, seen, stop })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for FailingProvider {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// An address where every connection is refused: a TCP socket bound to a port of
/// 127.0.0.1 that never listens. The port stays taken while this lives, so nothing else
/// (the stack's own servers on free ports) can come to listen there.
pub struct Refusing {
    _socket: std::os::fd::OwnedFd,
    port: u16,
}

impl Refusing {
    pub fn start() -> anyhow::Result<Refusing> {
        use nix::sys::socket::{
            bind, getsockname, socket, AddressFamily, SockFlag, SockType, SockaddrIn,
        };
        let socket = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            &SockaddrIn::new(127, 0, 0, 1, 0),
        )?;
        let bound: SockaddrIn = getsockname(std::os::fd::AsRawFd::as_raw_fd(&socket))?;
        Ok(Refusing {
            _socket: socket,
            port: bound.port(),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn serve(tcp: TcpStream, failure: Failure, seen: &Mutex<Vec<Seen>>) -> anyhow::Result<()> {
    let mut reader = BufReader::new(tcp);
    while let Some(request) = read_request(&mut reader)? {
        if let Ok(mut seen) = seen.lock() {
            seen.push(request);
        }
        let stream = reader.get_mut();
        let (status, extra, body): (u16, &[(&str, &str)], &str) = match failure {
            Failure::HangUp => return Ok(()),
            Failure::Silent => {
                let mut rest = Vec::new();
                let _ = reader.read_to_end(&mut rest);
                return Ok(());
            }
            Failure::TooManyRequests => (
                429,
                &RATE_LIMIT_HEADERS,
                r#"{"error": {"message": "Rate limit reached for requests", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}"#,
            ),
            Failure::Unavailable => (
                503,
                &[],
                r#"{"error": {"message": "The server is overloaded", "type": "server_error", "param": null, "code": null}}"#,
            ),
        };
        let mut head = format!(
            "HTTP/1.1 {status} Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (name, value) in extra {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(body.as_bytes())?;
        stream.flush()?;
    }
    Ok(())
}
