//! [`Fleet`]: this replica's membership of a fleet on Redis, the providers
//! it shares, and the background tasks that keep them in step: the link's
//! watch, the heartbeat that counts replicas, the publisher and the
//! subscriber of the fleet's events.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use palisade_breaker::{BreakerHandle, WeakBreakerHandle};
use palisade_core::{ConfigError, HealthStatus, Inspect, Inspection, ProviderId, Sample};
use palisade_ratelimit::RateLimitHandle;
use palisade_retry::RetryBudget;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::budget::FleetBudget;
use crate::follow;
use crate::lease::{FleetPool, HeldSnapshot};
use crate::link::Link;
use crate::notes::Notes;
use crate::scripts;
use crate::settings::FleetSettings;

/// What one replica tells the others.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// Its breaker for `provider` opened for `wait`.
    Open {
        provider: ProviderId,
        wait: Duration,
    },
    /// Its probes of `provider` succeeded: closed.
    Closed { provider: ProviderId },
    /// `provider` said it has no room for `wait`.
    Exhausted {
        provider: ProviderId,
        wait: Duration,
    },
}

impl Event {
    /// The provider it is about.
    fn provider(&self) -> &ProviderId {
        match self {
            Event::Open { provider, .. }
            | Event::Closed { provider }
            | Event::Exhausted { provider, .. } => provider,
        }
    }

    /// `kind \t provider \t ms \t origin`.
    fn encode(&self, origin: &str) -> String {
        match self {
            Event::Open { provider, wait } => {
                format!(
                    "open\t{}\t{}\t{origin}",
                    provider.as_str(),
                    wait.as_millis()
                )
            }
            Event::Closed { provider } => format!("closed\t{}\t0\t{origin}", provider.as_str()),
            Event::Exhausted { provider, wait } => format!(
                "exhausted\t{}\t{}\t{origin}",
                provider.as_str(),
                wait.as_millis()
            ),
        }
    }

    /// The event and who sent it; `None` for anything else.
    fn decode(text: &str) -> Option<(Event, &str)> {
        let mut parts = text.split('\t');
        let (kind, provider, ms, origin) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let provider = ProviderId::from(provider);
        let wait = Duration::from_millis(ms.parse().ok()?);
        let event = match kind {
            "open" => Event::Open { provider, wait },
            "closed" => Event::Closed { provider },
            "exhausted" => Event::Exhausted { provider, wait },
            _ => return None,
        };
        Some((event, origin))
    }
}

/// What the fleet's parts share: this replica's name, the key prefix, the
/// fleet's size as last counted, and the way out for events.
#[derive(Debug)]
pub(crate) struct Members {
    pub(crate) id: String,
    prefix: String,
    pub(crate) overshoot: f64,
    pub(crate) probe_lock_ms: u64,
    count: AtomicU32,
    events: mpsc::Sender<Event>,
    pub(crate) published: AtomicU64,
    pub(crate) dropped: AtomicU64,
    /// Bumped each time the subscription is (re)established: from then on
    /// no event is missed, so followers read the fleet's state again.
    pub(crate) subscribed: tokio::sync::watch::Sender<u64>,
    /// When it last was: what a follower knew from before then may be
    /// stale (events were missed while it was down).
    pub(crate) subscribed_at: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Members {
    /// The fleet's key for `name`.
    pub(crate) fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// Replicas alive at the last count (at least 1).
    #[inline]
    pub(crate) fn count(&self) -> u32 {
        self.count.load(Ordering::Acquire).max(1)
    }

    /// Queues `event` for the other replicas; never waits (an event that
    /// finds the queue full is dropped and counted).
    pub(crate) fn publish(&self, event: Event) {
        if self.events.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A provider as this replica shares it.
#[derive(Debug)]
struct Joined {
    breaker: Option<WeakBreakerHandle>,
    pool: Option<Weak<FleetPool>>,
}

#[derive(Debug)]
struct Inner {
    link: Arc<Link>,
    members: Arc<Members>,
    channel: String,
    replicas_key: String,
    heartbeat: Duration,
    providers: RwLock<HashMap<ProviderId, Joined>>,
    budgets: RwLock<BTreeMap<String, Weak<FleetBudget>>>,
    received: AtomicU64,
}

/// This replica's place in a fleet of replicas sharing provider state
/// through Redis (see the crate documentation): give it each provider's
/// breaker and rate limiter with [`join`](Self::join), and they act as one
/// with the same providers on every replica with the same Redis and key
/// prefix.
///
/// Connecting never waits for Redis: until it answers, and whenever it
/// stops answering, each replica carries on alone (on its share of each
/// quota, its own breakers), and joins in again when it answers, with no
/// restart. Background tasks end when the `Fleet` and every provider it
/// joined are dropped.
///
/// ```no_run
/// # #[tokio::main] async fn main() {
/// use palisade_breaker::CircuitBreakerLayer;
/// use palisade_ratelimit::{Quota, RateLimitLayer};
/// use palisade_redis::{Fleet, FleetSettings};
///
/// let breaker = CircuitBreakerLayer::http().provider("openai").build().unwrap();
/// let limit = RateLimitLayer::http().provider("openai").quota(Quota::per_minute(600)).build().unwrap();
/// let fleet = Fleet::connect(FleetSettings::new("redis://127.0.0.1:6379")).unwrap();
/// fleet.join("openai", Some(&breaker.handle()), Some(&limit.handle()));
/// // ...serve with the layers; every replica together sends at most ~606 a minute.
/// fleet.leave().await;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

impl Fleet {
    /// Joins the fleet at `settings.redis_url`, checking the settings
    /// first; must be called within a tokio runtime (it starts the
    /// background tasks). Does not wait for Redis.
    pub fn connect(settings: FleetSettings) -> Result<Fleet, ConfigError> {
        settings.check()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::invalid(
                "fleet",
                "a fleet runs background tasks: connect within a tokio runtime",
            ));
        }
        let link = Link::new(&settings)
            .map_err(|e| ConfigError::invalid("fleet.redis_url", e.to_string()))?;
        let id = settings.replica_id.clone().unwrap_or_else(default_id);
        let (events, outbox) = mpsc::channel(1024);
        let members = Arc::new(Members {
            id,
            prefix: settings.key_prefix.clone(),
            overshoot: settings.overshoot,
            probe_lock_ms: settings.probe_lock_ms,
            count: AtomicU32::new(settings.replicas),
            events,
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            subscribed: tokio::sync::watch::Sender::new(0),
            subscribed_at: std::sync::Mutex::new(None),
        });
        let inner = Arc::new(Inner {
            channel: members.key("events"),
            replicas_key: members.key("replicas"),
            heartbeat: Duration::from_millis(settings.heartbeat_ms),
            link: link.clone(),
            members,
            providers: RwLock::new(HashMap::new()),
            budgets: RwLock::new(BTreeMap::new()),
            received: AtomicU64::new(0),
        });
        tokio::spawn(link.watch());
        tokio::spawn(heartbeat(Arc::downgrade(&inner)));
        tokio::spawn(publisher(Arc::downgrade(&inner), outbox));
        tokio::spawn(subscriber(Arc::downgrade(&inner)));
        Ok(Fleet { inner })
    }

    /// Shares `provider` with the fleet: its `breaker`'s open periods and
    /// closes go to every replica and theirs come here, half-open probing
    /// is one replica's at a time; its `limiter`'s quotas become the
    /// fleet's, spent here from leases (see the crate documentation for the
    /// bound). Joining a provider again (a rebuilt stack) replaces what was
    /// joined before. A limiter already sharing its quotas elsewhere is
    /// left as it is, with a warning.
    pub fn join(
        &self,
        provider: impl Into<ProviderId>,
        breaker: Option<&BreakerHandle>,
        limiter: Option<&RateLimitHandle>,
    ) {
        let provider = provider.into();
        let inner = &self.inner;
        let pool = limiter.and_then(|limiter| {
            let pool = FleetPool::new(
                provider.clone(),
                &limiter.quotas(),
                inner.link.clone(),
                inner.members.clone(),
            );
            match limiter.share(pool.clone()) {
                Ok(()) => Some(Arc::downgrade(&pool)),
                Err(_) => {
                    tracing::warn!(
                        provider = provider.as_str(),
                        "fleet: this rate limiter already shares its quotas; left as it is"
                    );
                    None
                }
            }
        });
        let breaker = breaker.map(|b| {
            let weak = b.downgrade();
            tokio::spawn(follow::follow(
                provider.clone(),
                weak.clone(),
                inner.link.clone(),
                inner.members.clone(),
            ));
            weak
        });
        inner
            .providers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(provider, Joined { breaker, pool });
    }

    /// Shares a ratio retry budget with the fleet under `name` (the same
    /// name on every replica): retries then stay within its ratio of the
    /// whole fleet's requests over its window (plus its floor), exceeded at
    /// most by what the replicas hold unspent, a few retries each. While
    /// Redis does not answer the budget decides on this replica's own
    /// requests. Returns `false`, sharing nothing, for a budget that is not
    /// a ratio budget or already shared.
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() {
    /// use palisade_redis::{Fleet, FleetSettings};
    /// use palisade_retry::RetryBudget;
    /// use std::time::Duration;
    ///
    /// let fleet = Fleet::connect(FleetSettings::new("redis://127.0.0.1:6379")).unwrap();
    /// let budget = RetryBudget::ratio(0.2, Duration::from_secs(10), 1).unwrap();
    /// assert!(fleet.share_budget("shared", &budget));
    /// assert!(!fleet.share_budget("again", &budget), "shared once");
    /// # }
    /// ```
    pub fn share_budget(&self, name: &str, budget: &RetryBudget) -> bool {
        let Some(shape) = budget.ratio_shape() else {
            return false;
        };
        let inner = &self.inner;
        let pool = FleetBudget::new(name, shape, inner.link.clone(), &inner.members);
        if budget.share(pool.clone()).is_err() {
            return false;
        }
        inner
            .budgets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), Arc::downgrade(&pool));
        true
    }

    /// Notes of one `kind` shared with the fleet (see [`Notes`]): what
    /// [`Notes::put`] writes here, any replica with the same Redis and key
    /// prefix reads with [`Notes::get`], for `ttl` after it was written.
    /// Each call starts a writer of its own: call it once per kind.
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() {
    /// use std::time::Duration;
    /// use palisade_redis::{Fleet, FleetSettings};
    ///
    /// let fleet = Fleet::connect(FleetSettings::new("redis://127.0.0.1:6379")).unwrap();
    /// let seen = fleet.notes("seen", Duration::from_secs(60));
    /// seen.put("a", "1");
    /// assert_eq!(seen.snapshot().found, 0);
    /// # }
    /// ```
    pub fn notes(&self, kind: &str, ttl: Duration) -> Notes {
        let prefix = self.inner.members.key(&format!("notes:{kind}:"));
        Notes::new(self.inner.link.clone(), prefix, ttl)
    }

    /// Stops sharing `provider` (removed from this replica's registry).
    pub fn forget(&self, provider: &str) {
        self.inner
            .providers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(provider);
    }

    /// Waits until every provider joined holds its first leases and the
    /// other replicas' events are heard, or Redis is found unreachable (then
    /// each replica is alone and needs none), at most a few Redis timeouts. Call it after joining and before serving:
    /// a call that comes before its provider's first lease is refused as
    /// having no room (`RateLimited`, retry in one Redis timeout).
    pub async fn ready(&self) {
        let link = &self.inner.link;
        let deadline = tokio::time::Instant::now() + link.timeout * 4 + Duration::from_millis(100);
        while tokio::time::Instant::now() < deadline {
            // Found unreachable: a command failed and none has answered
            // since (the link starts down, before its first ping answers).
            let unreachable = !link.is_up() && link.errors.load(Ordering::Relaxed) > 0;
            let fed = self
                .pools()
                .iter()
                .all(|p| p.top_ups.load(Ordering::Relaxed) > 0);
            let hearing = *self.inner.members.subscribed.borrow() > 0;
            if unreachable || (link.is_up() && fed && hearing) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Leaves the fleet: gives back every unit of quota this replica holds
    /// unspent and stops being counted as a replica. Best effort: with
    /// Redis unreachable, the units come back by themselves as the quotas
    /// refill.
    pub async fn leave(&self) {
        for pool in self.pools() {
            pool.give_all_back().await;
        }
        let (key, id) = (
            self.inner.replicas_key.clone(),
            self.inner.members.id.clone(),
        );
        self.inner
            .link
            .run("ZREM", |mut c| async move {
                redis::cmd("ZREM")
                    .arg(key)
                    .arg(id)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await;
    }

    fn pools(&self) -> Vec<Arc<FleetPool>> {
        self.inner
            .providers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter_map(|j| j.pool.as_ref().and_then(Weak::upgrade))
            .collect()
    }

    /// This replica's view of the fleet now.
    pub fn snapshot(&self) -> FleetSnapshot {
        let inner = &self.inner;
        let providers = inner
            .providers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, j)| {
                let pool = j.pool.as_ref().and_then(Weak::upgrade);
                (
                    id.as_str().to_string(),
                    SharedProvider {
                        breaker: j.breaker.as_ref().is_some_and(|b| b.upgrade().is_some()),
                        quotas: pool.as_ref().map(|p| p.held()).unwrap_or_default(),
                        top_ups: pool
                            .as_ref()
                            .map_or(0, |p| p.top_ups.load(Ordering::Relaxed)),
                        granted: pool
                            .as_ref()
                            .map_or(0, |p| p.granted.load(Ordering::Relaxed)),
                    },
                )
            })
            .collect();
        let budgets = inner
            .budgets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|(name, b)| {
                let b = b.upgrade()?;
                Some((
                    name.clone(),
                    SharedBudget {
                        held: b.held(),
                        granted: b.granted.load(Ordering::Relaxed),
                    },
                ))
            })
            .collect();
        let m = &inner.members;
        FleetSnapshot {
            replica: m.id.clone(),
            connected: inner.link.is_up(),
            replicas: m.count(),
            redis_commands: inner.link.commands.load(Ordering::Relaxed),
            redis_errors: inner.link.errors.load(Ordering::Relaxed),
            times_alone: inner.link.downs.load(Ordering::Relaxed),
            events_published: m.published.load(Ordering::Relaxed),
            events_dropped: m.dropped.load(Ordering::Relaxed),
            events_received: inner.received.load(Ordering::Relaxed),
            providers,
            budgets,
        }
    }

    /// Whether Redis answers: `false` means this replica is on its own.
    pub fn is_connected(&self) -> bool {
        self.inner.link.is_up()
    }
}

/// A provider as this replica shares it, for `/health`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SharedProvider {
    /// Whether its breaker follows the fleet.
    pub breaker: bool,
    /// Each quota's part this replica holds.
    pub quotas: Vec<HeldSnapshot>,
    /// Leases taken from Redis.
    pub top_ups: u64,
    /// Units granted by them.
    pub granted: u64,
}

/// This replica's view of the fleet (see [`Fleet::snapshot`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetSnapshot {
    /// This replica's name.
    pub replica: String,
    /// Whether Redis answers (otherwise the replica is alone).
    pub connected: bool,
    /// Replicas alive at the last count (or as configured, before any).
    pub replicas: u32,
    /// Redis commands sent.
    pub redis_commands: u64,
    /// Redis commands that failed or were late.
    pub redis_errors: u64,
    /// Times Redis stopped answering.
    pub times_alone: u64,
    /// Events sent to the other replicas.
    pub events_published: u64,
    /// Events not sent because the queue was full.
    pub events_dropped: u64,
    /// Events received from the other replicas.
    pub events_received: u64,
    /// The providers shared.
    pub providers: BTreeMap<String, SharedProvider>,
    /// The retry budgets shared, by name.
    pub budgets: BTreeMap<String, SharedBudget>,
}

/// A retry budget as this replica shares it, for `/health`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SharedBudget {
    /// Retries held unspent.
    pub held: i64,
    /// Retries granted by the fleet so far.
    pub granted: u64,
}

/// Warning while Redis does not answer (each replica then limits on its
/// share alone and its breakers act alone), Healthy otherwise.
impl Inspect for Fleet {
    fn inspect(&self) -> Inspection {
        let s = self.snapshot();
        let (status, notes) = if s.connected {
            (HealthStatus::Healthy, Vec::new())
        } else {
            (
                HealthStatus::Warning,
                vec![format!(
                    "Redis does not answer: this replica carries on alone, on 1/{} of each quota, with its own breakers; it rejoins when Redis answers",
                    s.replicas
                )],
            )
        };
        Inspection {
            layer: "fleet",
            status,
            notes,
            samples: vec![
                Sample::gauge(
                    "palisade_fleet_connected",
                    "Whether this replica reaches the fleet's Redis (1) or is alone (0).",
                    if s.connected { 1.0 } else { 0.0 },
                ),
                Sample::gauge(
                    "palisade_fleet_replicas",
                    "Replicas alive at the last count.",
                    f64::from(s.replicas),
                ),
                Sample::counter(
                    "palisade_fleet_redis_commands_total",
                    "Redis commands sent.",
                    s.redis_commands as f64,
                ),
                Sample::counter(
                    "palisade_fleet_redis_errors_total",
                    "Redis commands that failed or were late.",
                    s.redis_errors as f64,
                ),
            ],
            detail: serde_json::to_value(&s).unwrap_or_default(),
        }
    }
}

fn default_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "replica".into());
    format!(
        "{}-{}-{:08x}",
        host.split_whitespace().next().unwrap_or("replica"),
        std::process::id(),
        {
            use rand::{Rng, SeedableRng};
            rand::rngs::SmallRng::from_os_rng().random::<u32>()
        }
    )
}

/// Counts this replica alive every heartbeat, and the fleet with it.
async fn heartbeat(inner: Weak<Inner>) {
    loop {
        let Some(i) = inner.upgrade() else { return };
        let (key, id, silence) = (
            i.replicas_key.clone(),
            i.members.id.clone(),
            i.heartbeat.as_millis() as u64 * 3,
        );
        let count: Option<u32> = i
            .link
            .run("EVALSHA heartbeat", |mut c| async move {
                scripts::HEARTBEAT
                    .key(key)
                    .arg(id)
                    .arg(silence)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        if let Some(n) = count {
            i.members.count.store(n.max(1), Ordering::Release);
        }
        let (period, mut joined) = (i.heartbeat, i.link.joined());
        drop(i);
        // Count again at once on (re)joining.
        let _ = tokio::time::timeout(period, joined.changed()).await;
    }
}

/// Sends queued events, in order.
async fn publisher(inner: Weak<Inner>, mut outbox: mpsc::Receiver<Event>) {
    while let Some(event) = outbox.recv().await {
        let Some(i) = inner.upgrade() else { return };
        let (channel, text) = (i.channel.clone(), event.encode(&i.members.id));
        let sent = i
            .link
            .run("PUBLISH", |mut c| async move {
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(text)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await;
        if sent.is_some() {
            i.members.published.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Receives the other replicas' events on a connection of its own, for as
/// long as the fleet lives; reconnects after Redis comes back.
async fn subscriber(inner: Weak<Inner>) {
    loop {
        let Some(i) = inner.upgrade() else { return };
        let mut joined = i.link.joined();
        if !i.link.is_up() {
            drop(i);
            if tokio::time::timeout(Duration::from_secs(1), joined.changed())
                .await
                .is_ok_and(|r| r.is_err())
            {
                return;
            }
            continue;
        }
        let (link, channel) = (i.link.clone(), i.channel.clone());
        drop(i);
        let connected = tokio::time::timeout(link.timeout * 4, async {
            let mut pubsub = link.client().get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        let mut pubsub = match connected {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                link.down("SUBSCRIBE", &e.to_string());
                continue;
            }
            Err(_) => {
                link.down("SUBSCRIBE", "no answer in time");
                continue;
            }
        };
        if let Some(i) = inner.upgrade() {
            *i.members
                .subscribed_at
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(tokio::time::Instant::now());
            i.members.subscribed.send_modify(|n| *n += 1);
        }
        let mut messages = pubsub.on_message();
        loop {
            // Wake now and then to end with the fleet.
            let next = tokio::time::timeout(Duration::from_secs(1), messages.next()).await;
            let Some(i) = inner.upgrade() else { return };
            match next {
                Err(_) => continue,
                Ok(None) => {
                    i.link
                        .down("SUBSCRIBE", "the subscription's connection closed");
                    break;
                }
                Ok(Some(msg)) => {
                    let Ok(text) = msg.get_payload::<String>() else {
                        continue;
                    };
                    dispatch(&i, &text);
                }
            }
        }
    }
}

/// Applies another replica's event to this replica's providers.
fn dispatch(inner: &Inner, text: &str) {
    let Some((event, origin)) = Event::decode(text) else {
        tracing::debug!(text, "fleet: ignored a message that is not a fleet event");
        return;
    };
    if origin == inner.members.id {
        return;
    }
    inner.received.fetch_add(1, Ordering::Relaxed);
    let providers = inner.providers.read().unwrap_or_else(|e| e.into_inner());
    let Some(joined) = providers.get(event.provider()) else {
        return;
    };
    tracing::debug!(
        provider = event.provider().as_str(),
        from = origin,
        event = ?event,
        "fleet: following another replica"
    );
    let breaker = || joined.breaker.as_ref().and_then(WeakBreakerHandle::upgrade);
    match event {
        Event::Open { wait, .. } => {
            if let Some(b) = breaker() {
                b.follow_open(wait);
            }
        }
        Event::Closed { .. } => {
            if let Some(b) = breaker() {
                b.follow_close();
            }
        }
        Event::Exhausted { wait, .. } => {
            if let Some(p) = joined.pool.as_ref().and_then(Weak::upgrade) {
                p.close_for(wait);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_garbage_is_ignored() {
        for e in [
            Event::Open {
                provider: "a".into(),
                wait: Duration::from_millis(2_000),
            },
            Event::Closed {
                provider: "b".into(),
            },
            Event::Exhausted {
                provider: "c".into(),
                wait: Duration::from_millis(17),
            },
        ] {
            let text = e.encode("r1");
            assert_eq!(Event::decode(&text), Some((e, "r1")));
        }
        for junk in ["", "open", "open\ta\tx\tr", "nope\ta\t1\tr", "open\ta\t1"] {
            assert_eq!(Event::decode(junk), None, "{junk:?}");
        }
    }
}
