//! A network partition, over real loopback sockets: the primary's address
//! (a TCP relay in front of a simulated provider) first accepts
//! connections and never answers, then refuses them, then heals. Callers
//! see no error while the secondary is healthy, and traffic returns to the
//! primary once the partition is over.

mod common;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Running;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const FORWARD: u8 = 0;
const BLACKHOLE: u8 = 1;
const REFUSE: u8 = 2;

/// A TCP relay to `target` on `port` whose mode can change: forward,
/// accept and never answer (existing connections go silent too), or refuse
/// (the listener is closed and existing connections dropped).
async fn relay(target: std::net::SocketAddr, mode: Arc<AtomicU8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut listener = Some(listener);
        loop {
            if mode.load(Ordering::Acquire) == REFUSE {
                listener = None;
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            let l = match &listener {
                Some(l) => l,
                None => {
                    // Healed: listen on the same port again.
                    match TcpListener::bind(("127.0.0.1", port)).await {
                        Ok(l) => listener.insert(l),
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        }
                    }
                }
            };
            let accepted = tokio::time::timeout(Duration::from_millis(5), l.accept()).await;
            let Ok(Ok((client, _))) = accepted else {
                continue;
            };
            tokio::spawn(pipe(client, target, mode.clone()));
        }
    });
    port
}

/// Relays one connection while the mode forwards; goes silent (holding
/// the socket) in blackhole mode, drops it when refusing.
async fn pipe(client: TcpStream, target: std::net::SocketAddr, mode: Arc<AtomicU8>) {
    if mode.load(Ordering::Acquire) == BLACKHOLE {
        // Accepted, never answered.
        while mode.load(Ordering::Acquire) == BLACKHOLE {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        return;
    }
    let Ok(upstream) = TcpStream::connect(target).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let gate = |mode: Arc<AtomicU8>| async move {
        loop {
            match mode.load(Ordering::Acquire) {
                FORWARD => tokio::time::sleep(Duration::from_millis(5)).await,
                _ => return,
            }
        }
    };
    // Forward both ways until either side ends or the mode changes; in
    // blackhole mode hold the sockets open and silent.
    tokio::select! {
        _ = tokio::io::copy(&mut cr, &mut uw) => {}
        _ = tokio::io::copy(&mut ur, &mut cw) => {}
        _ = gate(mode.clone()) => {
            while mode.load(Ordering::Acquire) == BLACKHOLE {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    let _ = cw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_provider_costs_callers_nothing_and_comes_back_when_it_heals() {
    let real = palisade_sim::spawn("primary", palisade_sim::Faults::default())
        .await
        .unwrap();
    let mode = Arc::new(AtomicU8::new(FORWARD));
    let port = relay(real.addr(), mode.clone()).await;
    let cfg = format!(
        r#"
[gateway]
listen = "127.0.0.1:0"
connect_timeout_ms = 200

[upstreams.primary]
models = {{ "m" = "p-model" }}
base_url = "http://127.0.0.1:{port}"

[upstreams.secondary]
models = {{ "m" = "s-model" }}
simulated = {{ latency_ms = 1, tokens = 2, token_interval_ms = 1 }}

[palisade.router]
order = ["primary", "secondary"]
request_timeout_ms = 5000

[palisade.defaults.retry]
enabled = false

[palisade.defaults.timeout]
attempt_ms = 300

[palisade.defaults.breaker]
consecutive_failures = 2
open_ms = 400
max_open_ms = 400
"#
    );
    let gw = Running::start(&cfg).await;
    let chat = || gw.chat();

    assert_eq!(chat().await, (200, "primary".to_string()));
    let mut answered_by = std::collections::BTreeMap::<String, usize>::new();
    for phase in [BLACKHOLE, REFUSE] {
        mode.store(phase, Ordering::Release);
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(1_500) {
            let (status, who) = chat().await;
            assert_eq!(status, 200, "no caller sees the partition (phase {phase})");
            *answered_by.entry(who).or_default() += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(answered_by.get("primary"), None, "{answered_by:?}");
    // Healed: after its open period the primary answers again.
    mode.store(FORWARD, Ordering::Release);
    let healed = Instant::now();
    loop {
        let (status, who) = chat().await;
        assert_eq!(status, 200);
        if who == "primary" {
            break;
        }
        assert!(
            healed.elapsed() < Duration::from_secs(3),
            "the primary did not come back after the partition healed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "primary back {:?} after the partition healed",
        healed.elapsed()
    );
}
