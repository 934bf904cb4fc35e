//! A retry budget shared by the fleet: every replica reports its requests
//! to Redis (batched, every 100 ms) and takes retries from the fleet's
//! window in small leases, so the fleet's retries stay within `ratio` × the
//! fleet's requests (plus the floor) over the budget's window, exceeded at
//! most by the retries replicas hold unspent. The call path is atomics
//! only; with Redis unreachable each replica's own budget decides.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use palisade_core::StripedCounter;
use palisade_retry::{BudgetPool, RatioShape};
use tokio::sync::Notify;

use crate::fleet::Members;
use crate::link::Link;
use crate::scripts;

/// How often requests are reported and leases topped up.
const FLUSH: Duration = Duration::from_millis(100);

/// This replica's part of a fleet's retry budget.
#[derive(Debug)]
pub(crate) struct FleetBudget {
    shape: RatioShape,
    keys: (String, String),
    link: Arc<Link>,
    /// Requests made here, all time.
    requests: StripedCounter,
    /// Requests already reported.
    reported: AtomicU64,
    /// Retries held, paid for in Redis.
    held: AtomicI64,
    /// Retries asked for here (taken or refused), all time, and at the
    /// last report: the lease is sized by the demand between reports.
    asked: AtomicU64,
    asked_reported: AtomicU64,
    /// The lease for the current demand.
    lease: AtomicI64,
    short: Notify,
    pub(crate) granted: AtomicU64,
}

impl FleetBudget {
    pub(crate) fn new(
        name: &str,
        shape: RatioShape,
        link: Arc<Link>,
        members: &Members,
    ) -> Arc<Self> {
        let budget = Arc::new(FleetBudget {
            shape,
            keys: (
                members.key(&format!("budget:{name}:requests")),
                members.key(&format!("budget:{name}:retries")),
            ),
            link,
            requests: StripedCounter::default(),
            reported: AtomicU64::new(0),
            held: AtomicI64::new(0),
            asked: AtomicU64::new(0),
            asked_reported: AtomicU64::new(0),
            lease: AtomicI64::new(1),
            short: Notify::new(),
            granted: AtomicU64::new(0),
        });
        tokio::spawn(FleetBudget::run(Arc::downgrade(&budget)));
        budget
    }

    /// The lease: twice the retries asked for here since the last report,
    /// at least one. Sized by demand, so that a replica that does not
    /// retry holds (almost) nothing the others could use.
    fn lease(&self) -> i64 {
        self.lease.load(Ordering::Relaxed)
    }

    async fn run(budget: Weak<FleetBudget>) {
        loop {
            let Some(b) = budget.upgrade() else { return };
            b.flush().await;
            // Sleep a report's time, or until a retry finds none held.
            let wake = tokio::time::sleep(FLUSH);
            tokio::select! {
                _ = wake => {}
                _ = b.short.notified() => {}
            }
        }
    }

    /// Reports the requests made since the last report and tops up.
    async fn flush(&self) {
        if !self.link.is_up() {
            return;
        }
        let total = self.requests.get();
        let new = total.saturating_sub(self.reported.load(Ordering::Acquire));
        let asked = self.asked.load(Ordering::Acquire);
        let demand = asked.saturating_sub(self.asked_reported.swap(asked, Ordering::AcqRel));
        let lease = (demand.min(1 << 20) as i64 * 2).max(1);
        self.lease.store(lease, Ordering::Relaxed);
        let held = self.held.load(Ordering::Acquire);
        let want = if held * 2 < lease { lease - held } else { 0 };
        if new == 0 && want == 0 {
            return;
        }
        let (k1, k2) = self.keys.clone();
        let shape = self.shape;
        let reserve = f64::from(shape.min_per_sec) * shape.ttl.as_secs_f64();
        let ttl = shape.ttl.as_secs().max(1);
        let granted: Option<i64> = self
            .link
            .run("EVALSHA budget", |mut c| async move {
                scripts::BUDGET
                    .key(k1)
                    .key(k2)
                    .arg(new)
                    .arg(shape.ratio)
                    .arg(reserve)
                    .arg(ttl)
                    .arg(want)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        let Some(granted) = granted else { return };
        self.reported.store(total, Ordering::Release);
        if granted > 0 {
            self.held.fetch_add(granted, Ordering::AcqRel);
            self.granted.fetch_add(granted as u64, Ordering::Relaxed);
        }
    }

    /// Retries held now.
    pub(crate) fn held(&self) -> i64 {
        self.held.load(Ordering::Acquire)
    }
}

impl BudgetPool for FleetBudget {
    #[inline]
    fn deposit(&self) {
        self.requests.add(1);
    }

    fn try_withdraw(&self) -> Option<bool> {
        if !self.link.is_up() {
            return None;
        }
        self.asked.fetch_add(1, Ordering::Relaxed);
        let took = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                (h >= 1).then(|| h - 1)
            })
            .is_ok();
        if !took || self.held.load(Ordering::Relaxed) * 2 < self.lease() {
            self.short.notify_one();
        }
        Some(took)
    }
}
