//! `ringcached`: the ringcache daemon.
//!
//! With no arguments it runs on its embedded default: a file-backed cache
//! of 1 GiB under `./ringcache-data/` (created on first run), socket
//! `./ringcache-data/ringcached.sock`. `--config FILE`, `--device PATH` and
//! `--socket PATH` override. SIGTERM or SIGINT shut it down cleanly.

#![deny(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use ringcache::daemon::{Config, run};

#[derive(Parser)]
#[command(name = "ringcached", version, about = "The ringcache cache daemon")]
struct Args {
    /// Configuration file (cachefilesd-like keys; see docs/DAEMON.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Cache device or file (overrides the configuration).
    #[arg(long)]
    device: Option<PathBuf>,
    /// Socket path (overrides the configuration).
    #[arg(long)]
    socket: Option<PathBuf>,
}

fn main() -> Result<()> {
    ringcache::util::init_logging("info");
    let args = Args::parse();
    let mut cfg = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let base = path.parent().map(PathBuf::from).unwrap_or_default();
            Config::parse(&text, &base).with_context(|| format!("in {}", path.display()))?
        }
        None => Config::embedded(),
    };
    if let Some(d) = args.device {
        cfg.device = d;
        cfg.create_bytes = None;
    }
    if let Some(s) = args.socket {
        cfg.socket = s;
    }
    let socket = cfg.socket.clone();
    run(cfg, move |handle| {
        // Not println!: a closed stdout must not stop the daemon.
        let mut out = std::io::stdout();
        let _ = writeln!(out, "ringcached: serving on {}", socket.display());
        if let Some(addr) = handle.metrics_addr() {
            let _ = writeln!(out, "ringcached: metrics at http://{addr}/metrics");
        }
    })
}
