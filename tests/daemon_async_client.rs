//! The async client: many requests in flight from many tasks on one
//! connection, each reply reaching the task that asked, against the real
//! daemon.

mod common;

use std::sync::Arc;

use common::daemon::{DaemonProc, write_config};
use ringcache::client::{AsyncClient, ReadReply, ReadSegment};
use ringcache::proto::Status;

#[test]
fn concurrent_requests_on_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let d = DaemonProc::start(dir.path(), &config);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = Arc::new(AsyncClient::connect(&d.socket).await.unwrap());
        assert_eq!(c.server_info().version, ringcache::proto::VERSION);
        let v = c.acquire_volume(b"async", b"").await.unwrap();
        let k = c.acquire_cookie(v, b"obj", b"", 64 * 4096).await.unwrap();
        c.use_cookie(k, false).await.unwrap();
        // Each block holds its own index.
        let writes: Vec<_> = (0..64u8)
            .map(|b| {
                let c = c.clone();
                tokio::spawn(
                    async move { c.write(k, u64::from(b) * 4096, &[b; 4096]).await.unwrap() },
                )
            })
            .collect();
        for w in writes {
            assert_eq!(w.await.unwrap(), Status::Ok);
        }
        let reads: Vec<_> = (0..64u8)
            .rev()
            .map(|b| {
                let c = c.clone();
                tokio::spawn(
                    async move { (b, c.read(k, u64::from(b) * 4096, 4096).await.unwrap()) },
                )
            })
            .collect();
        for r in reads {
            let (b, reply) = r.await.unwrap();
            match reply {
                ReadReply::Data(segs) => match &segs[..] {
                    [ReadSegment::Data { data, .. }] => {
                        assert!(data.iter().all(|&x| x == b), "block {b}")
                    }
                    other => panic!("block {b}: {other:?}"),
                },
                other => panic!("block {b}: {other:?}"),
            }
        }
        assert_eq!(c.query_occupancy(k).await.unwrap(), vec![(0, 64 * 4096)]);
        let stats = c.stats().await.unwrap();
        assert!(stats.iter().any(|(n, v)| n == "fscache.writes" && *v == 64));
        c.relinquish_cookie(k, false).await.unwrap();
        c.relinquish_volume(v, false).await.unwrap();
    });
}
