//! The mount's connection to ringcache: the daemon's socket, or a
//! session with the embedded store in this process; the export's callback
//! volume; and what happens when the daemon goes away (the mount carries
//! on without a cache and connects again at most once a second).
//!
//! Each connection has a generation; a cookie handle is only used with
//! the generation it was acquired on.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ringcache::client::{ClientError, Requests, SharedClient, VolumeHandle, ZapEvent};
use ringcache::daemon::{Embedded, LocalSession};

/// How often a lost daemon is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// A live connection.
pub struct Conn {
    pub client: Arc<dyn Requests>,
    pub volume: VolumeHandle,
    pub gen_: u64,
    /// The session, when the cache is embedded (its zap waiter ends with
    /// the connection).
    local: Option<Arc<LocalSession>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(l) = &self.local {
            l.close_events();
        }
    }
}

/// Where the cache is.
pub enum Source {
    /// A ringcached on this socket.
    Socket(PathBuf),
    /// A store in this process.
    Embedded(Arc<Embedded>),
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Source::Socket(p) => p.display().to_string(),
            Source::Embedded(_) => "the embedded store".into(),
        }
    }
}

/// Zaps are handed to this with the connection's generation.
pub type ZapSink = Arc<dyn Fn(u64, ZapEvent) + Send + Sync>;

struct State {
    conn: Option<Arc<Conn>>,
    next_gen: u64,
    retry_at: Instant,
    /// Logged once per outage.
    warned: bool,
}

/// The cache side of a mount.
pub struct Cache {
    source: Source,
    volume_key: Vec<u8>,
    server_id: Vec<u8>,
    epoch: AtomicU64,
    st: Mutex<State>,
    zaps: ZapSink,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The cache volume key of an export: printable, no `/`.
pub fn volume_key(export_id: &[u8; 16]) -> Vec<u8> {
    let hex: String = export_id.iter().map(|b| format!("{b:02x}")).collect();
    format!("ringfs.{hex}").into_bytes()
}

impl Cache {
    /// Connects to the daemon at `socket` (an error if none answers) and
    /// opens the export's volume.
    pub fn open(
        source: Source,
        export_id: &[u8; 16],
        epoch: u64,
        zaps: ZapSink,
    ) -> Result<Cache, ClientError> {
        let cache = Cache {
            source,
            volume_key: volume_key(export_id),
            server_id: export_id.to_vec(),
            epoch: AtomicU64::new(epoch),
            st: Mutex::new(State {
                conn: None,
                next_gen: 1,
                retry_at: Instant::now(),
                warned: false,
            }),
            zaps,
        };
        let conn = cache.connect(1)?;
        {
            let mut st = lock(&cache.st);
            st.conn = Some(conn);
            st.next_gen = 2;
        }
        Ok(cache)
    }

    fn connect(&self, gen_: u64) -> Result<Arc<Conn>, ClientError> {
        let (client, local): (Arc<dyn Requests>, _) = match &self.source {
            Source::Socket(socket) => {
                let c = SharedClient::connect(socket, b"ringfs-mount")?;
                if let Some(rx) = c.take_events() {
                    let zaps = self.zaps.clone();
                    std::thread::Builder::new()
                        .name("ringfs-zaps".into())
                        .spawn(move || {
                            // Ends when the connection does.
                            for f in rx {
                                if let Some(z) = ZapEvent::parse(&f) {
                                    zaps(gen_, z);
                                }
                            }
                        })?;
                }
                (Arc::new(c), None)
            }
            Source::Embedded(e) => {
                let s =
                    Arc::new(e.session().ok_or_else(|| {
                        ClientError::Protocol("the embedded store is closed".into())
                    })?);
                let (waiter, zaps) = (s.clone(), self.zaps.clone());
                std::thread::Builder::new()
                    .name("ringfs-zaps".into())
                    .spawn(move || {
                        while let Some(batch) = waiter.wait_zaps() {
                            for z in batch {
                                zaps(gen_, z);
                            }
                        }
                    })?;
                (s.clone() as Arc<dyn Requests>, Some(s))
            }
        };
        let volume = client.acquire_volume(&self.volume_key, &[])?;
        client.declare_server(volume, &self.server_id, self.epoch.load(Ordering::SeqCst))?;
        Ok(Arc::new(Conn {
            client,
            volume,
            gen_,
            local,
        }))
    }

    /// The live connection, connecting again if it was lost and the last
    /// try is a second old; `None`: go without the cache for now.
    pub fn conn(&self) -> Option<Arc<Conn>> {
        let mut st = lock(&self.st);
        if let Some(c) = &st.conn {
            if !c.client.is_dead() {
                return Some(c.clone());
            }
            st.conn = None;
        }
        let now = Instant::now();
        if now < st.retry_at {
            return None;
        }
        st.retry_at = now + RETRY;
        let gen_ = st.next_gen;
        st.next_gen += 1;
        match self.connect(gen_) {
            Ok(c) => {
                tracing::info!(cache = %self.source.describe(), "connected to the cache again");
                st.warned = false;
                st.conn = Some(c.clone());
                Some(c)
            }
            Err(e) => {
                if !st.warned {
                    tracing::warn!(
                        cache = %self.source.describe(),
                        "the cache is unavailable ({e}); going to the server until it is back"
                    );
                    st.warned = true;
                }
                None
            }
        }
    }

    /// A call on `conn` failed with `e`: a lost connection is dropped (the
    /// next [`Cache::conn`] tries again); anything else is logged.
    pub fn failed(&self, conn: &Conn, e: &ClientError) {
        if conn.client.is_dead() || matches!(e, ClientError::Io(_)) {
            let mut st = lock(&self.st);
            if st.conn.as_ref().is_some_and(|c| c.gen_ == conn.gen_) {
                st.conn = None;
                if !st.warned {
                    tracing::warn!("lost the cache ({e}); going to the server until it is back");
                    st.warned = true;
                }
            }
        } else {
            tracing::warn!("cache request failed: {e}");
        }
    }

    /// The server is now at `epoch` (a new one is a whole-server break in
    /// the cache).
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::SeqCst);
        if let Some(c) = self.live()
            && let Err(e) = c.client.declare_server(c.volume, &self.server_id, epoch)
        {
            self.failed(&c, &e);
        }
    }

    /// The live connection, without trying to make one.
    pub fn live(&self) -> Option<Arc<Conn>> {
        lock(&self.st)
            .conn
            .as_ref()
            .filter(|c| !c.client.is_dead())
            .cloned()
    }

    /// Closes the connection (at unmount, after the cookies went).
    pub fn close(&self) {
        if let Some(c) = lock(&self.st).conn.take() {
            let _ = c.client.relinquish_volume(c.volume, false);
        }
    }

    /// The embedded store, if the cache is one.
    pub fn embedded(&self) -> Option<&Arc<Embedded>> {
        match &self.source {
            Source::Embedded(e) => Some(e),
            Source::Socket(_) => None,
        }
    }
}

/// An object key: the file id (ino, then generation, little-endian).
pub fn object_key(id: crate::wire::FileId) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&id.ino.to_le_bytes());
    k[8..].copy_from_slice(&id.gen_.to_le_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_keys_are_valid_cache_volume_keys() {
        let k = volume_key(&[0xab; 16]);
        assert!(ringcache_ondisk_check(&k));
        assert_eq!(k.len(), 7 + 32);
    }

    fn ringcache_ondisk_check(k: &[u8]) -> bool {
        k.iter().all(|&b| (0x21..=0x7e).contains(&b) && b != b'/')
    }

    #[test]
    fn object_keys_tell_generations_apart() {
        use crate::wire::FileId;
        let a = object_key(FileId { ino: 5, gen_: 1 });
        let b = object_key(FileId { ino: 5, gen_: 2 });
        assert_ne!(a, b);
    }
}
