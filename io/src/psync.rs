//! The portable engine: pread/pwrite/fdatasync on a few worker threads.
//!
//! Used where io_uring is refused (old kernels, seccomp, io_uring_disabled)
//! and as a reference in tests. Each worker takes one request at a time, so
//! the number of workers bounds the device queue depth.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::{
    BufPool, Completion, CompletionQueue, IoBuf, IoEngine, IoError, Op, OpKind, PoolConfig,
    check_request,
};

/// Worker threads per engine.
const WORKERS: usize = 4;
/// Requests queued beyond the workers before submitters wait.
const QUEUE_LIMIT: usize = 256;

struct Shared {
    file: File,
    device_bytes: u64,
    queue: Mutex<(VecDeque<(Op, CompletionQueue)>, bool)>,
    work: Condvar,
    space: Condvar,
}

/// See the module docs.
pub struct PsyncEngine {
    shared: Arc<Shared>,
    pool: BufPool,
    workers: Vec<JoinHandle<()>>,
}

impl PsyncEngine {
    /// An engine over `file` of `device_bytes`.
    pub fn new(file: File, device_bytes: u64, pool: &PoolConfig) -> PsyncEngine {
        let shared = Arc::new(Shared {
            file,
            device_bytes,
            // Full size from the start: the queue never grows while in use.
            queue: Mutex::new((VecDeque::with_capacity(QUEUE_LIMIT), false)),
            work: Condvar::new(),
            space: Condvar::new(),
        });
        let workers = (0..WORKERS)
            .map(|i| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("ringcache-psync-{i}"))
                    .spawn(move || worker(&s))
                    .unwrap_or_else(|e| panic!("cannot start an I/O worker thread: {e}"))
            })
            .collect();
        PsyncEngine {
            shared,
            pool: BufPool::new(pool),
            workers,
        }
    }
}

fn execute(s: &Shared, op: &mut Op) -> Result<usize, IoError> {
    check_request(op, s.device_bytes)?;
    let offset = op.offset;
    let os = |source| IoError::Os { offset, source };
    match op.kind {
        OpKind::Read => {
            let want = op.buf.len();
            let mut done = 0;
            while done < want {
                let n = s
                    .file
                    .read_at(&mut op.buf[done..], offset + done as u64)
                    .map_err(os)?;
                if n == 0 {
                    return Err(IoError::Short {
                        what: "read",
                        offset,
                        done,
                        wanted: want,
                    });
                }
                done += n;
            }
            Ok(done)
        }
        OpKind::Write => {
            s.file.write_all_at(&op.buf, offset).map_err(os)?;
            Ok(op.buf.len())
        }
        OpKind::Flush => s.file.sync_data().map(|_| 0).map_err(os),
    }
}

fn worker(s: &Shared) {
    loop {
        let (mut op, cq) = {
            let mut q = s.queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(item) = q.0.pop_front() {
                    s.space.notify_one();
                    break item;
                }
                if q.1 {
                    return;
                }
                q = s.work.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let result = execute(s, &mut op);
        cq.push(Completion {
            tag: op.tag,
            result,
            buf: op.buf,
        });
    }
}

impl IoEngine for PsyncEngine {
    fn name(&self) -> &'static str {
        "psync"
    }

    fn device_bytes(&self) -> u64 {
        self.shared.device_bytes
    }

    fn submit(&self, ops: &mut Vec<Op>, cq: &CompletionQueue) {
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        for op in ops.drain(..) {
            while q.0.len() >= QUEUE_LIMIT {
                self.shared.work.notify_all();
                q = self.shared.space.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            q.0.push_back((op, cq.clone()));
        }
        drop(q);
        self.shared.work.notify_all();
    }

    fn alloc(&self, len: usize) -> IoBuf {
        self.pool.alloc(len)
    }
}

impl Drop for PsyncEngine {
    fn drop(&mut self) {
        // Workers finish what is queued, then exit.
        {
            let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.1 = true;
        }
        self.shared.work.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
