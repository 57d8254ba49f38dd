//! `ringfs`: the ringfs file server (`ringfs serve`) and the FUSE client
//! cached by ringcache (`ringfs mount`).

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
    /// Mount the export served at ADDR on MOUNTPOINT, cached by ringcache
    /// (runs in the foreground until unmounted, or SIGTERM/SIGINT).
    Mount {
        /// The server, e.g. 10.0.0.1:7070.
        addr: SocketAddr,
        mountpoint: PathBuf,
        /// The local ringcached's socket.
        #[arg(long, default_value = ringfs::mount::DEFAULT_CACHE_SOCKET, conflicts_with_all = ["cache_device", "no_cache"])]
        cache_socket: PathBuf,
        /// Cache in an embedded store on this device or file instead of a
        /// ringcached (made if it does not exist, of --cache-size bytes).
        #[arg(long, conflicts_with = "no_cache")]
        cache_device: Option<PathBuf>,
        /// Size of a cache file --cache-device makes, e.g. 4G.
        #[arg(long, default_value = "1G", value_parser = parse_size)]
        cache_size: u64,
        /// No cache: every read goes to the server.
        #[arg(long)]
        no_cache: bool,
        /// FUSE worker threads.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=64))]
        threads: u64,
        /// Mount read-only.
        #[arg(long)]
        read_only: bool,
        /// Let other users than the one mounting use the mount.
        #[arg(long)]
        allow_other: bool,
        /// How long a request waits for an unreachable server before it
        /// fails (ENOTCONN), in seconds.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
        timeout_secs: u64,
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (s, 1u64),
        Some((i, _)) => {
            let mul = match s.get(i..).map(str::to_ascii_uppercase).as_deref() {
                Some("K" | "KIB") => 1 << 10,
                Some("M" | "MIB") => 1 << 20,
                Some("G" | "GIB") => 1 << 30,
                Some("T" | "TIB") => 1 << 40,
                _ => return Err(format!("{s:?}: a size is a number with K, M, G or T")),
            };
            (s.get(..i).unwrap_or_default(), mul)
        }
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{s:?}: a size is a number with K, M, G or T"))
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
        Command::Mount {
            addr,
            mountpoint,
            cache_socket,
            cache_device,
            cache_size,
            no_cache,
            threads,
            read_only,
            allow_other,
            timeout_secs,
        } => {
            use ringfs::mount::{CacheChoice, MountConfig};
            let cache = if no_cache {
                CacheChoice::None
            } else if let Some(device) = cache_device {
                CacheChoice::Embedded {
                    device,
                    size: cache_size,
                }
            } else {
                CacheChoice::Daemon(cache_socket)
            };
            let mut cfg = MountConfig::new(addr, mountpoint, cache);
            cfg.threads = usize::try_from(threads)?;
            cfg.read_only = read_only;
            cfg.allow_other = allow_other;
            cfg.timeout = Duration::from_secs(timeout_secs);
            ringfs::mount::run(cfg)?;
        }
    }
    Ok(())
}
