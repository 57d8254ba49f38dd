//! Zap events: what a break sends to the connections holding the broken
//! objects. A break only queues them here and wakes the connection's
//! thread (its completion queue's waker), which writes them between
//! replies: the request that broke the promises is answered as soon as the break is recorded,
//! never after the holders have acted (a file server holds a change back
//! until its breaks are answered, and a holder may be waiting on a page
//! lock held by a read it must answer first, so waiting would deadlock).
//!
//! Memory is bounded: past [`MAX_QUEUED_ZAPS`] queued zaps a connection's
//! queue collapses into one zap of handle 0 ("every handle"), so a client
//! that does not read loses precision, never a zap.

use std::collections::HashMap;
use std::sync::Mutex;

use super::server::lock;
use crate::callback::{Zap, ZapReason};
use crate::io::{Completion, CompletionQueue, IoBuf};
use crate::proto::{self, EVENT, EVENT_ZAP, Writer};

/// Zaps queued per connection before they collapse into one for every
/// handle.
pub const MAX_QUEUED_ZAPS: usize = 4096;

/// Tag of the completion that tells a connection's thread to send the
/// events queued for its connection (no read key comes near it).
pub(super) const EVENT_TAG: u64 = u64::MAX - 1;

/// The events queued for one connection.
#[derive(Default)]
struct Queued {
    zaps: Vec<(u32, u8)>,
    /// More than [`MAX_QUEUED_ZAPS`] were queued: send one zap of handle 0.
    overflowed: bool,
}

/// One connection's outbox: the queue and how to wake its writer.
pub(super) struct Outbox {
    queued: Mutex<Queued>,
    wake: CompletionQueue,
}

impl Outbox {
    pub(super) fn new(wake: CompletionQueue) -> Outbox {
        Outbox {
            queued: Mutex::new(Queued::default()),
            wake,
        }
    }

    fn push(&self, handle: u32, reason: u8) {
        let first = {
            let mut q = lock(&self.queued);
            let first = q.zaps.is_empty() && !q.overflowed;
            if q.overflowed {
                // Already collapsed: handle 0 covers this one.
            } else if q.zaps.len() >= MAX_QUEUED_ZAPS {
                q.zaps.clear();
                q.overflowed = true;
            } else {
                q.zaps.push((handle, reason));
            }
            first
        };
        if first {
            self.wake.push(Completion {
                tag: EVENT_TAG,
                result: Ok(0),
                buf: IoBuf::empty(),
            });
        }
    }

    /// The frames of every queued event, in order; empties the queue.
    pub(super) fn take_frames(&self) -> Vec<Vec<u8>> {
        let q = std::mem::take(&mut *lock(&self.queued));
        if q.overflowed {
            return vec![zap_frame(0, proto::ZAP_SERVER)];
        }
        q.zaps
            .into_iter()
            .map(|(h, reason)| zap_frame(h, reason))
            .collect()
    }
}

/// A zap event frame for `handle` of the receiving connection.
pub(super) fn zap_frame(handle: u32, reason: u8) -> Vec<u8> {
    let body = Writer::new().u32(handle).u8(reason).u8(0).u16(0).finish();
    proto::frame(EVENT | EVENT_ZAP, 0, &body)
}

/// The wire code of a zap reason.
pub(super) fn reason_code(r: ZapReason) -> u8 {
    match r {
        ZapReason::FileBreak => proto::ZAP_FILE,
        ZapReason::VolumeBreak => proto::ZAP_VOLUME,
        ZapReason::ServerBreak => proto::ZAP_SERVER,
        ZapReason::Invalidated => proto::ZAP_INVALIDATED,
    }
}

/// Every connection's outbox, by connection id (the callback layer's
/// holder id).
#[derive(Default)]
pub(super) struct Outboxes {
    by_conn: Mutex<HashMap<u64, std::sync::Arc<Outbox>>>,
}

impl Outboxes {
    pub(super) fn register(&self, conn: u64, outbox: std::sync::Arc<Outbox>) {
        lock(&self.by_conn).insert(conn, outbox);
    }

    pub(super) fn unregister(&self, conn: u64) {
        lock(&self.by_conn).remove(&conn);
    }

    /// Queue each zap for its connection (one lock of the table for the
    /// lot). A zap for a connection that has gone is dropped: it holds
    /// nothing any more.
    pub(super) fn deliver(&self, zaps: &[Zap]) {
        if zaps.is_empty() {
            return;
        }
        let by_conn = lock(&self.by_conn);
        for z in zaps {
            if let Some(o) = by_conn.get(&z.holder) {
                o.push(z.tag, reason_code(z.reason));
            }
        }
    }
}
