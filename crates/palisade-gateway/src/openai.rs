//! The slice of the OpenAI wire format the gateway speaks: the requests it
//! reads (chat completions, completions, embeddings), and the error body
//! it writes.

use serde::{Deserialize, Serialize};

/// The fields of a request the gateway looks at, read from its bytes
/// without building the rest (a long prompt is scanned, not copied); the
/// JSON object is passed to the provider untouched. What else must be
/// there depends on the endpoint
/// ([`Endpoint::check`](crate::upstream::Endpoint::check)).
#[derive(Debug, Clone, Deserialize)]
pub struct RequestHead<'a> {
    /// The model the caller asked for (a name the gateway lists).
    #[serde(borrow)]
    pub model: std::borrow::Cow<'a, str>,
    /// Whether the caller wants server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// `messages`, as far as the checks need it.
    #[serde(default)]
    pub messages: Field,
    /// `prompt`, as far as the checks need it.
    #[serde(default)]
    pub prompt: Field,
    /// `input`, as far as the checks need it.
    #[serde(default)]
    pub input: Field,
}

/// What a request holds under a key the checks look at: nothing, an
/// array, or something else (its contents are skipped, not read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Field {
    /// The key is not there.
    #[default]
    Missing,
    /// An array.
    Array,
    /// Any other value, `null` included.
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Kind;
        impl<'de> serde::de::Visitor<'de> for Kind {
            type Value = Field;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Field, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Field::Array)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Field, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Field::Other)
            }

            fn visit_bool<E>(self, _: bool) -> Result<Field, E> {
                Ok(Field::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Field, E> {
                Ok(Field::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Field, E> {
                Ok(Field::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Field, E> {
                Ok(Field::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<Field, E> {
                Ok(Field::Other)
            }
            fn visit_unit<E>(self) -> Result<Field, E> {
                Ok(Field::Other)
            }
        }
        d.deserialize_any(Kind)
    }
}

/// An OpenAI-style error body: `{"error": {"message", "type", "code"}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// What happened, for a person.
    pub message: String,
    /// The error type, e.g. `invalid_request_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A machine-readable code, e.g. `model_not_found`.
    pub code: Option<String>,
    /// For upstream failures: each provider tried and what happened.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub providers: Vec<String>,
}

impl ErrorBody {
    /// An error body.
    pub fn new(kind: &str, code: Option<&str>, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                message: message.into(),
                kind: kind.to_owned(),
                code: code.map(str::to_owned),
                providers: Vec::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_reads_what_the_checks_need_and_skips_the_rest() {
        let head: RequestHead<'_> = serde_json::from_slice(
            br#"{"messages":[{"role":"user","content":[{"type":"text","text":"a \"b\" [c]"}]}],
                 "model":"gpt-\u0034o","stream":true,"prompt":null,"tools":[{"x":{"y":[1,2]}}]}"#,
        )
        .unwrap();
        assert_eq!(head.model, "gpt-4o");
        assert!(head.stream);
        assert_eq!(
            (head.messages, head.prompt, head.input),
            (Field::Array, Field::Other, Field::Missing)
        );
        for (value, kind) in [
            ("[]", Field::Array),
            ("{}", Field::Other),
            ("\"s\"", Field::Other),
            ("1.5", Field::Other),
            ("-2", Field::Other),
            ("true", Field::Other),
            ("null", Field::Other),
        ] {
            let body = format!(r#"{{"model":"m","input":{value}}}"#);
            let head: RequestHead<'_> = serde_json::from_str(&body).unwrap();
            assert_eq!(head.input, kind, "{value}");
            assert!(!head.stream);
        }
        let bad = serde_json::from_slice::<RequestHead<'_>>(br#"{"model":"m","messages":[1,}"#);
        assert!(
            bad.is_err_and(|e| !e.is_data()),
            "a syntax error, not a data error"
        );
        let bad = serde_json::from_slice::<RequestHead<'_>>(br#"{"messages":[]}"#);
        assert!(bad.is_err_and(|e| e.is_data()), "no model");
    }
}
