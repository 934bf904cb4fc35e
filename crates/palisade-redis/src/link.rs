//! [`Link`]: the replica's connection to Redis, treated as a dependency
//! that fails: every command has a short timeout, a failure takes the link
//! down (logged once), and while it is down no command is tried but a ping
//! now and then; when a ping answers the link is up again (logged once) and
//! everyone waiting for it is told.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisResult};
use tokio::sync::watch;

use crate::settings::FleetSettings;

/// The connection, its state and its counts.
#[derive(Debug)]
pub(crate) struct Link {
    client: Client,
    conn: ConnectionManager,
    pub(crate) timeout: Duration,
    retry: Duration,
    up: AtomicBool,
    /// Bumped each time the link comes up (again): tasks that keep state
    /// in Redis re-announce it then.
    joined: watch::Sender<u64>,
    pub(crate) commands: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) downs: AtomicU64,
}

impl Link {
    /// A link to `settings.redis_url`, down until the first ping answers
    /// (see [`watch`](Self::watch)): building it never waits for Redis.
    pub(crate) fn new(settings: &FleetSettings) -> RedisResult<Arc<Self>> {
        let client = Client::open(settings.redis_url.as_str())?;
        let timeout = Duration::from_millis(settings.timeout_ms);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(settings.retry_ms));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Arc::new(Link {
            client,
            conn,
            timeout,
            retry: Duration::from_millis(settings.retry_ms),
            up: AtomicBool::new(false),
            joined: watch::Sender::new(0),
            commands: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            downs: AtomicU64::new(0),
        }))
    }

    /// Whether Redis answered the last command.
    #[inline]
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// The client, for connections of their own (subscriptions).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Told each time the link comes up.
    pub(crate) fn joined(&self) -> watch::Receiver<u64> {
        self.joined.subscribe()
    }

    /// Runs one command (or script, or pipeline) if the link is up, within
    /// the timeout; `None` if it is down, or if the command failed or was
    /// late, which takes the link down.
    pub(crate) async fn run<T, F, Fut>(&self, what: &'static str, f: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.is_up() {
            return None;
        }
        self.attempt(what, f).await
    }

    async fn attempt<T, F, Fut>(&self, what: &'static str, f: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.commands.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(self.timeout, f(self.conn.clone())).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.down(what, &e.to_string());
                None
            }
            Err(_) => {
                self.down(what, &format!("no answer within {:?}", self.timeout));
                None
            }
        }
    }

    /// Marks the link down (a failed command or subscription), logging the
    /// switch once.
    pub(crate) fn down(&self, what: &str, error: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if self.up.swap(false, Ordering::AcqRel) {
            self.downs.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                command = what,
                error,
                "fleet: Redis is unreachable; this replica carries on alone, on its share of each quota, until it answers again"
            );
        }
    }

    /// Keeps the link's state true for as long as the link lives: while it
    /// is down, a ping every `retry_ms`; when one answers, up (logged once)
    /// and the joined count bumped.
    pub(crate) async fn watch(self: Arc<Self>) {
        let weak = Arc::downgrade(&self);
        drop(self);
        loop {
            let Some(link) = weak.upgrade() else { return };
            if !link.is_up() {
                let pong = link
                    .attempt("PING", |mut c| async move {
                        redis::cmd("PING").query_async::<String>(&mut c).await
                    })
                    .await;
                if pong.is_some() && !link.up.swap(true, Ordering::AcqRel) {
                    let times = *link.joined.borrow() + 1;
                    if times > 1 {
                        tracing::info!(
                            "fleet: Redis answers again; this replica rejoins the fleet"
                        );
                    } else {
                        tracing::info!("fleet: joined through Redis");
                    }
                    link.joined.send_replace(times);
                }
            }
            let retry = link.retry;
            drop(link);
            tokio::time::sleep(retry).await;
        }
    }
}
