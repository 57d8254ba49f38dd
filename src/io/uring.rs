//! The io_uring engine (in progress): until it lands, opening it fails and
//! `EngineKind::Auto` falls back to psync.

use std::fs::File;

use super::{CompletionQueue, IoEngine, Op, OpenOptions};

/// See the module docs.
pub struct UringEngine {
    device_bytes: u64,
}

impl UringEngine {
    /// Not yet available.
    pub fn new(
        _file: File,
        device_bytes: u64,
        _opts: &OpenOptions,
    ) -> std::io::Result<UringEngine> {
        let _ = device_bytes;
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "io_uring engine not built yet",
        ))
    }
}

impl IoEngine for UringEngine {
    fn name(&self) -> &'static str {
        "uring"
    }
    fn device_bytes(&self) -> u64 {
        self.device_bytes
    }
    fn submit(&self, _ops: &mut Vec<Op>, _cq: &CompletionQueue) {}
}
