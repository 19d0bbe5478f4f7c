//! livegate control plane: the HTTP API, the key cache, and the supervised database engine.

mod app;
mod auth;
mod cli;
mod config;
mod db;
mod feed;
mod http;
mod key_cache;
mod keys;
mod looplag;
mod metrics;
mod record;

fn main() -> std::process::ExitCode {
    cli::main()
}
