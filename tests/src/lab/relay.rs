//! A TCP relay on loopback that can blackhole the path it carries: bytes are
//! swallowed and sockets left open, so the peer's reads and closes hang as they do
//! behind a dead network link. Healing lets new connections through; connections
//! that lived through the blackhole stay dead, as they would after a real partition.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const POLL: Duration = Duration::from_millis(25);

/// A running relay; stops accepting on drop.
pub struct Relay {
    listen: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    target: SocketAddr,
    /// Bumped by every blackhole: connections of an older generation are dead.
    generation: AtomicU64,
    blackholed: AtomicBool,
    stopped: AtomicBool,
}

impl Relay {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub fn start(target: SocketAddr) -> anyhow::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let listen = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target,
            generation: AtomicU64::new(0),
            blackholed: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
        });
        let accepting = Arc::clone(&shared);
        std::thread::spawn(move || accept_loop(&listener, &accepting));
        Ok(Relay { listen, shared })
    }

    /// Where clients connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    /// Drops every byte from now on, on every connection, without closing any.
    pub fn blackhole(&self) {
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        self.shared.blackholed.store(true, Ordering::SeqCst);
    }

    /// New connections flow again; those that saw the blackhole stay dead.
    pub fn heal(&self) {
        self.shared.blackholed.store(false, Ordering::SeqCst);
    }

    pub fn is_blackholed(&self) -> bool {
        self.shared.blackholed.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stopped.load(Ordering::SeqCst) {
        // While blackholed, nothing is accepted: connects sit in the backlog, unanswered.
        if shared.blackholed.load(Ordering::SeqCst) {
            std::thread::sleep(POLL);
            continue;
        }
        match listener.accept() {
            Ok((client, _)) => {
                let shared = Arc::clone(shared);
                std::thread::spawn(move || connect_and_pump(client, &shared));
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

fn connect_and_pump(client: TcpStream, shared: &Arc<Shared>) {
    let Ok(server) = TcpStream::connect(shared.target) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let generation = shared.generation.load(Ordering::SeqCst);
    let (Ok(client_copy), Ok(server_copy)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let upward = Arc::clone(shared);
    std::thread::spawn(move || pump(client_copy, server_copy, &upward, generation));
    pump(server, client, shared, generation);
}

/// Copies `from` → `to` while the path is healthy; swallows bytes once it is not.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, generation: u64) {
    let _ = from.set_read_timeout(Some(POLL));
    let mut buffer = [0u8; 16 * 1024];
    loop {
        if shared.stopped.load(Ordering::SeqCst) {
            break;
        }
        let read = from.read(&mut buffer);
        // Judged after the read returns: bytes that arrive once the link died are lost.
        let dead = shared.generation.load(Ordering::SeqCst) != generation
            || shared.blackholed.load(Ordering::SeqCst);
        match read {
            Ok(0) => {
                if dead {
                    // The close never crosses a dead link: the other side is left hanging.
                    return;
                }
                break;
            }
            Ok(read) => {
                if !dead && to.write_all(&buffer[..read]).is_err() {
                    break;
                }
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback, for the relay to carry.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buffer = [0u8; 1024];
                    while let Ok(read) = stream.read(&mut buffer) {
                        if read == 0 || stream.write_all(&buffer[..read]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn round_trip(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(message)?;
        let mut reply = vec![0u8; message.len()];
        stream.read_exact(&mut reply)?;
        Ok(reply)
    }

    #[test]
    fn a_healthy_relay_carries_bytes_both_ways() {
        let relay = Relay::start(echo_server()).unwrap();
        let mut stream = TcpStream::connect(relay.addr()).unwrap();
        assert_eq!(round_trip(&mut stream, b"ping").unwrap(), b"ping");
    }

    #[test]
    fn a_blackholed_relay_swallows_bytes_and_keeps_the_socket_open() {
        let relay = Relay::start(echo_server()).unwrap();
        let mut stream = TcpStream::connect(relay.addr()).unwrap();
        assert_eq!(round_trip(&mut stream, b"ping").unwrap(), b"ping");

        relay.blackhole();
        stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let error = round_trip(&mut stream, b"lost").unwrap_err();
        // Timed out, not closed: the peer cannot tell the link is gone.
        assert!(
            matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{error:?}"
        );
    }

    #[test]
    fn after_healing_new_connections_flow_and_old_ones_stay_dead() {
        let relay = Relay::start(echo_server()).unwrap();
        let mut old = TcpStream::connect(relay.addr()).unwrap();
        assert_eq!(round_trip(&mut old, b"a").unwrap(), b"a");
        relay.blackhole();
        relay.heal();

        let mut fresh = TcpStream::connect(relay.addr()).unwrap();
        assert_eq!(round_trip(&mut fresh, b"again").unwrap(), b"again");
        old.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(round_trip(&mut old, b"b").is_err());
    }
}
