//! Who may call the gateway: client keys, their model allow-lists, and the
//! admin key that guards `/health` and `/metrics`.
//!
//! Keys are never kept in clear: a key from an environment variable is
//! hashed (SHA-256) when the gateway starts, and a key given in the config
//! is given as its hash. A presented bearer token is hashed and looked up
//! by its hash, so how long a lookup takes tells nothing about any key (at
//! most about hashes, which do not lead back to a key). Keys never appear
//! in logs: a request is logged with its key's `id`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use sha2::{Digest, Sha256};

use crate::config::{AuthConfig, KeyConfig};
use crate::errors::error;
use crate::openai::ErrorBody;

type Hash = [u8; 32];

/// One client key, as the gateway knows it after start-up.
#[derive(Debug)]
pub struct ClientKey {
    /// Its name in logs and limits.
    pub id: Arc<str>,
    /// The models it may use; `None`: all.
    pub models: Option<BTreeSet<String>>,
}

impl ClientKey {
    /// Whether it may use `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|m| m.contains(model))
    }
}

/// The keys, by hash.
#[derive(Debug)]
pub(crate) struct Auth {
    keys: HashMap<Hash, Arc<ClientKey>>,
    admin: Option<Hash>,
}

fn sha256(secret: &str) -> Hash {
    Sha256::digest(secret.as_bytes()).into()
}

/// `hex` (64 hex digits) as a hash.
pub(crate) fn parse_hash(hex: &str) -> Option<Hash> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A key's hash from where the config says it is: an environment variable
/// (read now) or its SHA-256 in hex. `what` names it in the error.
fn resolve(env: Option<&str>, hash: Option<&str>, what: &str) -> Result<Hash, String> {
    match (env, hash) {
        (Some(var), None) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(sha256(&v)),
            _ => Err(format!("{what}: the environment variable {var} is not set")),
        },
        (None, Some(h)) => parse_hash(h).ok_or_else(|| format!("{what}: not 64 hex digits")),
        _ => Err(format!("{what}: give env or sha256")),
    }
}

impl Auth {
    /// The keys of `cfg`, their variables read now; every key that cannot
    /// be resolved is an error (a gateway that would lock a client out is
    /// refused at start-up).
    pub(crate) fn new(cfg: &AuthConfig) -> Result<Auth, String> {
        let mut keys = HashMap::new();
        let mut problems = Vec::new();
        for (
            i,
            KeyConfig {
                id,
                env,
                sha256,
                models,
            },
        ) in cfg.keys.iter().enumerate()
        {
            match resolve(
                env.as_deref(),
                sha256.as_deref(),
                &format!("gateway.auth.keys[{i}] ({id})"),
            ) {
                Ok(h) => {
                    let key = ClientKey {
                        id: id.as_str().into(),
                        models: models.as_ref().map(|m| m.iter().cloned().collect()),
                    };
                    if keys.insert(h, Arc::new(key)).is_some() {
                        problems.push(format!(
                            "gateway.auth.keys[{i}] ({id}): the same key as another"
                        ));
                    }
                }
                Err(e) => problems.push(e),
            }
        }
        let admin = match (&cfg.admin_key_env, &cfg.admin_key_sha256) {
            (None, None) => None,
            (env, hash) => match resolve(env.as_deref(), hash.as_deref(), "gateway.auth.admin_key")
            {
                Ok(h) => Some(h),
                Err(e) => {
                    problems.push(e);
                    None
                }
            },
        };
        if problems.is_empty() {
            Ok(Auth { keys, admin })
        } else {
            Err(problems.join("; "))
        }
    }

    /// Whether any client key is set (else anyone may call the model
    /// endpoints, and only the admin key guards anything).
    pub(crate) fn has_client_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The client key `headers` present (`Authorization: Bearer ...`).
    pub(crate) fn client(&self, headers: &HeaderMap) -> Result<Arc<ClientKey>, Unauthorized> {
        bearer(headers)
            .and_then(|token| self.keys.get(&sha256(token)).cloned())
            .ok_or(Unauthorized)
    }

    /// Whether `headers` may read `/health` and `/metrics`: the admin key
    /// when one is set, else anyone.
    pub(crate) fn admin(&self, headers: &HeaderMap) -> Result<(), Unauthorized> {
        match self.admin {
            None => Ok(()),
            Some(admin) => match bearer(headers) {
                Some(token) if sha256(token) == admin => Ok(()),
                _ => Err(Unauthorized),
            },
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A missing or wrong key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unauthorized;

impl axum::response::IntoResponse for Unauthorized {
    /// OpenAI's answer to a missing or wrong key: 401, `invalid_api_key`.
    fn into_response(self) -> Response {
        unauthorized()
    }
}

fn unauthorized() -> Response {
    let mut res = error(
        StatusCode::UNAUTHORIZED,
        ErrorBody::new(
            "invalid_request_error",
            Some("invalid_api_key"),
            "Incorrect or missing API key: send Authorization: Bearer <key>",
        ),
    );
    res.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    res
}

/// The answer to a key asking for a model it may not use.
pub(crate) fn model_not_allowed(key: &ClientKey, model: &str) -> Response {
    error(
        StatusCode::FORBIDDEN,
        ErrorBody::new(
            "invalid_request_error",
            Some("model_not_allowed"),
            format!("the key {:?} may not use the model {model:?}", key.id),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_parse_and_garbage_does_not() {
        let h = sha256("secret");
        let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_hash(&hex), Some(h));
        assert_eq!(parse_hash(&hex.to_uppercase()), Some(h));
        assert_eq!(parse_hash(&hex[..62]), None);
        assert_eq!(parse_hash(&"zz".repeat(32)), None);
        assert_eq!(parse_hash(&"é".repeat(32)), None);
    }

    #[test]
    fn bearer_tokens_are_read_and_garbage_ignored() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert("authorization", "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        for bad in ["Basic abc", "Bearer", "Bearer ", "abc"] {
            h.insert("authorization", bad.parse().unwrap());
            assert_eq!(bearer(&h), None, "{bad}");
        }
    }
}
