//! Free loopback ports for the processes a test starts.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Mutex, OnceLock};

/// A port nobody listens on right now, and never handed out before in this
/// process (tests run as threads of one process and may ask at the same moment).
/// The OS picks it; the listener is closed at once so the process under test can bind it.
pub fn free_port() -> anyhow::Result<u16> {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let mut given = given
            .lock()
            .map_err(|_| anyhow::anyhow!("port registry poisoned"))?;
        if given.insert(port) {
            return Ok(port);
        }
    }
    anyhow::bail!("no fresh free port after 100 tries")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_never_handed_out_twice() {
        let ports: Vec<u16> = (0..200).map(|_| free_port().unwrap()).collect();
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
    }
}
