//! `ringfs serve`: exports a directory over TCP (`docs/RINGFS.md`).
//!
//! - [`export`]: the id table and resolution beneath the export;
//! - [`state`]: the state directory (epoch, export id, data versions);
//! - [`coherency`]: promises, breaks, owed breaks, kept replies;
//! - [`ops`]: one function per operation;
//! - [`conn`]: a connection's reader and worker;
//! - [`watch`]: changes by local processes (inotify).
//!
//! Threads: one accepts; each connection has a reader and a worker; one
//! reads inotify events; one syncs the data-version log and sweeps
//! expired promises and vanished clients; one waits for signals.

pub mod coherency;
pub mod conn;
pub mod export;
pub mod ops;
pub mod state;
pub mod watch;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::stat::Mode;

use coherency::Coherency;
use export::Export;
use state::{StateDir, Versions};

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub export: PathBuf,
    pub listen: SocketAddr,
    pub state: PathBuf,
    pub read_only: bool,
    pub promise: Duration,
    pub break_timeout: Duration,
    pub max_clients: usize,
    pub client_timeout: Duration,
    pub max_files: usize,
}

impl Config {
    pub fn new(export: PathBuf, listen: SocketAddr) -> Config {
        Config {
            export,
            listen,
            state: PathBuf::from(DEFAULT_STATE_DIR),
            read_only: false,
            promise: Duration::from_secs(60),
            break_timeout: Duration::from_millis(2000),
            max_clients: 256,
            client_timeout: Duration::from_secs(120),
            max_files: 65_536,
        }
    }
}

/// The default state directory, relative to the working directory.
pub const DEFAULT_STATE_DIR: &str = "./ringfs-state";

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("export {path}: {source}")]
    Export {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state directory {path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state directory {0} lies inside the export")]
    StateInsideExport(PathBuf),
    #[error("state directory {0} is in use by another server")]
    StateLocked(PathBuf),
    #[error("state directory {state} belongs to the export {recorded}")]
    StateOfAnotherExport { state: PathBuf, recorded: String },
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("inotify: {0}")]
    Inotify(Errno),
    #[error("{0}")]
    Thread(std::io::Error),
}

/// What every thread of the server shares.
pub struct Server {
    pub cfg: Config,
    pub export: Export,
    pub versions: Versions,
    pub co: Coherency,
    pub state: StateDir,
    pub stats: Stats,
}

/// Counters the Stats op reports.
#[derive(Default)]
pub struct Stats {
    /// Read requests answered.
    pub reads: AtomicU64,
    /// File data bytes sent in Read replies.
    pub read_bytes: AtomicU64,
    /// Write requests applied.
    pub writes: AtomicU64,
    /// File data bytes written.
    pub write_bytes: AtomicU64,
}

impl Stats {
    /// The counters as (name, value), for the Stats reply.
    pub fn list(&self) -> Vec<(String, u64)> {
        [
            ("reads", &self.reads),
            ("read_bytes", &self.read_bytes),
            ("writes", &self.writes),
            ("write_bytes", &self.write_bytes),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v.load(Ordering::Relaxed)))
        .collect()
    }
}

/// A server ready to accept: watching the export, listening.
pub struct Running {
    pub server: Arc<Server>,
    pub listener: TcpListener,
    pub local_addr: SocketAddr,
}

/// Opens the state directory (a new epoch), the export and the watches,
/// and binds the listener.
pub fn start(cfg: Config) -> Result<Running, ServerError> {
    let export_path = cfg.export.canonicalize().map_err(|e| ServerError::Export {
        path: cfg.export.clone(),
        source: e,
    })?;
    if !export_path.is_dir() {
        return Err(ServerError::Export {
            path: export_path,
            source: std::io::Error::from(std::io::ErrorKind::NotADirectory),
        });
    }
    // Modes of created files are the client's, not filtered by a umask.
    nix::sys::stat::umask(Mode::empty());
    let state = StateDir::open(&cfg.state, &export_path)?;
    let versions = Versions::open(&state.dir)?;
    let export = Export::open(&export_path, cfg.read_only, cfg.max_files)?;
    let co = Coherency::new(cfg.promise, cfg.break_timeout);
    let server = Arc::new(Server {
        cfg: cfg.clone(),
        export,
        versions,
        co,
        state,
        stats: Stats::default(),
    });
    watch::start(server.clone())?;
    let listener = TcpListener::bind(cfg.listen).map_err(|e| ServerError::Listen {
        addr: cfg.listen,
        source: e,
    })?;
    let local_addr = listener.local_addr().map_err(|e| ServerError::Listen {
        addr: cfg.listen,
        source: e,
    })?;
    Ok(Running {
        server,
        listener,
        local_addr,
    })
}

impl Running {
    /// Accepts and serves clients until the process ends.
    pub fn serve(self) -> Result<(), ServerError> {
        let srv = self.server;
        {
            let srv = srv.clone();
            std::thread::Builder::new()
                .name("ringfs-housekeeping".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(1));
                        if let Err(e) = srv.versions.sync() {
                            tracing::error!("syncing the data version log: {e}");
                        }
                        srv.co.sweep(srv.cfg.client_timeout);
                    }
                })
                .map_err(ServerError::Thread)?;
        }
        // Connections greeted or not: a flood of connections that never
        // greet cannot take more threads than this.
        let max_conns = srv.cfg.max_clients.saturating_mul(2).saturating_add(16);
        let open = Arc::new(AtomicUsize::new(0));
        for stream in self.listener.incoming() {
            match stream {
                Ok(s) => {
                    if open.load(Ordering::Relaxed) >= max_conns {
                        tracing::warn!("{max_conns} connections open: refusing another");
                        drop(s);
                        continue;
                    }
                    open.fetch_add(1, Ordering::Relaxed);
                    let srv = srv.clone();
                    let open2 = open.clone();
                    let spawned = std::thread::Builder::new()
                        .name("ringfs-conn".into())
                        .spawn(move || {
                            conn::serve_connection(srv, s);
                            open2.fetch_sub(1, Ordering::Relaxed);
                        });
                    if let Err(e) = spawned {
                        open.fetch_sub(1, Ordering::Relaxed);
                        tracing::error!("no thread for a connection: {e}");
                    }
                }
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        Ok(())
    }
}

/// Starts the server, prints `listening on ADDR epoch N` on stdout (tests
/// and scripts read the port from it) and serves.
pub fn run(cfg: Config) -> Result<(), ServerError> {
    let running = start(cfg)?;
    let srv = running.server.clone();
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "listening on {} epoch {}",
            running.local_addr, srv.state.epoch
        );
        let _ = out.flush();
    }
    tracing::info!(
        addr = %running.local_addr,
        epoch = srv.state.epoch,
        export = %srv.cfg.export.display(),
        read_only = srv.cfg.read_only,
        "serving"
    );
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .map_err(ServerError::Thread)?;
    std::thread::Builder::new()
        .name("ringfs-signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                if let Err(e) = srv.versions.sync() {
                    tracing::error!("syncing the data version log: {e}");
                }
                tracing::info!("stopping");
                std::process::exit(0);
            }
        })
        .map_err(ServerError::Thread)?;
    running.serve()
}
