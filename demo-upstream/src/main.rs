//! `livegate-demo-upstream --listen 127.0.0.1:4002`: the demo upstream as a process.

use clap::Parser;

#[derive(Parser)]
#[command(version, about = "An OpenAI-shaped demo upstream for livegate")]
struct Args {
    /// Address to listen on.
    #[arg(
        long,
        env = "LIVEGATE_DEMO_UPSTREAM_LISTEN",
        default_value = "127.0.0.1:4002"
    )]
    listen: std::net::SocketAddr,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("livegate demo upstream listening on http://{}", args.listen);
    axum::serve(listener, livegate_demo_upstream::router()).await
}
