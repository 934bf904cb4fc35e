//! Leases: a provider's quotas shared by the fleet. Redis holds
//! each quota's GCRA cell; this replica takes small leases from it in the
//! background and spends them on atomics, so a call never waits on Redis.
//!
//! **The bound.** Every unit a replica spends was first granted by Redis,
//! whose grants follow the quota exactly (burst + rate × time in any
//! window). A unit may be spent later than it was granted, so what the
//! fleet spends in a window can exceed the quota by what the replicas held
//! unspent when the window began: at most, per replica and quota,
//! `max(lease, one call's cost)`, where `lease = amount × overshoot / N`
//! for N replicas. With the default overshoot (0.01) and every call
//! costing no more than a lease, the fleet exceeds a quota by at most 1%
//! of its amount.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use palisade_core::ProviderId;
use palisade_ratelimit::{Draw, Pool, Quota, Unit};
use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::fleet::{Event, Members};
use crate::link::Link;
use crate::scripts;

/// One quota's part held by this replica.
#[derive(Debug)]
struct Tank {
    quota: Quota,
    key: String,
    /// µs per unit, and the burst in µs, as the script takes them.
    interval_us: f64,
    tolerance_us: f64,
    /// Units held unspent (below zero: spent more than granted, after a
    /// call's usage came in above its estimate; the next lease pays it).
    held: AtomicI64,
    /// The largest call that found the tank short since the last top-up.
    need: AtomicU64,
    /// The lease size last computed (read on the call path).
    lease: AtomicI64,
}

impl Tank {
    fn new(quota: Quota, key: String, overshoot: f64, replicas: u32) -> Self {
        let amount = quota.amount().max(1) as f64;
        let interval_us = quota.period().as_secs_f64() * 1e6 / amount;
        let tank = Tank {
            quota,
            key,
            interval_us,
            tolerance_us: interval_us * quota.burst_size().max(1) as f64,
            held: AtomicI64::new(0),
            need: AtomicU64::new(0),
            lease: AtomicI64::new(0),
        };
        tank.resize(overshoot, replicas);
        tank
    }

    #[inline]
    fn try_take(&self, cost: u64) -> bool {
        let cost = cost.min(i64::MAX as u64) as i64;
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                (h >= cost).then(|| h - cost)
            })
            .is_ok()
    }

    #[inline]
    fn add(&self, units: i64) {
        self.held.fetch_add(units, Ordering::AcqRel);
    }

    /// Sizes the lease for a fleet of `replicas`: the overshoot share of
    /// the amount split between them, at least 1, at most the burst.
    fn resize(&self, overshoot: f64, replicas: u32) -> i64 {
        let share = (self.quota.amount() as f64 * overshoot / f64::from(replicas.max(1))).floor();
        let lease = (share as i64).clamp(1, self.quota.burst_size().max(1) as i64);
        self.lease.store(lease, Ordering::Release);
        lease
    }

    /// Whether it should be topped up now.
    #[inline]
    fn low(&self) -> bool {
        let held = self.held.load(Ordering::Acquire);
        held * 2 < self.lease.load(Ordering::Relaxed)
            || held < self.need.load(Ordering::Acquire) as i64
    }
}

/// A provider's quotas as this replica holds them; the rate limiter's
/// [`Pool`].
#[derive(Debug)]
pub(crate) struct FleetPool {
    provider: ProviderId,
    tanks: Box<[Tank]>,
    link: Arc<Link>,
    members: Arc<Members>,
    epoch: Instant,
    /// Until when (ns since `epoch`) the fleet has no room: Redis said so.
    empty_until: AtomicU64,
    /// Until when the provider itself has no room: it said so, to us or to
    /// another replica.
    closed_until: AtomicU64,
    refill: Arc<Notify>,
    pub(crate) granted: AtomicU64,
    pub(crate) top_ups: AtomicU64,
}

impl FleetPool {
    pub(crate) fn new(
        provider: ProviderId,
        quotas: &[Quota],
        link: Arc<Link>,
        members: Arc<Members>,
    ) -> Arc<Self> {
        let replicas = members.count();
        let tanks: Box<[Tank]> = quotas
            .iter()
            .map(|q| {
                let key = members.key(&format!(
                    "quota:{}:{}:{}:{}:{}",
                    provider.as_str(),
                    q.unit().as_str(),
                    q.amount(),
                    q.period().as_millis(),
                    q.burst_size()
                ));
                Tank::new(*q, key, members.overshoot, replicas)
            })
            .collect();
        let pool = Arc::new(FleetPool {
            provider,
            tanks,
            link,
            members,
            epoch: Instant::now(),
            empty_until: AtomicU64::new(0),
            closed_until: AtomicU64::new(0),
            refill: Arc::new(Notify::new()),
            granted: AtomicU64::new(0),
            top_ups: AtomicU64::new(0),
        });
        tokio::spawn(FleetPool::refill_loop(
            Arc::downgrade(&pool),
            pool.refill.clone(),
            pool.link.joined(),
        ));
        pool.refill.notify_one();
        pool
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// How long the fleet or the provider has no room, if either.
    #[inline]
    fn blocked(&self) -> Option<Duration> {
        let until = self
            .empty_until
            .load(Ordering::Acquire)
            .max(self.closed_until.load(Ordering::Acquire));
        if until == 0 {
            return None;
        }
        let now = self.now();
        (now < until).then(|| Duration::from_nanos(until - now))
    }

    /// How long a call that finds a tank short is told to wait: a top-up's
    /// round trip at most.
    fn short_wait(&self) -> Duration {
        self.link.timeout
    }

    /// Another replica (or this one) learned the provider has no room for
    /// `wait`.
    pub(crate) fn close_for(&self, wait: Duration) {
        let until = self.now().saturating_add(wait.as_nanos() as u64);
        self.closed_until.fetch_max(until, Ordering::AcqRel);
    }

    /// Units held, per quota.
    pub(crate) fn held(&self) -> Vec<HeldSnapshot> {
        self.tanks
            .iter()
            .map(|t| HeldSnapshot {
                unit: t.quota.unit().as_str(),
                amount: t.quota.amount(),
                held: t.held.load(Ordering::Acquire),
                lease: t.lease.load(Ordering::Acquire),
            })
            .collect()
    }

    /// Tops up when a call finds a tank low, when the link comes up (the
    /// first time, or after Redis was gone), and every second.
    async fn refill_loop(
        pool: Weak<FleetPool>,
        refill: Arc<Notify>,
        mut joined: watch::Receiver<u64>,
    ) {
        loop {
            tokio::select! {
                _ = refill.notified() => {}
                changed = joined.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let Some(pool) = pool.upgrade() else { return };
            pool.top_up().await;
        }
    }

    /// Takes from Redis what the tanks lack: up to a lease each (or the
    /// call that found one short).
    async fn top_up(&self) {
        if !self.link.is_up() {
            return;
        }
        let replicas = self.members.count();
        let mut wants = Vec::with_capacity(self.tanks.len());
        let mut any = false;
        for tank in self.tanks.iter() {
            let size = tank.resize(self.members.overshoot, replicas);
            let need = tank.need.load(Ordering::Acquire) as i64;
            let held = tank.held.load(Ordering::Acquire);
            let (want, fewest) = if tank.low() {
                (size.max(need) - held, (need - held).max(1))
            } else {
                (0, 0)
            };
            any |= want > 0;
            wants.push((want.max(0), fewest));
        }
        if !any {
            return;
        }
        let reply: Option<Vec<i64>> = self
            .link
            .run("EVALSHA lease", |mut c| {
                let mut call = scripts::LEASE.prepare_invoke();
                for (tank, (want, fewest)) in self.tanks.iter().zip(&wants) {
                    call.key(&tank.key)
                        .arg(tank.interval_us)
                        .arg(tank.tolerance_us)
                        .arg(*want)
                        .arg(*fewest);
                }
                async move { call.invoke_async(&mut c).await }
            })
            .await;
        let Some(reply) = reply else { return };
        self.top_ups.fetch_add(1, Ordering::Relaxed);
        let mut empty_for: u64 = 0;
        for (i, tank) in self.tanks.iter().enumerate() {
            let (granted, wait_us) = (
                reply.get(2 * i).copied().unwrap_or(0),
                reply.get(2 * i + 1).copied().unwrap_or(0),
            );
            if granted > 0 {
                tank.add(granted);
                tank.need.store(0, Ordering::Release);
                self.granted.fetch_add(granted as u64, Ordering::Relaxed);
            } else if wants[i].0 > 0 {
                empty_for = empty_for.max(wait_us.max(0) as u64 * 1_000);
            }
        }
        if empty_for > 0 {
            let until = self.now().saturating_add(empty_for);
            self.empty_until.store(until, Ordering::Release);
        } else {
            self.empty_until.store(0, Ordering::Release);
        }
    }

    /// Gives every unit held back to the fleet (a replica leaving).
    pub(crate) async fn give_all_back(&self) {
        let backs: Vec<f64> = self
            .tanks
            .iter()
            .map(|t| t.held.swap(0, Ordering::AcqRel).max(0) as f64 * t.interval_us)
            .collect();
        if backs.iter().all(|b| *b <= 0.0) {
            return;
        }
        self.link
            .run("EVALSHA return", |mut c| {
                let mut call = scripts::RETURN.prepare_invoke();
                for (tank, back) in self.tanks.iter().zip(&backs) {
                    call.key(&tank.key).arg(*back);
                }
                async move { call.invoke_async::<i64>(&mut c).await }
            })
            .await;
    }
}

/// One quota's part held by this replica, for `/health`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeldSnapshot {
    /// `requests` or `tokens`.
    pub unit: &'static str,
    /// The quota's amount per period.
    pub amount: u64,
    /// Units held unspent (negative: owed).
    pub held: i64,
    /// The lease size for the fleet as it is now.
    pub lease: i64,
}

impl Pool for FleetPool {
    #[inline]
    fn take(&self, tokens: u64) -> Draw {
        if !self.link.is_up() {
            return Draw::Alone {
                share: self.members.count(),
            };
        }
        if let Some(wait) = self.blocked() {
            return Draw::Empty(wait);
        }
        for (i, tank) in self.tanks.iter().enumerate() {
            let cost = tank.quota.unit().cost(tokens);
            if !tank.try_take(cost) {
                for t in &self.tanks[..i] {
                    t.add(t.quota.unit().cost(tokens) as i64);
                }
                tank.need.fetch_max(cost, Ordering::AcqRel);
                self.refill.notify_one();
                return Draw::Empty(self.short_wait());
            }
        }
        if self.tanks.iter().any(Tank::low) {
            self.refill.notify_one();
        }
        Draw::Taken
    }

    fn peek(&self, tokens: u64) -> Draw {
        if !self.link.is_up() {
            return Draw::Alone {
                share: self.members.count(),
            };
        }
        if let Some(wait) = self.blocked() {
            return Draw::Empty(wait);
        }
        let short = self
            .tanks
            .iter()
            .any(|t| t.held.load(Ordering::Acquire) < t.quota.unit().cost(tokens) as i64);
        if short {
            self.refill.notify_one();
            Draw::Empty(self.short_wait())
        } else {
            Draw::Taken
        }
    }

    fn give_back(&self, tokens: u64) {
        for t in self.tanks.iter() {
            t.add(t.quota.unit().cost(tokens) as i64);
        }
    }

    fn correct(&self, estimated: u64, used: u64) {
        let diff = estimated as i64 - used as i64;
        for t in self.tanks.iter().filter(|t| t.quota.unit() == Unit::Tokens) {
            t.add(diff);
        }
    }

    fn exhausted(&self, wait: Duration) {
        self.close_for(wait);
        self.members.publish(Event::Exhausted {
            provider: self.provider.clone(),
            wait,
        });
    }
}
