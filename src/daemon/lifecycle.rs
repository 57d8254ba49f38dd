//! The daemon's life: bind the socket, accept connections (a thread each),
//! housekeeping (LRU discard, a flush when dirty, giving free heap pages
//! back), signals, sd_notify
//! readiness, and the clean shutdown (stop accepting, let connections
//! finish within a grace period, flush, checkpoint, mark clean).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::connection::{CONN_STACK, serve_connection};
use super::server::{Daemon, lock};
use super::{Config, SHUTDOWN_GRACE};

/// Ask a running daemon to shut down cleanly.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<Lifecycle>);

impl ShutdownHandle {
    /// Begin the clean shutdown.
    pub fn shutdown(&self) {
        self.0.stop();
    }

    /// Where the daemon serves `GET /metrics` (`metrics_listen`), as bound:
    /// with port 0 in the configuration, this has the port it got.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.0.metrics_addr
    }
}

/// The shutdown as connections see it: a flag, and an eventfd that turns
/// readable (and stays so) when shutdown begins, so a connection's reader
/// waiting for its next frame wakes without its socket being shut down
/// under the client (which would make the client's next send fail with
/// EPIPE instead of being answered).
pub(super) struct Stop {
    began: AtomicBool,
    fd: nix::sys::eventfd::EventFd,
    /// When the grace period ends (set with `began`).
    deadline: Mutex<Option<Instant>>,
}

/// How long a connection may stay quiet after shutdown began before the
/// daemon closes it (a client in the middle of an exchange gets its
/// answers, `ShuttingDown` for what it sends now; an idle one is let go).
pub(super) const DRAIN_QUIET: Duration = Duration::from_millis(100);

impl Stop {
    pub(super) fn new() -> std::io::Result<Stop> {
        use nix::sys::eventfd::{EfdFlags, EventFd};
        let fd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Stop {
            began: AtomicBool::new(false),
            fd,
            deadline: Mutex::new(None),
        })
    }

    /// Shutdown begins: every waiting reader wakes.
    pub(super) fn begin(&self) {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + SHUTDOWN_GRACE);
        self.began.store(true, Ordering::SeqCst);
        if let Err(e) = self.fd.write(1) {
            tracing::warn!(error = %e, "cannot wake the connections for shutdown");
        }
    }

    pub(super) fn began(&self) -> bool {
        self.began.load(Ordering::SeqCst)
    }

    /// How long a draining connection waits for its next frame.
    pub(super) fn quiet_left(&self) -> Duration {
        let deadline = *self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        deadline.map_or(DRAIN_QUIET, |d| {
            DRAIN_QUIET.min(d.saturating_duration_since(Instant::now()))
        })
    }

    pub(super) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }
}

/// What the accept loop, the housekeeping thread and shutdown share.
pub(super) struct Lifecycle {
    pub(super) stopping: AtomicBool,
    /// Signalled when `stopping` is set (wakes housekeeping early).
    pub(super) stopped: Condvar,
    pub(super) sleep: Mutex<()>,
    /// The listening socket, shut down to wake the accept loop.
    pub(super) listener: Mutex<Option<UnixListener>>,
    /// The metrics listener, shut down likewise to wake its thread.
    pub(super) metrics_listener: Mutex<Option<TcpListener>>,
    /// Where the metrics listener is bound.
    pub(super) metrics_addr: Option<SocketAddr>,
}

impl Lifecycle {
    pub(super) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(l) = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            // Makes a blocked accept(2) return at once.
            let _ = nix::sys::socket::shutdown(l.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
        if let Some(l) = lock(&self.metrics_listener).as_ref() {
            // The same for a TCP listener (accept(2) fails with EINVAL).
            let _ = nix::sys::socket::shutdown(l.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
        let _g = self.sleep.lock().unwrap_or_else(|e| e.into_inner());
        self.stopped.notify_all();
    }

    pub(super) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Sleep for `d` or until shutdown begins; returns whether it began.
    pub(super) fn sleep(&self, d: Duration) -> bool {
        let g = self.sleep.lock().unwrap_or_else(|e| e.into_inner());
        if self.stopping() {
            return true;
        }
        let _ = self
            .stopped
            .wait_timeout(g, d)
            .unwrap_or_else(|e| e.into_inner());
        self.stopping()
    }
}

/// One descriptor per client: raise the soft limit to the hard one.
pub(super) fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(error = %e, "cannot raise the open file limit");
    }
}

/// Send `READY=1` to systemd when run under it.
pub(super) fn sd_notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let r = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| sock.send_to_addr(b"READY=1", &a))
    } else {
        sock.send_to(b"READY=1", Path::new(&path))
    };
    if let Err(e) = r {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// Bind the socket: refuse if another daemon answers on it, replace a
/// stale one.
pub(super) fn bind(sock: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    if sock.exists() {
        // A stale socket from a crashed daemon: refuse if one answers.
        if UnixStream::connect(sock).is_ok() {
            anyhow::bail!("{} is served by another daemon", sock.display());
        }
        std::fs::remove_file(sock).with_context(|| format!("removing stale {}", sock.display()))?;
    }
    if let Some(dir) = sock.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let listener =
        UnixListener::bind(sock).with_context(|| format!("binding {}", sock.display()))?;
    std::fs::set_permissions(sock, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Bind the metrics listener of `metrics_listen`: the listener and the
/// address it got (port 0 picks one).
fn bind_metrics(addr: SocketAddr) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(addr).with_context(|| format!("binding metrics_listen {addr}"))?;
    let bound = l.local_addr().context("the metrics listener's address")?;
    tracing::info!("serving metrics at http://{bound}/metrics");
    Ok((l, bound))
}

/// Run the daemon until SIGTERM/SIGINT (or `shutdown`), then shut down
/// cleanly: stop accepting, finish requests in flight, release every
/// client's cookies, flush and checkpoint, mark the cache clean.
/// `on_ready` is called once the socket accepts connections.
///
/// Threads: this one accepts; each connection has one thread that serves
/// its requests and answers its reads as their I/O completes, asleep in
/// poll(2) on its socket and ring when idle (see the module docs), so a
/// read costs no hand-off to another thread. One more thread runs housekeeping (LRU discard, a flush
/// when dirty, once a second; free heap pages back every `heap_trim`), one waits for signals, and with
/// `metrics_listen` one answers `GET /metrics`.
pub fn run(
    cfg: Config,
    on_ready: impl FnOnce(ShutdownHandle) + Send + 'static,
) -> anyhow::Result<()> {
    raise_fd_limit();
    let daemon = Daemon::open(cfg)?;
    let sock = daemon.cfg.socket.clone();
    let listener = bind(&sock, daemon.cfg.socket_mode)?;
    let metrics = match daemon.cfg.metrics_listen.map(bind_metrics).transpose() {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(&sock);
            return Err(e);
        }
    };
    let life = Arc::new(Lifecycle {
        stopping: AtomicBool::new(false),
        stopped: Condvar::new(),
        sleep: Mutex::new(()),
        listener: Mutex::new(Some(listener.try_clone()?)),
        metrics_listener: Mutex::new(metrics.as_ref().map(|(l, _)| l.try_clone()).transpose()?),
        metrics_addr: metrics.as_ref().map(|&(_, a)| a),
    });
    let handle = ShutdownHandle(life.clone());
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("installing signal handlers")?;
    let signal_handle = signals.handle();
    let signal_thread = {
        let handle = handle.clone();
        std::thread::Builder::new()
            .name("ringcached-signals".into())
            .spawn(move || {
                if signals.forever().next().is_some() {
                    // Shut down first: logging may fail (stderr a closed
                    // pipe), and nothing may stand between the signal and
                    // the shutdown.
                    handle.shutdown();
                    tracing::info!("signal received: shutting down");
                }
            })?
    };
    tracing::info!(socket = %sock.display(), "ready");
    sd_notify_ready();
    on_ready(handle.clone());
    let open: Mutex<HashMap<u64, UnixStream>> = Mutex::new(HashMap::new());
    let result = std::thread::scope(|scope| -> anyhow::Result<()> {
        let d = &*daemon;
        let life = &*life;
        // LRU: discard idle cookies once a second; data does not stay
        // volatile for more than a second.
        std::thread::Builder::new()
            .name("ringcached-housekeeping".into())
            .spawn_scoped(scope, move || housekeeping(d, life))?;
        if let Some((l, _)) = &metrics {
            std::thread::Builder::new()
                .name("ringcached-metrics".into())
                .spawn_scoped(scope, move || super::metrics_http::serve(d, l, life))?;
        }
        let open = &open;
        let mut next_conn = 0u64;
        for stream in listener.incoming() {
            if life.stopping() {
                break;
            }
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // Out of descriptors, say: do not spin.
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            if lock(open).len() >= d.cfg.max_connections {
                refuse(stream, d.cfg.max_connections);
                continue;
            }
            let id = next_conn;
            next_conn += 1;
            if let Ok(s) = stream.try_clone() {
                lock(open).insert(id, s);
            }
            let spawned = std::thread::Builder::new()
                .name("ringcached-conn".into())
                .stack_size(CONN_STACK)
                .spawn_scoped(scope, move || {
                    serve_connection(d, stream);
                    lock(open).remove(&id);
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start a connection thread");
                lock(open).remove(&id);
            }
        }
        drop(listener);
        let _ = std::fs::remove_file(&sock);
        // Connections answer what they have read, then `ShuttingDown` to
        // whatever comes in while their client is still talking, and close
        // once it has been quiet for DRAIN_QUIET; the scope waits for them.
        d.stop.begin();
        // A client that does not take its replies would hold its
        // connection's thread in a write: after a grace period, cut it off.
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while !lock(open).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let stuck = lock(open);
        if !stuck.is_empty() {
            tracing::warn!(
                connections = stuck.len(),
                "connections did not finish in time; closing them"
            );
            for s in stuck.values() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
        drop(stuck);
        Ok(())
    });
    signal_handle.close();
    let _ = signal_thread.join();
    result?;
    close(daemon)?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// A client over the connection cap: told so in the one frame it gets (a
/// Hello reply of status Busy with id 0, which no request has), then
/// closed, without a thread. The write cannot block the accept loop: the
/// frame is far smaller than a fresh socket's buffer, and the socket is
/// non-blocking for it.
fn refuse(stream: UnixStream, cap: usize) {
    use std::io::Write;
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            cap,
            "connection cap reached: refusing clients (max_connections)"
        );
    }
    let frame = super::frames::reply_frame(
        crate::proto::Op::Hello as u16,
        0,
        crate::proto::Status::Busy,
        &[],
    );
    let _ = stream.set_nonblocking(true);
    let _ = (&stream).write_all(&frame);
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// LRU discard of idle cookies and a flush when dirty, once a second,
/// until shutdown begins: data does not stay volatile for more than a
/// second. After them, every `heap_trim`, the allocator's free pages go
/// back to the system (`crate::heap`).
pub(super) fn housekeeping(d: &Daemon, life: &Lifecycle) {
    let mut cookies = Vec::new();
    let mut last_trim = Instant::now();
    while !life.sleep(Duration::from_secs(1)) {
        d.cache.lru_scan_with(Instant::now(), &mut cookies);
        if d.store.failed().is_none()
            && let Err(e) = d.store.flush_if_dirty()
        {
            tracing::warn!(error = %e, "periodic flush failed");
        }
        if let Some(why) = d.store.failed() {
            // Persistent device errors (this flush's, or a request's): the
            // cache is withdrawn within a second even when no request runs
            // into them (at once when one does); nothing more is flushed.
            d.cache.withdraw_cache(&why);
        }
        // After the flush, which it must not delay.
        if crate::heap::SUPPORTED
            && !d.cfg.heap_trim.is_zero()
            && last_trim.elapsed() >= d.cfg.heap_trim
        {
            d.trim_heap();
            last_trim = Instant::now();
        }
    }
}

/// The last step of a clean shutdown, once no client is left: flush,
/// checkpoint and mark the cache clean.
pub(super) fn close(daemon: Arc<Daemon>) -> anyhow::Result<()> {
    let store = daemon.store.clone();
    drop(daemon);
    match Arc::try_unwrap(store) {
        Ok(s) => s.close().context("closing the cache")?,
        Err(s) => {
            s.checkpoint().context("checkpointing the cache")?;
            tracing::warn!("store still referenced at shutdown: checkpointed, not marked clean");
        }
    }
    Ok(())
}
