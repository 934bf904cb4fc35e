//! What the gateway reads of a whole OpenAI-style answer: its `model` and
//! `usage`, found by a scan of the answer's top level instead of a parse
//! of all of it.
//!
//! Most of an answer is the text in its `choices`; the scan jumps over
//! each string with `memchr` and hands serde only the two values it wants.
//! A `"model"` or `"usage"` key nested deeper (in a message, a tool call's
//! arguments, a provider's extra fields) is never taken for the answer's.

use serde::Deserialize;

use super::Usage;

/// The answer's `model` and `usage`, where its top level has them.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Answer<'a> {
    /// The model that answered, as the provider names it (borrowed from
    /// the body: a name written with escapes is not read).
    pub(super) model: Option<&'a str>,
    /// What it used.
    pub(super) usage: Option<Usage>,
}

/// Reads `model` and `usage` from the top level of `body`, a JSON object.
/// A body that is not one gives what was found before it stopped making
/// sense (nothing, for one that does not start as an object).
pub(super) fn read_answer(body: &[u8]) -> Answer<'_> {
    let mut answer = Answer::default();
    let mut depth = 0u32;
    // At the top level, the next string is a key (after `{` or `,`).
    let mut key_next = false;
    // The last top-level key read, until its `:`.
    let mut key: Option<(usize, usize)> = None;
    let mut i = first_non_space(body, 0);
    if body.get(i) != Some(&b'{') {
        return answer;
    }
    while i < body.len() {
        match body[i] {
            b'"' => {
                let Some(end) = string_end(body, i + 1) else {
                    return answer;
                };
                if depth == 1 && key_next {
                    key = Some((i + 1, end));
                    key_next = false;
                }
                i = end + 1;
                continue;
            }
            b'{' | b'[' => {
                depth += 1;
                if depth == 1 {
                    key_next = true;
                }
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return answer;
                }
            }
            b',' if depth == 1 => key_next = true,
            b':' if depth == 1 => {
                let at = first_non_space(body, i + 1);
                match key.take().map(|(a, b)| &body[a..b]) {
                    Some(b"usage") => answer.usage = value(&body[at..]),
                    Some(b"model") => answer.model = value(&body[at..]),
                    _ => {}
                }
            }
            _ => {}
        }
        i += 1;
    }
    answer
}

/// Where the string whose contents start at `from` ends (its closing
/// quote), skipping escaped quotes.
fn string_end(body: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let at = from + memchr::memchr2(b'"', b'\\', body.get(from..)?)?;
        if body[at] == b'"' {
            return Some(at);
        }
        // A backslash escapes the byte after it.
        from = at + 2;
    }
}

fn first_non_space(body: &[u8], from: usize) -> usize {
    body[from.min(body.len())..]
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map_or(body.len(), |p| from + p)
}

/// The JSON value at the start of `rest` (what follows it is not read).
fn value<'de, T: Deserialize<'de>>(rest: &'de [u8]) -> Option<T> {
    T::deserialize(&mut serde_json::Deserializer::from_slice(rest)).ok()
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
    fn an_openai_answer_gives_its_model_and_usage() {
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11},"system_fingerprint":"fp_1"}"#;
        let a = read_answer(body);
        assert_eq!(a.model, Some("gpt-4o-2024-08-06"));
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
        assert_eq!(a.model, Some("outer"));
        assert_eq!(a.usage, usage(3, 4));
        // A name with escapes is not read; the usage still is.
        let a = read_answer(br#"{"model":"a\"b","usage":{"total_tokens":1}}"#);
        assert_eq!((a.model, a.usage.map(|u| u.total)), (None, Some(1)));
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
    fn a_body_cut_short_gives_what_came_before_the_cut() {
        let whole = br#"{"model":"m","usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2},"x":"abc\"def"}"#;
        let end_of =
            |what: &[u8]| whole.windows(what.len()).position(|w| w == what).unwrap() + what.len();
        let (model_end, usage_end) = (end_of(br#""m""#), end_of(b"2}"));
        for cut in 0..whole.len() {
            let a = read_answer(&whole[..cut]);
            assert_eq!(a.model, (cut >= model_end).then_some("m"), "cut at {cut}");
            assert_eq!(
                a.usage,
                usage(1, 1).filter(|_| cut >= usage_end),
                "cut at {cut}"
            );
        }
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
            let expected_model = object
                .get("model")
                .and_then(|m| m.as_str())
                .filter(|m| !m.contains(['"', '\\']));
            let expected_usage = object
                .get("usage")
                .and_then(|u| serde_json::from_value::<Usage>(u.clone()).ok());
            prop_assert_eq!(a.model, expected_model);
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
