//! The locks, condition variables and atomics of the engines' hand-off
//! logic (the completion queues and the io_uring driver and waiter roles):
//! std's, or shuttle's in the model's build (`--cfg ringcache_model`,
//! tests only), whose scheduler then explores the interleavings of the
//! threads that use them (see `model`). Counters that decide nothing stay
//! std's either way.

#[cfg(not(all(test, ringcache_model)))]
pub(crate) use std::sync::{
    Condvar, Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicUsize},
};

#[cfg(all(test, ringcache_model))]
pub(crate) use shuttle::sync::{
    Condvar, Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicUsize},
};

/// Back off before trying a refused system call again: 1 ms, or, in the
/// model, a yield to the other threads (shuttle's time does not pass).
pub(crate) fn back_off() {
    #[cfg(not(all(test, ringcache_model)))]
    std::thread::sleep(std::time::Duration::from_millis(1));
    #[cfg(all(test, ringcache_model))]
    shuttle::thread::yield_now();
}

/// Let another thread run (a thread that finds the driving role changing
/// hands waits for the other to finish; shuttle's schedulers also take it
/// as a hint to run another thread).
pub(crate) fn yield_now() {
    #[cfg(not(all(test, ringcache_model)))]
    std::thread::yield_now();
    #[cfg(all(test, ringcache_model))]
    shuttle::thread::yield_now();
}
