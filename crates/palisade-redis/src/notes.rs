//! [`Notes`]: short texts the fleet shares under names, each kept for a
//! time: what one replica learned (which provider stored a response, for
//! the gateway) read by the others.
//!
//! A note is written in the background: [`Notes::put`] and
//! [`Notes::remove`] queue the write and return, and one task per
//! [`Notes`] sends what is queued in one pipeline per round trip. Nothing
//! waits on Redis to write, and a write is dropped (counted) when the
//! queue is full or Redis is down: a note is a hint, never the only copy
//! of anything. [`Notes::get`] asks Redis within the fleet's `timeout_ms`
//! and answers `None` at once while Redis is down.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::link::Link;

/// How many writes wait at most; more are dropped (and counted).
const QUEUED: usize = 4096;

/// How many queued writes go in one pipeline at most.
const BATCH: usize = 256;

/// Longest name kept: a longer one is neither written nor asked for.
pub(crate) const MAX_NAME: usize = 512;

/// Short texts shared by the fleet under names of one kind, each kept for
/// the `ttl` given to [`Fleet::notes`](crate::Fleet::notes) after it was
/// last written. Clones share the queue and the counts.
///
/// ```no_run
/// # #[tokio::main] async fn main() {
/// use std::time::Duration;
/// use palisade_redis::{Fleet, FleetSettings};
///
/// let fleet = Fleet::connect(FleetSettings::new("redis://127.0.0.1:6379")).unwrap();
/// fleet.ready().await;
/// let stored = fleet.notes("responses", Duration::from_secs(24 * 3600));
/// stored.put("resp_1", "east");
/// // On any replica of the fleet, once written:
/// let at: Option<String> = stored.get("resp_1").await;
/// # let _ = at;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Notes {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    link: Arc<Link>,
    /// `{key_prefix}:notes:{kind}:`, each name after it.
    prefix: String,
    queue: mpsc::Sender<Write>,
    written: AtomicU64,
    dropped: AtomicU64,
    found: AtomicU64,
    missed: AtomicU64,
}

#[derive(Debug)]
enum Write {
    Put { key: String, value: String },
    Remove { key: String },
}

/// What a [`Notes`] has done, for inspection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NotesSnapshot {
    /// Writes (puts and removes) Redis took.
    pub written: u64,
    /// Writes dropped: the queue full, Redis down or failing.
    pub dropped: u64,
    /// [`Notes::get`] calls that found a note.
    pub found: u64,
    /// [`Notes::get`] calls that found none (or could not ask).
    pub missed: u64,
}

impl Notes {
    /// Notes under `{prefix}` kept for `ttl` (at least a millisecond), on
    /// `link`; starts the writer task, which ends when the last clone is
    /// dropped.
    pub(crate) fn new(link: Arc<Link>, prefix: String, ttl: Duration) -> Notes {
        let (queue, writes) = mpsc::channel(QUEUED);
        let inner = Arc::new(Shared {
            link,
            prefix,
            queue,
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            found: AtomicU64::new(0),
            missed: AtomicU64::new(0),
        });
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        tokio::spawn(writer(Arc::downgrade(&inner), writes, ttl_ms));
        Notes { inner }
    }

    /// Writes `value` under `name` for the fleet, in the background (see
    /// the module's documentation); a name longer than 512 bytes is not
    /// written.
    pub fn put(&self, name: &str, value: &str) {
        if let Some(key) = self.key(name) {
            self.queue(Write::Put {
                key,
                value: value.to_owned(),
            });
        }
    }

    /// Removes the note under `name`, in the background.
    pub fn remove(&self, name: &str) {
        if let Some(key) = self.key(name) {
            self.queue(Write::Remove { key });
        }
    }

    /// The note under `name`, if the fleet has one: `None` when it has
    /// none, when Redis is down, or when it does not answer within the
    /// fleet's `timeout_ms` (which, as for any command, counts Redis as
    /// down until it answers a ping).
    pub async fn get(&self, name: &str) -> Option<String> {
        let found = match self.key(name) {
            Some(key) => self
                .inner
                .link
                .run("GET", |mut c| async move {
                    redis::cmd("GET")
                        .arg(key)
                        .query_async::<Option<String>>(&mut c)
                        .await
                })
                .await
                .flatten(),
            None => None,
        };
        let count = match found {
            Some(_) => &self.inner.found,
            None => &self.inner.missed,
        };
        count.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// What these notes have done so far.
    pub fn snapshot(&self) -> NotesSnapshot {
        let i = &self.inner;
        NotesSnapshot {
            written: i.written.load(Ordering::Relaxed),
            dropped: i.dropped.load(Ordering::Relaxed),
            found: i.found.load(Ordering::Relaxed),
            missed: i.missed.load(Ordering::Relaxed),
        }
    }

    fn key(&self, name: &str) -> Option<String> {
        (name.len() <= MAX_NAME).then(|| format!("{}{name}", self.inner.prefix))
    }

    fn queue(&self, write: Write) {
        if !self.inner.link.is_up() || self.inner.queue.try_send(write).is_err() {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sends what is queued, up to [`BATCH`] writes in one pipeline, until
/// every [`Notes`] clone is gone.
async fn writer(notes: std::sync::Weak<Shared>, mut writes: mpsc::Receiver<Write>, ttl_ms: u64) {
    let mut batch = Vec::with_capacity(BATCH);
    while writes.recv_many(&mut batch, BATCH).await > 0 {
        let Some(n) = notes.upgrade() else { return };
        let count = batch.len() as u64;
        let mut pipe = redis::pipe();
        for write in batch.drain(..) {
            match write {
                Write::Put { key, value } => {
                    pipe.cmd("SET").arg(key).arg(value).arg("PX").arg(ttl_ms);
                }
                Write::Remove { key } => {
                    pipe.cmd("DEL").arg(key);
                }
            }
            pipe.ignore();
        }
        let sent = n
            .link
            .run("SET", |mut c| async move {
                pipe.query_async::<()>(&mut c).await
            })
            .await;
        let count_in = if sent.is_some() {
            &n.written
        } else {
            &n.dropped
        };
        count_in.fetch_add(count, Ordering::Relaxed);
    }
}
