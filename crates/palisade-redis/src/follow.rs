//! A provider's breaker in a fleet: what it does is told to the other
//! replicas (an open period, a close after probes), what they do it
//! follows, and half-open probing is one replica's at a time.
//!
//! **Probes.** Shortly before its open period ends, each replica tries to
//! take the provider's probe lock in Redis (`SET NX PX probe_lock_ms`).
//! The one that gets it lets its breaker go half-open as configured (its
//! `half_open_probes` are the fleet's); the others keep theirs open for as
//! long as the lock lasts and try again then, unless the verdict comes
//! first: a close (every breaker closes) or a new open period (every
//! breaker opens for it). A replica that dies holding the lock holds it
//! for `probe_lock_ms` at most. With Redis unreachable, each replica
//! probes on its own.

use std::sync::Arc;
use std::time::Duration;

use palisade_breaker::{BreakerHandle, TransitionReason, WeakBreakerHandle};
use palisade_core::{CircuitState, ProviderId};

use crate::fleet::{Event, Members};
use crate::link::Link;
use crate::scripts;

/// How long before the end of an open period the probe lock is tried.
fn lead(link: &Link) -> Duration {
    (link.timeout * 2).min(Duration::from_millis(100))
}

/// Follows `breaker` until it is dropped.
pub(crate) async fn follow(
    provider: ProviderId,
    breaker: WeakBreakerHandle,
    link: Arc<Link>,
    members: Arc<Members>,
) {
    let Some(handle) = breaker.upgrade() else {
        return;
    };
    let mut changes = handle.subscribe();
    // Each (re)subscription: events are heard from then on, so the
    // fleet's state is read (and this replica's told) again.
    let mut joined = members.subscribed.subscribe();
    // And once at the start: a replica joining while the fleet holds the
    // provider open follows it.
    joined.mark_changed();
    drop(handle);
    let open_key = members.key(&format!("open:{}", provider.as_str()));
    let lock_key = members.key(&format!("probe:{}", provider.as_str()));
    let mut holding = false;
    loop {
        // When to try the probe lock: shortly before the open period ends.
        let lock_at = breaker
            .upgrade()
            .and_then(|h| h.open_remaining())
            .map(|left| tokio::time::Instant::now() + left.saturating_sub(lead(&link)));
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                let change = *changes.borrow_and_update();
                let Some(handle) = breaker.upgrade() else { return };
                match (change.to, change.reason) {
                    // Followed from another replica: theirs to tell.
                    (_, TransitionReason::Peer { .. } | TransitionReason::PeerClosed) => {}
                    (CircuitState::Open, _) => {
                        let left = handle.open_remaining().unwrap_or_default();
                        announce_open(&provider, &open_key, left, &link, &members).await;
                        if holding {
                            unlock(&lock_key, &link, &members).await;
                            holding = false;
                        }
                    }
                    (CircuitState::Closed, TransitionReason::ProbesSucceeded { .. }) => {
                        members.publish(Event::Closed { provider: provider.clone() });
                        let key = open_key.clone();
                        link.run("DEL", |mut c| async move {
                            redis::cmd("DEL").arg(key).query_async::<i64>(&mut c).await
                        })
                        .await;
                        if holding {
                            unlock(&lock_key, &link, &members).await;
                            holding = false;
                        }
                    }
                    _ => {}
                }
            }
            _ = sleep_until(lock_at), if lock_at.is_some() => {
                let Some(handle) = breaker.upgrade() else { return };
                holding = try_probe_lock(&handle, &lock_key, &link, &members).await;
                if holding {
                    // Ours until the verdict (the breaker moves) or the
                    // lock's end, when another replica may take it.
                    let lock = Duration::from_millis(members.probe_lock_ms);
                    match tokio::time::timeout(lock, changes.changed()).await {
                        Ok(Err(_)) => return,
                        Ok(Ok(())) => changes.mark_changed(),
                        Err(_) => holding = false,
                    }
                }
            }
            rejoined = joined.changed() => {
                if rejoined.is_err() {
                    return;
                }
                let Some(handle) = breaker.upgrade() else { return };
                let own = !matches!(changes.borrow().reason, TransitionReason::Peer { .. });
                match handle.open_remaining() {
                    // Open on its own account: tell the fleet again (what
                    // it said while Redis was gone, or before Redis lost
                    // its keys, reached nobody).
                    Some(left) if own => {
                        announce_open(&provider, &open_key, left, &link, &members).await;
                    }
                    _ => {
                        let since = *members
                            .subscribed_at
                            .lock()
                            .unwrap_or_else(|e| e.into_inner());
                        catch_up(&handle, &open_key, &link, since).await
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Tells the fleet this breaker opened for `left`, and keeps it in Redis
/// for replicas that (re)join before it ends.
async fn announce_open(
    provider: &ProviderId,
    open_key: &str,
    left: Duration,
    link: &Link,
    members: &Members,
) {
    if left.is_zero() {
        return;
    }
    members.publish(Event::Open {
        provider: provider.clone(),
        wait: left,
    });
    let (key, id, ms) = (
        open_key.to_string(),
        members.id.clone(),
        left.as_millis().max(1) as u64,
    );
    link.run("SET open", |mut c| async move {
        redis::cmd("SET")
            .arg(key)
            .arg(id)
            .arg("PX")
            .arg(ms)
            .query_async::<()>(&mut c)
            .await
    })
    .await;
}

/// Tries the probe lock as the open period ends: `true` if this replica
/// probes; otherwise the breaker is kept open while another replica's lock
/// lasts. With Redis unreachable, this replica probes on its own (`false`,
/// breaker untouched).
async fn try_probe_lock(
    handle: &BreakerHandle,
    lock_key: &str,
    link: &Link,
    members: &Members,
) -> bool {
    let (key, id, ms) = (
        lock_key.to_string(),
        members.id.clone(),
        members.probe_lock_ms,
    );
    let answer: Option<i64> = link
        .run("EVALSHA probe", |mut c| async move {
            scripts::PROBE
                .key(key)
                .arg(id)
                .arg(ms)
                .invoke_async(&mut c)
                .await
        })
        .await;
    match answer {
        Some(-1) => true,
        Some(left) if left > 0 => {
            // Another replica probes: stay open while its lock lasts (a
            // little beyond this period's end at least).
            let until_lock = Duration::from_millis(left as u64);
            let this_end = handle.open_remaining().unwrap_or_default() + lead(link);
            handle.follow_open(until_lock.max(this_end));
            false
        }
        _ => false,
    }
}

async fn unlock(lock_key: &str, link: &Link, members: &Members) {
    let (key, id) = (lock_key.to_string(), members.id.clone());
    link.run("EVALSHA unlock", |mut c| async move {
        scripts::UNLOCK
            .key(key)
            .arg(id)
            .invoke_async::<i64>(&mut c)
            .await
    })
    .await;
}

/// On (re)joining: an open period another replica announced while this one
/// was away is followed for what is left of it; a breaker held open by the
/// fleet since before the subscription was last (re)established (`since`:
/// events may have been missed meanwhile) when the fleet now holds none
/// (its provider closed while this replica was away) closes, so no replica
/// stays refusing a provider the others reopened. One held open since then
/// was told so by an event this replica heard, and is left alone.
async fn catch_up(
    handle: &BreakerHandle,
    open_key: &str,
    link: &Link,
    since: Option<tokio::time::Instant>,
) {
    let key = open_key.to_string();
    let left: Option<i64> = link
        .run("PTTL", |mut c| async move {
            redis::cmd("PTTL").arg(key).query_async(&mut c).await
        })
        .await;
    match left {
        Some(ms) if ms > 0 => {
            handle.follow_open(Duration::from_millis(ms as u64));
        }
        // -2: no such key, no open period anywhere in the fleet.
        Some(-2) => {
            let last = *handle.subscribe().borrow();
            let stale = since.is_some_and(|t| last.at < t);
            let held_by_fleet = matches!(last.reason, TransitionReason::Peer { .. });
            if held_by_fleet && stale && handle.state() == CircuitState::Open {
                handle.follow_close();
            }
        }
        _ => {}
    }
}
