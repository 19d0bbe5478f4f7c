//! Free loopback ports for the processes a test starts.

use std::net::TcpListener;

/// A port nobody listens on right now. The OS picks it; the listener is closed
/// at once so the process under test can bind it.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
