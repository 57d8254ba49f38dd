//! Run the store's loader so that a panic in it on a hostile image becomes
//! an error message of the tool, not a crash with a backtrace.

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

/// Run `f`; if it panics, return what the panic said and where. The
/// default panic hook is silenced meanwhile (the tools are single-threaded,
/// so no other thread's panic is swallowed).
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let said: Arc<Mutex<Option<String>>> = Arc::default();
    let sink = said.clone();
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if let Ok(mut s) = sink.lock() {
            *s = Some(format!("{msg}{at}"));
        }
    }));
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    panic::set_hook(previous);
    r.map_err(|_| {
        said.lock()
            .ok()
            .and_then(|mut s| s.take())
            .unwrap_or_else(|| "unknown cause".into())
    })
}
