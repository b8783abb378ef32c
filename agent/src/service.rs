//! Telling systemd where the daemon stands (the `sd_notify` protocol), so
//! `dist/interlock.service` can be `Type=notify`: `systemctl start` returns
//! once the daemon intercepts, a restart after a crash counts as up only
//! when it is, and `systemctl reload` shows the reload in the unit's state.
//! Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.

use sd_notify::NotifyState;
use tracing::warn;

/// The kernel side is attached, the listeners accept and the control
/// socket answers: intercepted connects are relayed from now on.
pub(crate) fn ready() {
    send(&[NotifyState::Ready, NotifyState::Status("intercepting")]);
}

/// A policy reload starts; [`reloaded`] ends it.
pub(crate) fn reloading() {
    send(&[NotifyState::Reloading]);
}

/// A policy reload ended (whether or not the new file was put in force:
/// the daemon is serving either way).
pub(crate) fn reloaded() {
    send(&[NotifyState::Ready]);
}

/// Shutdown started: live sessions drain.
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

fn send(state: &[NotifyState<'_>]) {
    // A notification that cannot be sent is not a reason to stop
    // intercepting: systemd then times the start out and says so itself.
    if let Err(e) = sd_notify::notify(false, state) {
        warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}
