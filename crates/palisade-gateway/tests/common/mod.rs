//! A gateway started in-process for a test, on a free loopback port, and
//! the calls the tests make to it with a real HTTP client.
#![allow(dead_code, unreachable_pub)]

pub mod pki;

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade_gateway::{Gateway, GatewayConfig};

/// The chat request the tests send, for model `m`.
pub const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

/// A gateway serving until dropped.
pub struct Running {
    pub base: String,
    pub sims: BTreeMap<String, palisade_sim::SimHandle>,
    pub client: Client<HttpConnector, Full<Bytes>>,
    stop: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Binds a gateway on `cfg` (TOML) and serves it in the background.
    pub async fn start(cfg: &str) -> Running {
        Running::start_with(cfg, |gw| gw).await
    }

    /// [`start`](Self::start), with `setup` applied to the gateway before
    /// it serves.
    pub async fn start_with(cfg: &str, setup: impl FnOnce(Gateway) -> Gateway) -> Running {
        let gw = Gateway::bind(GatewayConfig::from_toml(cfg).unwrap(), None)
            .await
            .unwrap();
        let gw = setup(gw);
        let base = format!("http://{}", gw.local_addr().unwrap());
        let sims = gw.sims().clone();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(gw.serve(async move {
            let _ = rx.await;
        }));
        Running {
            base,
            sims,
            client: Client::builder(TokioExecutor::new()).build_http(),
            stop: std::sync::Mutex::new(Some(stop)),
            done,
        }
    }

    /// Starts a graceful shutdown (requests in flight finish).
    pub fn stop(&self) {
        if let Some(stop) = self.stop.lock().unwrap().take() {
            let _ = stop.send(());
        }
    }

    /// Stops the gateway and waits until it has stopped serving.
    pub async fn stopped(self) -> std::io::Result<()> {
        self.stop();
        self.done.await.expect("the gateway's task")
    }

    /// Simulated provider `id`.
    pub fn sim(&self, id: &str) -> &palisade_sim::SimHandle {
        &self.sims[id]
    }

    /// A chat completion request with `body`: (status, body, headers).
    pub async fn post(&self, body: &str) -> (u16, String, http::HeaderMap) {
        self.post_to("/v1/chat/completions", body, &[]).await
    }

    /// [`post`](Self::post) with these request headers too.
    pub async fn post_with(
        &self,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String, http::HeaderMap) {
        self.post_to("/v1/chat/completions", body, headers).await
    }

    /// A POST to `path`.
    pub async fn post_to(
        &self,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String, http::HeaderMap) {
        self.send_with("POST", path, body, headers).await
    }

    /// `GET path`: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        self.get_with(path, &[]).await
    }

    /// [`get`](Self::get) with these request headers.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let (status, body, _) = self.send_with("GET", path, "", headers).await;
        (status, body)
    }

    /// One request: (status, body, headers).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, String, http::HeaderMap) {
        self.send_with(method, path, body, &[]).await
    }

    /// [`send`](Self::send) with these request headers too.
    pub async fn send_with(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String, http::HeaderMap) {
        let req = request(method, &format!("{}{path}", self.base), body, headers);
        read(self.client.request(req).await.unwrap()).await
    }

    /// `palisade_gateway_tokens_total` for `provider` and `kind`
    /// (`prompt`, `completion`); 0 before any.
    pub async fn tokens(&self, provider: &str, kind: &str) -> u64 {
        let provider = format!("provider=\"{provider}\"");
        let kind = format!("kind=\"{kind}\"");
        self.text("/metrics")
            .await
            .lines()
            .filter(|l| l.starts_with("palisade_gateway_tokens_total{"))
            .find(|l| l.contains(&provider) && l.contains(&kind))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// A chat completion for `m`: (status, the provider that answered).
    pub async fn chat(&self) -> (u16, String) {
        let (status, _, headers) = self.send("POST", "/v1/chat/completions", CHAT).await;
        let who = headers
            .get("x-palisade-provider")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, who)
    }

    /// `GET path` as JSON.
    pub async fn json(&self, path: &str) -> serde_json::Value {
        let (_, body, _) = self.send("GET", path, "").await;
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// `GET path` as text.
    pub async fn text(&self, path: &str) -> String {
        self.send("GET", path, "").await.1
    }

    /// Provider `id`'s part of `/health`.
    pub async fn provider(&self, id: &str) -> serde_json::Value {
        let h = self.json("/health").await;
        h["providers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no provider {id} in {h}"))
    }
}

/// A JSON request: `method` to `uri` with `body` and these headers.
pub fn request(
    method: &str,
    uri: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> http::Request<Full<Bytes>> {
    let mut req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(Full::new(Bytes::from(body.to_owned()))).unwrap()
}

/// An answer read whole: (status, body, headers).
pub async fn read(res: http::Response<hyper::body::Incoming>) -> (u16, String, http::HeaderMap) {
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        String::from_utf8_lossy(&bytes).into_owned(),
        headers,
    )
}

/// The two-provider config the SDK tests run: `faults` added to both
/// simulated providers, `router` to `[palisade.router]`; one attempt per
/// provider and a breaker that stays closed, so the calls counted are the
/// SDK's.
pub fn sdk_config(faults: &str, router: &str) -> String {
    format!(
        r#"
        [gateway]
        listen = "127.0.0.1:0"

        [upstreams.primary]
        models = {{ "m" = "p-model" }}
        simulated = {{ latency_ms = 5, tokens = 4, token_interval_ms = 2 {faults} }}

        [upstreams.secondary]
        models = {{ "m" = "s-model" }}
        simulated = {{ latency_ms = 5, tokens = 4, token_interval_ms = 2 {faults} }}

        [palisade.router]
        order = ["primary", "secondary"]
        request_timeout_ms = 5000
        {router}

        [palisade.defaults.retry]
        enabled = false

        [palisade.defaults.breaker]
        consecutive_failures = 100
        "#
    )
}

/// Runs `cmd` (an SDK's check script) off the runtime and parses what it
/// printed as JSON; fails with its output when it fails.
pub async fn script_json(mut cmd: std::process::Command) -> serde_json::Value {
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("the script runs"))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the SDK script failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Runs `install` holding an exclusive lock on the file `{dir}.lock`, so
/// that test processes started at once (nextest runs each test in its own)
/// install an SDK into `dir` one at a time, the later ones finding it done.
pub fn installing<T>(dir: &std::path::Path, install: impl FnOnce() -> T) -> T {
    let mut name = dir.as_os_str().to_owned();
    name.push(".lock");
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let lock = std::fs::File::create(&name)
        .unwrap_or_else(|e| panic!("creating {}: {e}", std::path::Path::new(&name).display()));
    // Unlocked when `lock` is closed, after the install.
    #[cfg(unix)]
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .unwrap_or_else(|e| panic!("locking {}: {e}", std::path::Path::new(&name).display()));
    let done = install();
    drop(lock);
    done
}
