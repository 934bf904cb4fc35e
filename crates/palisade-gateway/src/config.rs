//! The gateway's configuration: where it listens, its upstreams (real or
//! simulated), and palisade's resilience settings.

use std::collections::BTreeMap;

use palisade::Problem;
use serde::{Deserialize, Serialize};

/// The embedded default: four simulated providers (two of them balanced in
/// the first tier, hedged), no keys needed.
#[cfg(feature = "sim")]
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// `[gateway]`: the server.
    #[serde(default)]
    pub gateway: ServerConfig,
    /// `[upstreams.<id>]`: the providers.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// `[palisade]`: resilience, as palisade's own config (`router`,
    /// `defaults`, `providers`). Upstreams without a `[palisade.providers]`
    /// entry get the defaults.
    #[serde(default)]
    pub palisade: palisade::Config,
    /// `[cache]`: answers kept to stand in when every provider fails
    /// (stale-if-error), to share among identical requests in flight, and
    /// (if `fresh`) to answer repeats at temperature 0. Off without it.
    #[serde(default)]
    pub cache: Option<palisade_cache::CacheSettings>,
    /// `[batch]`: concurrent `/v1/embeddings` requests of one model and
    /// format gathered into one upstream call. Off without it.
    #[serde(default)]
    pub batch: Option<palisade_batch::BatchSettings>,
}

/// `[gateway]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Where to listen (default `127.0.0.1:8080`).
    pub listen: String,
    /// Largest request body, in bytes (default 1 MiB); larger gets 413.
    pub max_body_bytes: usize,
    /// Longest wait for a stream's first token, in ms (default 10000).
    pub first_token_timeout_ms: u64,
    /// Longest pause between a stream's tokens, in ms (default 5000).
    pub idle_timeout_ms: u64,
    /// Connect timeout to upstreams, in ms (default 2000).
    pub connect_timeout_ms: u64,
    /// How long shutdown waits for requests in flight, in ms (default
    /// 10000).
    pub shutdown_grace_ms: u64,
    /// `[gateway.auth]`: client keys and the admin key. Without it anyone
    /// who can reach the port may call the gateway (and spend the
    /// upstream keys), so listening beyond loopback without it is refused
    /// unless [`allow_unauthenticated`](Self::allow_unauthenticated).
    pub auth: Option<AuthConfig>,
    /// Listen beyond loopback with no `[gateway.auth]` (default false).
    pub allow_unauthenticated: bool,
    /// Put on each answer who served it: `x-palisade-provider`,
    /// `x-palisade-attempts`, `x-palisade-fallbacks`, `x-palisade-hedged`,
    /// and the provider's own request id as `x-upstream-request-id`
    /// (default true). Off, callers outside learn nothing of the
    /// providers behind the gateway (as Envoy's `suppress_envoy_headers`),
    /// and each answer is cheaper: it still carries `x-request-id` (the
    /// gateway's) and `x-palisade-degraded` when degraded.
    pub served_headers: bool,
    /// Serve `POST /admin/chaos/{provider}` and `GET /admin/chaos`, to
    /// inject faults into a provider's calls while serving (a game day;
    /// default false). Beyond loopback it needs the admin key.
    pub chaos_endpoint: bool,
    /// A PEM file of certificate authorities to trust for `https://`
    /// upstreams besides Mozilla's and the system's (a provider behind a
    /// private CA); default none.
    pub ca_file: Option<String>,
    /// Most client connections open at once (default 10000); one more is
    /// closed as soon as it is accepted.
    pub max_connections: usize,
    /// Longest time a connection may take to send a request's headers,
    /// and longest a kept-alive connection may sit idle, in ms (default
    /// 10000): a slow-headers (slowloris) client is cut off.
    pub header_timeout_ms: u64,
    /// Longest time a request's body may take to arrive once its headers
    /// have, in ms (default 30000); slower gets 408.
    pub body_timeout_ms: u64,
    /// Largest request head (request line and headers), in bytes (default
    /// 65536, at least 8192); larger gets 431.
    pub max_header_bytes: usize,
    /// Requests served on one connection before it is closed (the last
    /// answer says `connection: close`; default 10000, 0 for no limit).
    pub max_requests_per_connection: u64,
    /// Which log lines are written, as a `RUST_LOG`-style filter (`info`,
    /// `warn,palisade_gateway::access=info`); default `info`. `RUST_LOG`
    /// and `--log-level` take precedence over it. Read at start-up: a
    /// change needs a restart.
    pub log: Option<String>,
    /// With `[palisade.fleet]`: how long the fleet remembers which
    /// provider stored a Responses API response (and with client keys,
    /// which key made it), in ms (default 604800000, a week). Each
    /// response is one short Redis key for that long. Read at start-up.
    pub response_ids_ttl_ms: u64,
}

/// `[gateway.auth]`: who may call the gateway. Keys are given by the
/// environment variable holding them or by their SHA-256 (hex), never in
/// clear.
///
/// ```toml
/// [gateway.auth]
/// admin_key_env = "PALISADE_ADMIN_KEY"          # guards /health and /metrics
/// keys = [
///   { id = "web", env = "PALISADE_KEY_WEB" },
///   { id = "batch", sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", models = ["fast"] },
/// ]
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The client keys.
    pub keys: Vec<KeyConfig>,
    /// The variable holding the admin key; with it (or its hash),
    /// `/health` and `/metrics` answer only to it.
    pub admin_key_env: Option<String>,
    /// The admin key's SHA-256, in hex.
    pub admin_key_sha256: Option<String>,
    /// Each client key's own limit of requests a minute (a bucket per
    /// key, holding a minute's worth); over it, 429 with `Retry-After`.
    pub requests_per_minute: Option<u64>,
    /// Each client key's own limit of tokens a minute (estimated from the
    /// request: its text over 4 plus `max_tokens`).
    pub tokens_per_minute: Option<u64>,
}

/// One client key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Its name in logs (the key itself never is).
    pub id: String,
    /// The environment variable holding it (read at start-up).
    pub env: Option<String>,
    /// Its SHA-256, in hex (`printf %s "$KEY" | sha256sum`).
    pub sha256: Option<String>,
    /// The models it may use (default: all).
    pub models: Option<Vec<String>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".to_owned(),
            max_body_bytes: 1 << 20,
            first_token_timeout_ms: 10_000,
            idle_timeout_ms: 5_000,
            connect_timeout_ms: 2_000,
            shutdown_grace_ms: 10_000,
            auth: None,
            allow_unauthenticated: false,
            served_headers: true,
            chaos_endpoint: false,
            ca_file: None,
            max_connections: 10_000,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            max_header_bytes: 65_536,
            max_requests_per_connection: 10_000,
            log: None,
            response_ids_ttl_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// `[upstreams.<id>]`: one provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Its base URL, as the OpenAI SDKs take it: with the API's path
    /// (`https://api.openai.com/v1`, `https://api.groq.com/openai/v1`,
    /// `https://generativelanguage.googleapis.com/v1beta/openai`), to
    /// which the endpoint's own path (`/chat/completions`) is added; or
    /// the host alone (`https://api.openai.com`), to which `/v1` is added
    /// first. Ignored when simulated.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The environment variable holding its API key (sent as a bearer
    /// token, or in [`api_key_header`](Self::api_key_header)).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The header the API key goes in: `authorization` (the default)
    /// sends `Bearer KEY`; any other (Azure's `api-key`, Anthropic's
    /// `x-api-key`) sends the key alone.
    #[serde(default)]
    pub api_key_header: Option<String>,
    /// Headers sent with every request to it (`OpenAI-Organization`,
    /// OpenRouter's `HTTP-Referer`). Written in the config, so not for
    /// secrets: a key goes in `api_key_env`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Whether a stream's usage is asked for
    /// (`stream_options.include_usage`) when the caller did not (default
    /// true): the token limits and counts need it, and the caller's
    /// stream has that chunk taken out. `false` for a provider that
    /// refuses the option (one that answers a 400 naming it is found out
    /// by itself: the stream is sent again without it, and the provider
    /// is not asked again).
    #[serde(default)]
    pub stream_usage: Option<bool>,
    /// The gateway's model names mapped to this provider's.
    pub models: BTreeMap<String, String>,
    /// Run a simulated provider in-process with these faults instead
    /// (feature `sim`).
    #[cfg(feature = "sim")]
    #[serde(default)]
    pub simulated: Option<palisade_sim::Faults>,
}

impl UpstreamConfig {
    /// Whether it runs in-process (never without the `sim` feature).
    pub fn is_simulated(&self) -> bool {
        #[cfg(feature = "sim")]
        return self.simulated.is_some();
        #[cfg(not(feature = "sim"))]
        false
    }
}

/// A configuration the gateway refused: palisade's one config error type,
/// so the gateway's own keys and `[palisade]`'s are reported together,
/// each with its full key path (`gateway.listen`,
/// `palisade.providers.openai.breaker.failure_rate`).
pub type GatewayConfigError = palisade::ConfigError;

/// Headers the gateway writes itself on every upstream request: an
/// upstream's `headers` may not set them.
const OWN_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "x-request-id",
    crate::upstream::TIMEOUT_HEADER,
    "traceparent",
    "tracestate",
];

/// What is wrong with upstream `id`'s `api_key_header` and `headers`.
fn upstream_header_problems(id: &str, u: &UpstreamConfig) -> Vec<Problem> {
    use http::header::{HeaderName, HeaderValue};
    let mut problems = Vec::new();
    let key_header = match &u.api_key_header {
        Some(name) => match HeaderName::try_from(name.as_str()) {
            Ok(h) if OWN_HEADERS.contains(&h.as_str()) => {
                problems.push(problem(
                    format!("upstreams.{id}.api_key_header"),
                    format!("{name:?} is a header the gateway sets itself"),
                ));
                None
            }
            Ok(h) => Some(h),
            Err(_) => {
                problems.push(problem(
                    format!("upstreams.{id}.api_key_header"),
                    format!("{name:?} is not a header name"),
                ));
                None
            }
        },
        None => Some(http::header::AUTHORIZATION),
    };
    for (name, value) in &u.headers {
        let path = format!("upstreams.{id}.headers.{name}");
        match HeaderName::try_from(name.as_str()) {
            Ok(h) if OWN_HEADERS.contains(&h.as_str()) => {
                problems.push(problem(path.clone(), "a header the gateway sets itself"))
            }
            Ok(h) if u.api_key_env.is_some() && key_header.as_ref() == Some(&h) => problems.push(
                problem(path.clone(), "the API key's header (api_key_env sets it)"),
            ),
            Ok(_) => {}
            Err(_) => problems.push(problem(path.clone(), "not a header name")),
        }
        if HeaderValue::from_str(value).is_err() {
            problems.push(problem(
                path,
                "not a header value (visible ASCII, spaces and tabs only)",
            ));
        }
    }
    problems
}

/// A problem at `path`.
fn problem(path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

impl GatewayConfig {
    /// Parses and checks TOML.
    pub fn from_toml(text: &str) -> Result<Self, GatewayConfigError> {
        let mut cfg: GatewayConfig =
            toml::from_str(text).map_err(|e| GatewayConfigError::Parse(e.to_string()))?;
        cfg.complete();
        cfg.validate()?;
        Ok(cfg)
    }

    /// The embedded default.
    #[cfg(feature = "sim")]
    pub fn embedded() -> Self {
        Self::from_toml(DEFAULT_CONFIG).expect("the embedded config is valid")
    }

    /// Why the gateway must not serve at `addr` as configured: reachable
    /// from other machines with no `[gateway.auth]`, unless
    /// `allow_unauthenticated` says so.
    pub fn exposure_problem(&self, addr: std::net::SocketAddr) -> Option<String> {
        let no_admin = self
            .gateway
            .auth
            .as_ref()
            .is_none_or(|a| a.admin_key_env.is_none() && a.admin_key_sha256.is_none());
        if self.gateway.chaos_endpoint && !addr.ip().is_loopback() && no_admin {
            return Some(format!(
                "{addr} can be reached from other machines and gateway.chaos_endpoint is on with no \
                 admin key: anyone could take providers down. Set gateway.auth.admin_key_env (or \
                 _sha256), listen on 127.0.0.1, or turn the chaos endpoint off"
            ));
        }
        let open = self.gateway.auth.as_ref().is_none_or(|a| a.keys.is_empty());
        (open && !addr.ip().is_loopback() && !self.gateway.allow_unauthenticated).then(|| {
            format!(
                "{addr} can be reached from other machines and no [gateway.auth] keys are set: \
                 anyone could spend the upstream keys. Add keys under [gateway.auth], listen on \
                 127.0.0.1, or set gateway.allow_unauthenticated = true"
            )
        })
    }

    /// What would not stop the gateway from starting but will likely not
    /// work here: a key's or an upstream's variable (`env`,
    /// `admin_key_env`, `api_key_env`) that is not set in this
    /// environment, or a `max_connections` that this process's open-file
    /// hard limit cannot hold (see [`raise_open_files_limit`](crate::raise_open_files_limit)).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let auth = self.gateway.auth.as_ref();
        let vars = auth
            .into_iter()
            .flat_map(|a| {
                a.keys.iter().filter_map(|k| {
                    k.env
                        .as_ref()
                        .map(|v| (format!("gateway.auth key {}", k.id), v))
                })
            })
            .chain(
                auth.and_then(|a| a.admin_key_env.as_ref())
                    .map(|v| ("gateway.auth admin key".to_owned(), v)),
            );
        for (what, var) in vars {
            if std::env::var_os(var).is_none() {
                out.push(format!(
                    "{what}: {var} is not set, so the gateway will refuse to start"
                ));
            }
        }
        for (id, u) in &self.upstreams {
            if let Some(var) = &u.api_key_env {
                if std::env::var_os(var).is_none() {
                    out.push(format!(
                        "upstreams.{id}.api_key_env: {var} is not set, so calls to {id} carry no key"
                    ));
                }
            }
        }
        if let Some(w) = crate::open_files::shortfall(
            self.gateway.max_connections,
            crate::open_files_limit().hard,
        ) {
            out.push(w);
        }
        out
    }

    /// Reads a TOML file.
    pub fn from_path(path: &str) -> Result<Self, GatewayConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| GatewayConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Gives every upstream a palisade provider entry (defaults) if it
    /// has none.
    fn complete(&mut self) {
        for id in self.upstreams.keys() {
            self.palisade.providers.entry(id.clone()).or_default();
        }
    }

    fn validate(&self) -> Result<(), GatewayConfigError> {
        let mut problems = Vec::new();
        if self.gateway.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(problem(
                "gateway.listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:8080",
                    self.gateway.listen
                ),
            ));
        }
        for (name, v) in [
            (
                "gateway.first_token_timeout_ms",
                self.gateway.first_token_timeout_ms,
            ),
            ("gateway.idle_timeout_ms", self.gateway.idle_timeout_ms),
            (
                "gateway.connect_timeout_ms",
                self.gateway.connect_timeout_ms,
            ),
        ] {
            if v == 0 {
                problems.push(problem(name, "0 would time out at once; use at least 1"));
            }
        }
        if self.gateway.max_body_bytes == 0 {
            problems.push(problem("gateway.max_body_bytes", "0 refuses every request"));
        }
        if let Some(Err(e)) = self
            .batch
            .as_ref()
            .map(palisade_batch::BatchSettings::check)
        {
            problems.extend(e.problems().iter().cloned());
        }
        if let Some(Err(e)) = self
            .cache
            .as_ref()
            .map(palisade_cache::CacheSettings::check)
        {
            problems.extend(e.problems().iter().cloned());
        }
        if self.upstreams.is_empty() {
            problems.push(problem("upstreams", "no upstream is configured"));
        }
        for (id, u) in &self.upstreams {
            if u.models.is_empty() {
                problems.push(problem(format!("upstreams.{id}.models"), "maps no model"));
            }
            problems.extend(upstream_header_problems(id, u));
            #[cfg(feature = "sim")]
            if let Some(f) = &u.simulated {
                // Simulated: its base_url is not used.
                if let Err(e) = f.check() {
                    problems.extend(e.at(&format!("upstreams.{id}")).problems().iter().cloned());
                }
                continue;
            }
            match &u.base_url {
                None => problems.push(problem(
                    format!("upstreams.{id}"),
                    "needs a base_url, or `simulated` faults",
                )),
                Some(url) => match url.parse::<http::Uri>() {
                    Ok(u) if u.host().is_some() => {
                        if !matches!(u.scheme_str(), Some("http" | "https")) {
                            problems.push(problem(
                                format!("upstreams.{id}.base_url"),
                                format!("{url:?}: the scheme must be http or https"),
                            ))
                        }
                        // An endpoint's URL pasted whole: its path would be
                        // added twice.
                        if let Some(e) = crate::upstream::Endpoint::ALL
                            .iter()
                            .find(|e| u.path().trim_end_matches('/').ends_with(e.api_path()))
                        {
                            problems.push(problem(
                                format!("upstreams.{id}.base_url"),
                                format!(
                                    "{url:?} ends with an endpoint's path ({}): give the API's root, as to an OpenAI SDK (\"https://api.openai.com/v1\"); the gateway adds each endpoint's path",
                                    e.api_path()
                                ),
                            ))
                        }
                        if u.query().is_some() {
                            problems.push(problem(
                                format!("upstreams.{id}.base_url"),
                                format!("{url:?}: a base URL takes no query (the endpoint's path is added to it)"),
                            ))
                        }
                    }
                    _ => problems.push(problem(
                        format!("upstreams.{id}.base_url"),
                        format!("{url:?} is not an absolute URL"),
                    )),
                },
            }
        }
        let g = &self.gateway;
        if let Some(path) = &g.ca_file {
            if let Err(why) = crate::upstream::read_ca_file(path) {
                problems.push(problem("gateway.ca_file", why));
            }
        }
        if g.max_connections == 0 {
            problems.push(problem(
                "gateway.max_connections",
                "0 would refuse every connection",
            ));
        }
        for (name, ms) in [
            ("header_timeout_ms", g.header_timeout_ms),
            ("body_timeout_ms", g.body_timeout_ms),
        ] {
            if ms == 0 {
                problems.push(problem(
                    format!("gateway.{name}"),
                    "0 would cut off every request",
                ));
            }
        }
        if g.response_ids_ttl_ms == 0 {
            problems.push(problem(
                "gateway.response_ids_ttl_ms",
                "0 would forget each response at once; leave it out for a week",
            ));
        }
        if g.max_header_bytes < 8192 {
            problems.push(problem(
                "gateway.max_header_bytes",
                format!(
                    "{} is below the least hyper accepts, 8192",
                    g.max_header_bytes
                ),
            ));
        }
        if let Some(filter) = &g.log {
            if let Err(e) = crate::logs::parse_filter(filter) {
                problems.push(problem("gateway.log", e));
            }
        }
        if let Some(auth) = &self.gateway.auth {
            let models = self.models();
            let mut ids = std::collections::BTreeSet::new();
            for (i, k) in auth.keys.iter().enumerate() {
                let at = format!("gateway.auth.keys[{i}]");
                if k.id.is_empty() {
                    problems.push(problem(format!("{at}.id"), "is empty"));
                } else if !ids.insert(k.id.clone()) {
                    problems.push(problem(
                        format!("{at}.id"),
                        format!("{:?} is used twice", k.id),
                    ));
                }
                match (&k.env, &k.sha256) {
                    (Some(_), None) => {}
                    (None, Some(h)) if crate::auth::parse_hash(h).is_none() => {
                        problems.push(problem(format!("{at}.sha256"), "is not 64 hex digits"))
                    }
                    (None, Some(_)) => {}
                    _ => problems.push(problem(at.clone(), "give env or sha256 (one of them)")),
                }
                for m in k.models.iter().flatten() {
                    if !models.contains_key(m) {
                        problems.push(problem(
                            format!("{at}.models"),
                            format!("{m:?} is not a model served"),
                        ));
                    }
                }
            }
            for (name, v) in [
                ("requests_per_minute", auth.requests_per_minute),
                ("tokens_per_minute", auth.tokens_per_minute),
            ] {
                if v == Some(0) {
                    problems.push(problem(
                        format!("gateway.auth.{name}"),
                        "0 would refuse every request",
                    ));
                }
            }
            if let Some(h) = &auth.admin_key_sha256 {
                if auth.admin_key_env.is_some() {
                    problems.push(problem(
                        "gateway.auth",
                        "give admin_key_env or admin_key_sha256, not both",
                    ));
                } else if crate::auth::parse_hash(h).is_none() {
                    problems.push(problem(
                        "gateway.auth.admin_key_sha256",
                        "is not 64 hex digits",
                    ));
                }
            }
        }
        if let Ok(addr) = self.gateway.listen.parse() {
            if let Some(why) = self.exposure_problem(addr) {
                problems.push(problem("gateway.listen", why));
            }
        }
        for id in self.palisade.providers.keys() {
            if !self.upstreams.contains_key(id) {
                problems.push(problem(
                    format!("palisade.providers.{id}"),
                    "no upstream of that name",
                ));
            }
        }
        // palisade's own problems, under the key the gateway nests it in,
        // reported with the gateway's in one list.
        match self.palisade.validate() {
            Ok(()) => {}
            Err(GatewayConfigError::Invalid(inner)) => {
                problems.extend(inner.into_iter().map(|p| Problem {
                    path: format!("palisade.{}", p.path),
                    message: p.message,
                }));
            }
            Err(other) => return Err(other),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(GatewayConfigError::Invalid(problems))
        }
    }

    /// The models the gateway serves, with the providers that map each.
    pub fn models(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, u) in &self.upstreams {
            for m in u.models.keys() {
                out.entry(m.clone()).or_default().push(id.clone());
            }
        }
        out
    }
}
