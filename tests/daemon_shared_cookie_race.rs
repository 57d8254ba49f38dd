//! Two connections acquiring and relinquishing the same file of a
//! callback volume never see Busy: when one gives back the last handle of
//! the shared cookie while the other acquires the key, the acquire waits
//! for the old cookie to go instead of failing.

mod common;

use common::daemon::{DaemonProc, write_config};
use ringcache::client::ClientError;
use ringcache::proto::Status;

#[test]
fn acquire_racing_the_last_relinquish_never_sees_busy() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let d = DaemonProc::start(dir.path(), &config);
    let socket = d.socket.clone();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut c = ringcache::client::Client::connect(&socket).unwrap();
                let v = c.acquire_volume(b"ringfs.race", b"").unwrap();
                c.declare_server(v, b"srv", 1).unwrap();
                for i in 0..2000 {
                    let k = match c.acquire_cookie(v, b"file", &1u64.to_le_bytes(), 4096) {
                        Ok(k) => k,
                        Err(ClientError::Status(Status::Busy)) => {
                            panic!("Busy at iteration {i}")
                        }
                        Err(e) => panic!("{e}"),
                    };
                    c.relinquish_cookie(k, false).unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}
