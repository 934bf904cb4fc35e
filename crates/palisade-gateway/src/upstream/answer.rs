//! What the gateway reads of a whole OpenAI-style answer: its `model` and
//! `usage`, from its top level; everything else is skipped unread.

use std::borrow::Cow;

use serde::Deserialize;

use super::Usage;

/// The answer's `model` and `usage`, where its top level has them.
#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
pub(super) struct Answer<'a> {
    /// The model that answered, as the provider names it (borrowed from
    /// the body unless written with escapes).
    #[serde(borrow, default)]
    pub(super) model: Option<Cow<'a, str>>,
    /// What it used.
    #[serde(default)]
    pub(super) usage: Option<Usage>,
}

/// Reads `model` and `usage` from the top level of `body`, a JSON object;
/// nothing from a body that is not one.
pub(super) fn read_answer(body: &[u8]) -> Answer<'_> {
    serde_json::from_slice(body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usage(prompt: u64, completion: u64) -> Option<Usage> {
        Some(Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total: prompt + completion,
        })
    }

    #[test]
    fn usage_is_read_from_the_answer_and_garbage_is_ignored() {
        let answer = br#"{"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#;
        assert_eq!(
            read_answer(answer).usage,
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
                total: 7
            })
        );
        assert_eq!(read_answer(br#"{"id":"x"}"#).usage, None);
        assert_eq!(
            read_answer(br#"{"usage":{"total_tokens":"many"}}"#).usage,
            None
        );
        assert_eq!(read_answer(b"not json").usage, None);
    }

    #[test]
    fn an_openai_answer_gives_its_model_and_usage() {
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11},"system_fingerprint":"fp_1"}"#;
        let a = read_answer(body);
        assert_eq!(a.model.as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!(a.usage, usage(9, 2));
    }

    #[test]
    fn keys_nested_deeper_or_inside_strings_are_not_the_answers() {
        let body = br#"{
            "choices": [{"message": {"content": "a \"usage\": {\"prompt_tokens\": 1} and } ] {", "model": "inner",
                         "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}}}],
            "meta": {"model": "nested", "usage": "usage"},
            "note": "usage",
            "model" : "outer",
            "usage" :
              { "prompt_tokens" : 3, "completion_tokens" : 4, "total_tokens" : 7 }
        }"#;
        let a = read_answer(body);
        assert_eq!(a.model.as_deref(), Some("outer"));
        assert_eq!(a.usage, usage(3, 4));
        // A name with escapes is read too (it once cost the usage).
        let a = read_answer(br#"{"model":"a\"b","usage":{"total_tokens":1}}"#);
        assert_eq!(
            (a.model.as_deref(), a.usage.map(|u| u.total)),
            (Some("a\"b"), Some(1))
        );
    }

    #[test]
    fn long_strings_and_runs_of_escapes_are_skipped() {
        let text = format!("{}\\\"{}", "\\\\".repeat(100_000), "x".repeat(100));
        let body =
            format!(r#"{{"choices":[{{"content":"{text}"}}],"usage":{{"total_tokens":3}}}}"#);
        assert_eq!(read_answer(body.as_bytes()).usage.map(|u| u.total), Some(3));
        let unterminated = format!(r#"{{"model":"{}"#, "\\\\".repeat(100_000));
        assert_eq!(read_answer(unterminated.as_bytes()), Answer::default());
    }

    #[test]
    fn an_answer_without_them_or_not_an_object_gives_nothing() {
        assert_eq!(read_answer(br#"{"choices":[]}"#), Answer::default());
        assert_eq!(
            read_answer(br#"[{"usage":{"total_tokens":1}}]"#),
            Answer::default()
        );
        assert_eq!(read_answer(b""), Answer::default());
        assert_eq!(read_answer(b"not json"), Answer::default());
        // Embeddings: usage with no completion tokens.
        let a = read_answer(br#"{"data":[],"usage":{"prompt_tokens":4,"total_tokens":4}}"#);
        assert_eq!(a.usage, usage(4, 0));
    }

    #[test]
    fn a_body_cut_short_gives_nothing() {
        let whole = br#"{"model":"m","usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2},"x":"abc\"def"}"#;
        for cut in 0..whole.len() {
            assert_eq!(
                read_answer(&whole[..cut]),
                Answer::default(),
                "cut at {cut}"
            );
        }
        assert_eq!(read_answer(whole).usage, usage(1, 1));
    }

    proptest! {
        /// Whatever the object around them, the top-level values are
        /// found, as serde reads them from the whole body.
        #[test]
        fn the_scan_agrees_with_a_whole_parse(
            fields in proptest::collection::vec(("[a-z\"\\\\{}:, ]{0,8}", any_json()), 0..6),
            model in proptest::option::of("[ -~]{0,12}"),
            tokens in proptest::option::of((0u64..1000, 0u64..1000)),
        ) {
            let mut object = serde_json::Map::new();
            for (k, v) in fields {
                object.insert(k, v);
            }
            if let Some(m) = &model {
                object.insert("model".into(), m.clone().into());
            }
            if let Some((p, c)) = tokens {
                object.insert(
                    "usage".into(),
                    serde_json::json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}),
                );
            }
            let body = serde_json::to_vec(&serde_json::Value::Object(object.clone())).unwrap();
            let a = read_answer(&body);
            let expected_model = object.get("model").and_then(|m| m.as_str());
            let expected_usage = object
                .get("usage")
                .and_then(|u| serde_json::from_value::<Usage>(u.clone()).ok());
            prop_assert_eq!(a.model.as_deref(), expected_model);
            prop_assert_eq!(a.usage, expected_usage);
        }
    }

    /// Values with nested objects, arrays and strings full of JSON's own
    /// punctuation, some with `model` and `usage` keys of their own.
    fn any_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[a-z\"\\\\{}\\[\\]:, ]{0,10}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::vec(
                    (
                        prop_oneof![
                            Just("model".to_owned()),
                            Just("usage".to_owned()),
                            "[a-z]{1,4}"
                        ],
                        inner
                    ),
                    0..4
                )
                .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
            ]
        })
    }
}
