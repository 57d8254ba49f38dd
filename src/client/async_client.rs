//! The async client (tokio), behind the cargo feature `async-client` so
//! that the core library does not pull in tokio.

use std::collections::HashMap;
use std::path::Path;

use super::*;

/// The async client (tokio): many requests in flight from many tasks on
/// one connection. A reader task routes each reply to the request that
/// waits for it by id; frames with id 0 are events.
pub struct AsyncClient {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    pending: std::sync::Arc<std::sync::Mutex<HashMap<u64, tokio::sync::oneshot::Sender<Frame>>>>,
    next_id: std::sync::atomic::AtomicU64,
    events: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Frame>>,
    info: ServerInfo,
}

impl AsyncClient {
    /// Connect to the daemon at `socket` and greet it.
    pub async fn connect(socket: &Path) -> Result<AsyncClient> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let stream = tokio::net::UnixStream::connect(socket).await?;
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(256);
        tokio::spawn(async move {
            while let Some(f) = rx.recv().await {
                if wr.write_all(&f).await.is_err() {
                    break;
                }
            }
        });
        let pending: std::sync::Arc<
            std::sync::Mutex<HashMap<u64, tokio::sync::oneshot::Sender<Frame>>>,
        > = Default::default();
        let (ev_tx, ev_rx) = tokio::sync::mpsc::unbounded_channel();
        let routes = pending.clone();
        tokio::spawn(async move {
            loop {
                let mut head = [0u8; 16];
                if rd.read_exact(&mut head).await.is_err() {
                    break;
                }
                let Ok(h) = proto::parse_header(&head) else {
                    break;
                };
                let mut payload = vec![0u8; h.payload_len];
                if rd.read_exact(&mut payload).await.is_err() {
                    break;
                }
                let f = Frame {
                    op: h.op,
                    id: h.id,
                    payload,
                };
                if f.id == 0 {
                    let _ = ev_tx.send(f);
                    continue;
                }
                let waiter = routes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&f.id);
                if let Some(w) = waiter {
                    let _ = w.send(f);
                }
            }
            // Connection gone: wake every waiter with an error.
            routes.lock().unwrap_or_else(|e| e.into_inner()).clear();
        });
        let mut c = AsyncClient {
            tx,
            pending,
            next_id: std::sync::atomic::AtomicU64::new(1),
            events: tokio::sync::Mutex::new(ev_rx),
            info: ServerInfo {
                version: 0,
                max_frame: 0,
                max_inflight: 0,
                max_data: 0,
            },
        };
        let r = c
            .call(Op::Hello, &request::hello(b"ringcache-async-client")?)
            .await?;
        c.info = reply::hello(&r)?;
        Ok(c)
    }

    /// What the daemon said in its greeting.
    pub fn server_info(&self) -> ServerInfo {
        self.info
    }

    /// Send a request and wait for its reply: (status, body).
    pub async fn request(&self, op: Op, body: &[u8]) -> Result<(Status, Vec<u8>)> {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        if self
            .tx
            .send(proto::frame(op as u16, id, body))
            .await
            .is_err()
        {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            return Err(ClientError::Protocol("connection closed".into()));
        }
        let f = rx
            .await
            .map_err(|_| ClientError::Protocol("connection closed".into()))?;
        let (st, rest) = reply_of(&f)?;
        Ok((st, rest.to_vec()))
    }

    /// Like [`AsyncClient::request`]; a status other than Ok is an error.
    pub async fn call(&self, op: Op, body: &[u8]) -> Result<Vec<u8>> {
        ok_body(self.request(op, body).await?)
    }

    /// The next event pushed by the daemon.
    pub async fn next_event(&self) -> Option<Frame> {
        self.events.lock().await.recv().await
    }

    pub async fn ping(&self) -> Result<()> {
        self.call(Op::Ping, &[]).await.map(|_| ())
    }
    pub async fn acquire_volume(&self, key: &[u8], aux: &[u8]) -> Result<VolumeHandle> {
        reply::volume(
            &self
                .call(Op::AcquireVolume, &request::acquire_volume(key, aux)?)
                .await?,
        )
    }
    pub async fn relinquish_volume(&self, v: VolumeHandle, invalidate: bool) -> Result<()> {
        self.call(
            Op::RelinquishVolume,
            &request::relinquish_volume(v, invalidate),
        )
        .await
        .map(|_| ())
    }
    pub async fn acquire_cookie(
        &self,
        v: VolumeHandle,
        key: &[u8],
        aux: &[u8],
        size: u64,
    ) -> Result<CookieHandle> {
        reply::cookie(
            &self
                .call(
                    Op::AcquireCookie,
                    &request::acquire_cookie(v, key, aux, size)?,
                )
                .await?,
        )
    }
    pub async fn relinquish_cookie(&self, c: CookieHandle, retire: bool) -> Result<()> {
        self.call(Op::RelinquishCookie, &request::relinquish_cookie(c, retire))
            .await
            .map(|_| ())
    }
    pub async fn use_cookie(&self, c: CookieHandle, will_modify: bool) -> Result<()> {
        self.call(Op::UseCookie, &request::use_cookie(c, will_modify))
            .await
            .map(|_| ())
    }
    pub async fn unuse_cookie(
        &self,
        c: CookieHandle,
        aux: Option<&[u8]>,
        size: Option<u64>,
    ) -> Result<()> {
        self.call(Op::UnuseCookie, &request::unuse_cookie(c, aux, size)?)
            .await
            .map(|_| ())
    }
    pub async fn read(&self, c: CookieHandle, offset: u64, len: u32) -> Result<ReadReply> {
        let (st, body) = self
            .request(Op::Read, &request::read(c, offset, len))
            .await?;
        reply::read(st, &body)
    }
    pub async fn write(&self, c: CookieHandle, offset: u64, data: &[u8]) -> Result<Status> {
        reply::write(
            self.request(Op::Write, &request::write(c, offset, data)?)
                .await?
                .0,
        )
    }
    pub async fn prepare_to_write(&self, c: CookieHandle) -> Result<()> {
        self.call(Op::PrepareToWrite, &request::cookie_only(c))
            .await
            .map(|_| ())
    }
    pub async fn invalidate(&self, c: CookieHandle, aux: &[u8], size: u64) -> Result<()> {
        self.call(Op::Invalidate, &request::invalidate(c, aux, size)?)
            .await
            .map(|_| ())
    }
    pub async fn resize(&self, c: CookieHandle, size: u64) -> Result<()> {
        self.call(Op::Resize, &request::resize(c, size))
            .await
            .map(|_| ())
    }
    pub async fn query_occupancy(&self, c: CookieHandle) -> Result<Vec<(u64, u64)>> {
        reply::occupancy(
            &self
                .call(Op::QueryOccupancy, &request::cookie_only(c))
                .await?,
        )
    }
    pub async fn stats(&self) -> Result<Vec<(String, u64)>> {
        reply::stats(&self.call(Op::Stats, &[]).await?)
    }
    /// The daemon's metrics in the Prometheus text format.
    pub async fn metrics(&self) -> Result<String> {
        reply::metrics(&self.call(Op::Metrics, &[]).await?)
    }
}
