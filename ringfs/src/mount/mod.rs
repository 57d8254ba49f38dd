//! `ringfs mount`: the FUSE client, cached by ringcache.
//!
//! - [`nodes`]: the inode table (node ids, attributes, promises, cookies).
//! - [`cache`]: the connection to ringcached (or the embedded store) and
//!   the export's callback volume.
//! - [`core`]: reads (cache under a valid promise, else revalidate, else
//!   fetch and cache), write-through, breaks and zaps.
//! - [`fs`]: the fuser `Filesystem`.
//!
//! Threads: the FUSE session's workers (`--threads`), the server client's
//! reader (it records breaks before they are acknowledged), one thread
//! per cache connection for zaps, and one that sends the kernel its
//! notifications (`inval_inode`, `inval_entry`), so that no request
//! handler ever waits on the kernel.

pub mod cache;
pub mod core;
pub mod fs;
pub mod nodes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use anyhow::Context;
use fuser::{INodeNo, MountOption, Notifier};

use self::cache::{Cache, Source, ZapSink};
use self::core::{Core, Notice, Tunables};
use crate::client::{Client, ClientConfig, Event, ServerBreakReason, new_client_id};

/// Where the mount caches.
#[derive(Debug, Clone)]
pub enum CacheChoice {
    /// The local ringcached at this socket.
    Daemon(PathBuf),
    /// An embedded store on this device or file (made with `size` bytes
    /// if it does not exist).
    Embedded { device: PathBuf, size: u64 },
    /// No cache: every read goes to the server.
    None,
}

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountConfig {
    pub server: SocketAddr,
    pub mountpoint: PathBuf,
    pub cache: CacheChoice,
    /// FUSE worker threads.
    pub threads: usize,
    pub read_only: bool,
    pub allow_other: bool,
    /// How long a request waits for the server (across reconnects)
    /// before it fails with ENOTCONN.
    pub timeout: Duration,
    pub tun: Tunables,
}

impl MountConfig {
    pub fn new(server: SocketAddr, mountpoint: PathBuf, cache: CacheChoice) -> MountConfig {
        MountConfig {
            server,
            mountpoint,
            cache,
            threads: 16,
            read_only: false,
            allow_other: false,
            timeout: Duration::from_secs(30),
            tun: Tunables::default(),
        }
    }
}

/// The ringcached socket `ringcached` uses on its embedded default.
pub const DEFAULT_CACHE_SOCKET: &str = "ringcache-data/ringcached.sock";

type Slot = Arc<OnceLock<Weak<Core>>>;

fn with_core(slot: &Slot, f: impl FnOnce(&Core)) {
    if let Some(c) = slot.get().and_then(Weak::upgrade) {
        f(&c);
    }
}

/// What a server event does (on the client's reader thread, before the
/// break is acknowledged).
fn on_server_event(core: &Core, ev: &Event) {
    match ev {
        Event::Break { file, .. } => core.break_file(*file),
        // Promises stand while disconnected (breaks owed are delivered
        // when the client is back; a new epoch voids everything).
        Event::ServerBreak {
            reason: ServerBreakReason::Disconnected,
        } => tracing::warn!("lost the server; reconnecting"),
        Event::ServerBreak { reason } => {
            tracing::info!(?reason, "every promise broken");
            core.break_all(None);
        }
        Event::Reconnected { epoch, resumed } => {
            tracing::info!(epoch, resumed, "connected to the server again");
            if let Some(c) = &core.cache {
                c.set_epoch(*epoch);
            }
        }
    }
}

/// The notification thread: tells the kernel what to drop.
fn notifier(rx: Receiver<Notice>, n: Notifier) {
    use std::os::unix::ffi::OsStrExt;
    for notice in rx {
        let r = match &notice {
            Notice::Inode(ino) => n.inval_inode(INodeNo(*ino), 0, 0),
            Notice::Entry(parent, name) => {
                n.inval_entry(INodeNo(*parent), std::ffi::OsStr::from_bytes(name))
            }
        };
        if let Err(e) = r
            && e.raw_os_error() != Some(libc::ENOENT)
        {
            tracing::debug!(?notice, "notification failed: {e}");
        }
    }
}

/// Opens the embedded store on `device` (made with `size` bytes if it
/// does not exist).
fn open_embedded(device: PathBuf, size: u64) -> anyhow::Result<ringcache::daemon::Embedded> {
    let mut cfg = ringcache::daemon::Config::embedded();
    cfg.create_bytes = (!device.exists()).then_some(size);
    cfg.device = device;
    ringcache::daemon::Embedded::open(cfg).context("opening the embedded cache")
}

/// Mounts and serves until unmounted (`umount`, or SIGTERM/SIGINT), then
/// says farewell to the server and relinquishes the cookies.
pub fn run(cfg: MountConfig) -> anyhow::Result<()> {
    let slot: Slot = Arc::new(OnceLock::new());
    let mut ccfg = ClientConfig::new("ringfs-mount", new_client_id());
    ccfg.request_timeout = cfg.timeout;
    ccfg.queue_events = false;
    {
        let slot = slot.clone();
        ccfg.on_event = Some(Arc::new(move |ev: &Event| {
            with_core(&slot, |c| on_server_event(c, ev));
        }));
    }
    let server = Client::connect(cfg.server, ccfg)
        .with_context(|| format!("connecting to the ringfs server at {}", cfg.server))?;
    let w = server.welcome();
    let root = server
        .getattr(w.root)
        .context("reading the export's root")?;
    let zaps: ZapSink = {
        let slot = slot.clone();
        Arc::new(move |g, z| with_core(&slot, |c| c.zap(g, z.handle)))
    };
    let cache = match &cfg.cache {
        CacheChoice::None => None,
        CacheChoice::Daemon(sock) => Some(
            Cache::open(Source::Socket(sock.clone()), &w.export_id, w.epoch, zaps).map_err(
                |e| {
                    anyhow::anyhow!(
                        "no ringcached answers on {} ({e}).\n\
                         Start one (`ringcached`, or `ringcached --socket {}`), \
                         or mount with `--cache-device FILE` for an embedded cache, \
                         or `--no-cache`.",
                        sock.display(),
                        sock.display()
                    )
                },
            )?,
        ),
        CacheChoice::Embedded { device, size } => {
            let e = Arc::new(open_embedded(device.clone(), *size)?);
            Some(
                Cache::open(Source::Embedded(e), &w.export_id, w.epoch, zaps)
                    .context("opening the export's volume in the embedded cache")?,
            )
        }
    };
    let (tx, rx) = channel();
    let mut tun = cfg.tun;
    tun.fallback_threads = cfg.threads.max(1);
    let core = Arc::new(Core::new(
        server,
        cache,
        nodes::Table::new(root.attr),
        tx,
        tun,
    ));
    let _ = slot.set(Arc::downgrade(&core));

    let mut fc = fuser::Config::default();
    fc.mount_options = vec![
        MountOption::FSName(format!("ringfs:{}", cfg.server)),
        MountOption::Subtype("ringfs".into()),
        MountOption::DefaultPermissions,
    ];
    if cfg.read_only {
        fc.mount_options.push(MountOption::RO);
    }
    if cfg.allow_other {
        fc.acl = fuser::SessionACL::All;
    }
    fc.n_threads = Some(cfg.threads.max(1));
    let fsys = fs::RingFs::new(core.clone(), cfg.read_only || w.read_only);
    let mut session = fuser::Session::new(fsys, &cfg.mountpoint, &fc)
        .with_context(|| format!("mounting on {}", cfg.mountpoint.display()))?;
    {
        let n = session.notifier();
        std::thread::Builder::new()
            .name("ringfs-notify".into())
            .spawn(move || notifier(rx, n))?;
    }
    {
        let mut unmounter = session.unmount_callable();
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])?;
        std::thread::Builder::new()
            .name("ringfs-signals".into())
            .spawn(move || {
                if signals.forever().next().is_some()
                    && let Err(e) = unmounter.unmount()
                {
                    tracing::error!("unmounting: {e}");
                }
            })?;
    }
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "mounted {} on {}",
            cfg.server,
            cfg.mountpoint.display()
        );
        let _ = out.flush();
    }
    tracing::info!(server = %cfg.server, mountpoint = %cfg.mountpoint.display(), "mounted");
    let served = session.run();
    // Reads handed to the cache's read thread or the fetch threads are
    // answered (to a kernel that no longer listens) before the cookies go.
    core.quiesce(cfg.timeout);
    // Unmounted: give everything back.
    let cookies = core.table().take_all_cookies();
    let mut embedded = None;
    if let Some(cache) = &core.cache {
        if let Some(conn) = cache.live() {
            for (g, h) in cookies {
                if g == conn.gen_ {
                    let _ = conn.client.relinquish_cookie(h, false);
                }
            }
        }
        cache.close();
        embedded = cache.embedded().cloned();
    }
    if let Err(e) = core.server.farewell() {
        tracing::warn!("farewell to the server: {e}");
    }
    drop(core);
    if let Some(e) = embedded {
        // The last reference once the mount's state is gone: a clean close.
        match Arc::try_unwrap(e) {
            Ok(e) => {
                if let Err(e) = e.close() {
                    tracing::error!("closing the embedded cache: {e:#}");
                }
            }
            Err(_) => tracing::warn!("the embedded cache is still in use: not closed cleanly"),
        }
    }
    tracing::info!("unmounted");
    served.context("serving the mount")
}
