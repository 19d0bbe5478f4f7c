//! livegate control plane (placeholder until the service lands).
fn main() {
    println!("livegate-control-plane {}", env!("CARGO_PKG_VERSION"));
}
