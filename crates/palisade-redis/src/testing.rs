//! A real `redis-server` for tests (feature `testing`): started on a free
//! loopback port, killed and restarted on the same port at will, killed
//! when dropped. Missing, it is installed from Debian's packages (so a test
//! command works on a fresh machine); if that fails the test fails: a fleet
//! is never tested against a stand-in.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static INSTALL: Mutex<bool> = Mutex::new(false);

/// The `redis-server` to run: `$PALISADE_REDIS_SERVER`, or the one on the
/// PATH, installed with apt-get if there is none.
fn server_binary() -> String {
    if let Ok(path) = std::env::var("PALISADE_REDIS_SERVER") {
        return path;
    }
    let mut done = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let found = || {
        Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !*done && !found() {
        eprintln!("redis-server is missing: installing Debian's redis-server package");
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", "redis-server"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        if !install() {
            let _ = Command::new("apt-get").arg("update").status();
            assert!(
                install(),
                "redis-server is not installed and apt-get could not install it: \
                 install the Debian package redis-server (the fleet tests need a real Redis)"
            );
        }
    }
    *done = true;
    assert!(found(), "redis-server is still not on the PATH");
    "redis-server".into()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One `redis-server` on loopback, for tests.
///
/// ```no_run
/// use palisade_redis::testing::Redis;
///
/// let mut redis = Redis::start();
/// let url = redis.url(); // redis://127.0.0.1:<free port>
/// redis.kill(); // as a crash would
/// redis.restart(); // same port, empty
/// # let _ = url;
/// ```
#[derive(Debug)]
pub struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Starts one on a free port and waits until it answers.
    pub fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            child: None,
        };
        r.restart();
        r
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A connection of its own to it, for a test to read or write keys
    /// behind the fleet's back.
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() {
    /// use palisade_redis::testing::Redis;
    ///
    /// let redis = Redis::start();
    /// let mut raw = redis.connection().await;
    /// let left: i64 = redis::cmd("PTTL").arg("k").query_async(&mut raw).await.unwrap();
    /// assert_eq!(left, -2); // no such key
    /// # }
    /// ```
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("a redis:// URL")
            .get_multiplexed_async_connection()
            .await
            .expect("a connection to the test's redis-server")
    }

    /// Kills it (as a crash would: no goodbye to clients).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty (no persistence).
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new(server_binary())
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not listen on port {} within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
