//! The cookie state enum, the table of allowed changes and [`transition`],
//! the one function every state change goes through.

use super::Cookie;
use super::cookies::CookieInner;

/// A cookie's state, after fscache's `enum fscache_cookie_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CookieState {
    Quiescent,
    LookingUp,
    Creating,
    Active,
    Invalidating,
    Failed,
    LruDiscarding,
    Withdrawing,
    Relinquishing,
    Dropped,
}

use CookieState as S;

/// Whether `from -> to` is a change the state machine may make.
pub fn allowed(from: CookieState, to: CookieState) -> bool {
    matches!(
        (from, to),
        (S::Quiescent, S::LookingUp)
            | (S::Quiescent, S::Relinquishing)
            | (S::LookingUp, S::Creating)
            | (S::LookingUp, S::Active)
            | (S::LookingUp, S::Failed)
            | (S::Creating, S::Active)
            | (S::Creating, S::Failed)
            | (S::Active, S::Invalidating)
            | (S::Invalidating, S::Active)
            | (S::Invalidating, S::Failed)
            | (S::Active, S::LruDiscarding)
            | (S::Active, S::Withdrawing)
            | (S::Active, S::Relinquishing)
            | (S::Failed, S::Withdrawing)
            | (S::Failed, S::Relinquishing)
            | (S::Failed, S::Quiescent)
            | (S::LruDiscarding, S::Quiescent)
            | (S::LruDiscarding, S::Relinquishing)
            | (S::Withdrawing, S::Quiescent)
            | (S::Withdrawing, S::Relinquishing)
            | (S::Relinquishing, S::Dropped)
    )
}

/// The one way to change a cookie's state.
pub(super) fn transition(c: &Cookie, g: &mut CookieInner, to: CookieState) {
    let from = g.state;
    if !allowed(from, to) {
        // A bug: refuse the change (never crash the daemon) and say so.
        tracing::error!(key = %String::from_utf8_lossy(&c.key), ?from, ?to, "illegal cookie state change refused");
        debug_assert!(false, "illegal cookie state change {from:?} -> {to:?}");
        return;
    }
    g.state = to;
    g.history_len += 1;
    c.changed.notify_all();
}
