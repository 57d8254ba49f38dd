//! `ringfs`: the ringfs file server (`ringfs serve`); the FUSE client
//! (`ringfs mount`) comes later.

#![deny(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ringfs", version, about = "ringfs network file system")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Export DIR over TCP to ringfs clients (docs/RINGFS.md).
    Serve {
        /// The directory to export.
        dir: PathBuf,
        /// Address to listen on, e.g. 127.0.0.1:7070 (port 0: any free port).
        #[arg(long)]
        listen: SocketAddr,
        /// State directory (epoch, export id, data versions); outside DIR.
        #[arg(long, default_value = ringfs::server::DEFAULT_STATE_DIR)]
        state: PathBuf,
        /// Refuse every change.
        #[arg(long)]
        read_only: bool,
        /// How long a callback promise lasts, in seconds.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        promise_secs: u64,
        /// How long a change waits for a break to be acknowledged, in ms.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
        break_timeout_ms: u64,
        /// Clients connected at once.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65_536))]
        max_clients: u64,
        /// A client without a connection for this long is forgotten, in seconds.
        #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        client_timeout_secs: u64,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log line that cannot be written is dropped: reporting it would
        // write to the same stderr, and a closed stderr would panic there.
        .log_internal_errors(false)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            dir,
            listen,
            state,
            read_only,
            promise_secs,
            break_timeout_ms,
            max_clients,
            client_timeout_secs,
        } => {
            let mut cfg = ringfs::server::Config::new(dir, listen);
            cfg.state = state;
            cfg.read_only = read_only;
            cfg.promise = Duration::from_secs(promise_secs);
            cfg.break_timeout = Duration::from_millis(break_timeout_ms);
            cfg.max_clients = usize::try_from(max_clients)?;
            cfg.client_timeout = Duration::from_secs(client_timeout_secs);
            ringfs::server::run(cfg)?;
        }
    }
    Ok(())
}
