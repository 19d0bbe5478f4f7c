//! The command line: `serve`, `engine`, `hash-key`, `spool drain`. Flags win over environment variables.

use std::io::Read;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{database::DATABASE_URL, Config, DatabaseFlags, LogFlags};
use crate::model::keys;
use crate::{app, engine};

pub use crate::config::ServeArgs;

/// The whole command line. Its `Debug` is safe to print: secrets are [`Secret`]s.
#[derive(Debug, Parser)]
#[command(
    name = "livegate-control-plane",
    version,
    about = "livegate's control plane"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API and supervise the database engine.
    Serve(Box<ServeArgs>),
    /// The database engine subprocess (started by `serve`; not for operators).
    Engine,
    /// Print the SHA-256 (the stored `token`) of a raw key read from stdin.
    HashKey,
    /// Operate on spend spools set aside for another database.
    #[command(subcommand)]
    Spool(SpoolCommand),
}

#[derive(Debug, Subcommand)]
pub enum SpoolCommand {
    /// Drain a spool file into the database of --database-url, only if it is the spool's
    /// own (a set-aside spool carries its database's identity); refuses any other.
    Drain(Box<SpoolDrainArgs>),
}

#[derive(Debug, Args)]
pub struct SpoolDrainArgs {
    /// The spool file (e.g. `spend.spool.db-<identity>.<ms>` next to the live spool).
    #[arg(long)]
    pub file: std::path::PathBuf,
    /// How long to wait for the database.
    #[arg(long, default_value_t = 30)]
    pub connect_timeout_secs: u64,
    /// The spool's database and its engine, as for `serve`.
    #[command(flatten)]
    pub database: DatabaseFlags,
    #[command(flatten)]
    pub log: LogFlags,
}

/// Parses the command line and runs the chosen command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => Config::from_args(*args)
            .map_err(anyhow::Error::from)
            .and_then(app::serve),
        Command::Engine => engine(),
        Command::HashKey => hash_key(),
        Command::Spool(SpoolCommand::Drain(args)) => spool_drain(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("livegate-control-plane: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn engine() -> anyhow::Result<()> {
    let json = std::env::var("LIVEGATE_LOG_FORMAT").is_ok_and(|f| f == "json");
    app::init_logging(json);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(engine::run())
}

/// `spool drain`: the database flags as for `serve` (the same defaults and checks); no
/// listener, so no master key or internal token.
fn spool_drain(args: SpoolDrainArgs) -> anyhow::Result<()> {
    app::init_logging(false);
    if args.database.database_url.is_none() {
        anyhow::bail!("{} is required", DATABASE_URL.named);
    }
    args.log.json()?;
    let supervisor = args.database.supervisor(args.log.log_format)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let within = std::time::Duration::from_secs(args.connect_timeout_secs);
    let drained = rt.block_on(crate::spool_drain::run(args.file, supervisor, within))?;
    println!(
        "drained {} records: {} inserted, {} already there, {} dead letters",
        drained.entries,
        drained.inserted,
        (drained.entries as u64)
            .saturating_sub(drained.inserted)
            .saturating_sub(drained.dead_letters as u64),
        drained.dead_letters
    );
    Ok(())
}

fn hash_key() -> anyhow::Result<()> {
    let mut raw = String::new();
    std::io::stdin().read_to_string(&mut raw)?;
    println!("{}", keys::KeyHash::of_raw(raw.trim()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(extra: &[&str]) -> Result<Cli, clap::Error> {
        let mut argv = vec!["livegate-control-plane", "spool", "drain", "--file", "s"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv)
    }

    #[test]
    fn spool_drain_takes_serves_database_flags_and_needs_no_secret() {
        let cli = drain(&["--database-url", "postgres://u@h/db", "--db-pool-size", "2"]).unwrap();
        let Command::Spool(SpoolCommand::Drain(args)) = cli.command else {
            panic!("spool drain parses as spool drain");
        };
        let supervisor = args.database.supervisor(args.log.log_format).unwrap();
        assert_eq!(supervisor.settings.pool_size, 2);
        assert_eq!(
            supervisor.settings.database_url.expose(),
            "postgres://u@h/db"
        );
        for secret in ["--master-key", "--internal-token"] {
            let e = drain(&[secret, "sk-0123456789abcdef0123456789abcdef"]).unwrap_err();
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::UnknownArgument,
                "{secret}"
            );
        }
    }
}
