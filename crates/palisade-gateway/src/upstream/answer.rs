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

/// The answer's top-level `usage` alone, found from the end of the body.
///
/// Providers put `usage` among an answer's last members (OpenAI: `usage`,
/// `service_tier`, `system_fingerprint`), after `choices`, which holds the
/// text. Reading the top level backwards from the closing brace finds it
/// without reading the text at all; when it is not among the last
/// [`MAX_MEMBERS`] members, or those are too long to walk back over, or the
/// body does not look like an object, the whole body is parsed as
/// [`read_answer`] does. For a valid JSON object the answer is the same
/// (property-tested).
pub(super) fn read_usage(body: &[u8]) -> Option<Usage> {
    match usage_from_the_end(body) {
        Found::Usage(value) => {
            flat_usage(value).unwrap_or_else(|| serde_json::from_slice(value).ok())
        }
        Found::Absent => None,
        Found::Unknown => read_answer(body).usage,
    }
}

/// `usage`'s value read by hand when it is as providers write it: an
/// object of counts, with objects of counts under other keys (OpenAI's
/// `prompt_tokens_details` and the like). `Some` with what serde would
/// answer (`None` for a value it refuses: no `total_tokens`); `None` for
/// anything else (other values, escapes, a key twice, a count past
/// `u64`), which serde then reads. A few hundred instructions where serde
/// spends several times as many; property-tested against serde.
fn flat_usage(v: &[u8]) -> Option<Option<Usage>> {
    let mut r = Reader { b: v, i: 0 };
    let (mut prompt, mut completion, mut total) = (None, None, None);
    let mut ok = true;
    r.object(|key, r| {
        // The Responses API says `input_tokens` and `output_tokens`
        // (serde's aliases: either name fills the one slot).
        let slot = match key {
            k if k == COUNTS[0] || k == COUNTS[3] => &mut prompt,
            k if k == COUNTS[1] || k == COUNTS[4] => &mut completion,
            k if k == COUNTS[2] => &mut total,
            // Another key: its value a count or an object of counts,
            // ignored.
            _ => {
                return if r.peek() == Some(b'{') {
                    r.object(|_, r| r.count().map(drop))
                } else {
                    r.count().map(drop)
                };
            }
        };
        if slot.is_some() {
            // serde refuses a key twice; let it say so.
            ok = false;
            return None;
        }
        *slot = Some(r.count()?);
        Some(())
    })?;
    r.space();
    if !ok || r.i != v.len() {
        return None;
    }
    Some(total.map(|total| Usage {
        prompt_tokens: prompt.unwrap_or(0),
        completion_tokens: completion.unwrap_or(0),
        total,
    }))
}

/// The keys whose counts make a [`Usage`], matched whole before any key
/// is read byte by byte.
const COUNTS: [&[u8]; 5] = [
    b"prompt_tokens",
    b"completion_tokens",
    b"total_tokens",
    b"input_tokens",
    b"output_tokens",
];

/// A cursor over the bytes [`flat_usage`] reads.
struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn space(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.space();
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// An object, each member's key (without escapes) given to `member`
    /// with the cursor before its value.
    fn object(&mut self, mut member: impl FnMut(&'a [u8], &mut Self) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            self.eat(b'"')?;
            // Up to the closing quote: no escapes, and printable ASCII
            // only (serde checks anything else: control bytes, UTF-8).
            let key = match COUNTS.iter().find(|k| {
                self.b[self.i..].starts_with(k) && self.b.get(self.i + k.len()) == Some(&b'"')
            }) {
                Some(k) => {
                    self.i += k.len();
                    &k[..]
                }
                None => {
                    let start = self.i;
                    loop {
                        match *self.b.get(self.i)? {
                            b'"' => break,
                            b'\\' => return None,
                            0x20..=0x7e => self.i += 1,
                            _ => return None,
                        }
                    }
                    &self.b[start..self.i]
                }
            };
            self.eat(b'"')?;
            self.eat(b':')?;
            member(key, self)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A count: `0`, or digits not starting with `0`, within `u64` (a
    /// fraction or an exponent after them is no `,` or `}`: the object
    /// is then left to serde).
    fn count(&mut self) -> Option<u64> {
        self.space();
        let digits = self.b[self.i..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        let d = &self.b[self.i..self.i + digits];
        if digits == 0 || (digits > 1 && d[0] == b'0') {
            return None;
        }
        self.i += digits;
        d.iter().try_fold(0u64, |n, c| {
            n.checked_mul(10)?.checked_add(u64::from(c - b'0'))
        })
    }
}

/// How many top-level members are read backwards before giving up.
const MAX_MEMBERS: usize = 8;

/// How many bytes of nested values are walked back over before giving up.
const MAX_WALK: usize = 4096;

/// What reading the top level backwards found.
#[derive(Debug, PartialEq, Eq)]
enum Found<'a> {
    /// `usage`'s value.
    Usage(&'a [u8]),
    /// Every member read: none is `usage`.
    Absent,
    /// Not found among the members read: parse the whole body.
    Unknown,
}

fn usage_from_the_end(b: &[u8]) -> Found<'_> {
    let is_ws = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r');
    let Some(start) = b.iter().position(|&c| !is_ws(c)) else {
        return Found::Unknown;
    };
    let Some(end) = b.iter().rposition(|&c| !is_ws(c)) else {
        return Found::Unknown;
    };
    if b[start] != b'{' || b[end] != b'}' || end == start {
        return Found::Unknown;
    }
    // The last non-space byte before `i`, never before the opening brace.
    let back = |i: usize| -> usize {
        let mut j = i;
        while j > start {
            j -= 1;
            if !is_ws(b[j]) {
                return j;
            }
        }
        start
    };
    let mut walked = 0;
    // `p`: the brace or comma that ends the member before it.
    let mut p = end;
    for _ in 0..MAX_MEMBERS {
        let v_end = back(p);
        if v_end == start {
            // Back at the opening brace: every member read.
            return if p == end {
                Found::Absent
            } else {
                Found::Unknown
            };
        }
        let Some(v_start) = value_start(b, start, v_end, &mut walked) else {
            return Found::Unknown;
        };
        let colon = back(v_start);
        if b[colon] != b':' {
            return Found::Unknown;
        }
        let k_end = back(colon);
        if b[k_end] != b'"' {
            return Found::Unknown;
        }
        let Some(k_start) = string_start(b, start, k_end) else {
            return Found::Unknown;
        };
        let key = &b[k_start + 1..k_end];
        if key.contains(&b'\\') {
            // A key with escapes may spell `usage`: let serde read it.
            return Found::Unknown;
        }
        let before = back(k_start);
        if before != start && b[before] != b',' {
            return Found::Unknown;
        }
        if key == b"usage" {
            return Found::Usage(&b[v_start..=v_end]);
        }
        if before == start {
            return Found::Absent;
        }
        p = before;
    }
    Found::Unknown
}

/// Where the value ending at `end` starts, walking back no further than
/// `start` (and no more than [`MAX_WALK`] bytes in all, counted in
/// `walked`).
fn value_start(b: &[u8], start: usize, end: usize, walked: &mut usize) -> Option<usize> {
    match b[end] {
        b'"' => string_start(b, start, end),
        b'}' | b']' => {
            let mut depth = 0usize;
            let mut i = end;
            while i > start {
                *walked += 1;
                if *walked > MAX_WALK {
                    return None;
                }
                match b[i] {
                    b'}' | b']' => depth += 1,
                    b'{' | b'[' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i);
                        }
                    }
                    b'"' => i = string_start(b, start, i)?,
                    _ => {}
                }
                i -= 1;
            }
            None
        }
        c if is_scalar(c) => {
            let mut i = end;
            while i > start && is_scalar(b[i - 1]) {
                i -= 1;
            }
            (i > start).then_some(i)
        }
        _ => None,
    }
}

/// A number, `true`, `false` or `null`'s bytes.
fn is_scalar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'+' | b'-')
}

/// The opening quote of the string whose closing quote is at `close`: the
/// nearest quote before it not escaped (an even run of backslashes before
/// it), found with `memrchr`.
fn string_start(b: &[u8], start: usize, close: usize) -> Option<usize> {
    let mut hay = &b[start + 1..close];
    loop {
        let q = memchr::memrchr(b'"', hay)?;
        let slashes = hay[..q].iter().rev().take_while(|&&c| c == b'\\').count();
        if slashes % 2 == 0 {
            return Some(start + 1 + q);
        }
        hay = &hay[..q];
    }
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

    /// The backward read agrees with the whole parse on every body the
    /// tests above use, cut bodies included, and on OpenAI's own order.
    #[test]
    fn the_usage_read_from_the_end_agrees_with_the_whole_parse() {
        let openai = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"a \"usage\": {} ] }"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}},"service_tier":"default","system_fingerprint":"fp_1"}"#;
        // Found from the end, not by the whole parse.
        assert!(matches!(usage_from_the_end(openai), Found::Usage(_)));
        let long = format!(
            r#"{{"choices":[{{"content":"{}"}}],"usage":{{"total_tokens":3}}}}"#,
            "\\\"x".repeat(10_000)
        );
        assert!(matches!(
            usage_from_the_end(long.as_bytes()),
            Found::Usage(_)
        ));
        let cut_base = br#"{"model":"m","usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2},"x":"abc\"def"}"#;
        let mut bodies: Vec<Vec<u8>> = vec![
            openai.to_vec(),
            long.into_bytes(),
            br#"{"id":"x"}"#.to_vec(),
            br#"{"usage":{"total_tokens":"many"}}"#.to_vec(),
            b"not json".to_vec(),
            br#"{"choices":[]}"#.to_vec(),
            br#"[{"usage":{"total_tokens":1}}]"#.to_vec(),
            b"".to_vec(),
            b"{}".to_vec(),
            b"  {  }  ".to_vec(),
            br#"{"usage":null}"#.to_vec(),
            br#"{"us\u0061ge":{"total_tokens":5}}"#.to_vec(),
            br#"{"a":{"usage":{"total_tokens":1}},"b":[1,{"usage":2}],"c":"usage"}"#.to_vec(),
            br#"{"data":[],"usage":{"prompt_tokens":4,"total_tokens":4}}"#.to_vec(),
            br#"{"usage":{"total_tokens":1}, "n": -1.5e+3, "t": true, "z": null, "s": "\\"}"#
                .to_vec(),
        ];
        bodies.extend((0..cut_base.len()).map(|cut| cut_base[..cut].to_vec()));
        for body in &bodies {
            assert_eq!(
                read_usage(body),
                read_answer(body).usage,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // Found without reading the text: OpenAI's order, and a long text.
        assert_eq!(read_usage(openai), usage(9, 2));
    }

    /// A usage object as providers write it, or nearly: what the hand
    /// reader decides, serde agrees with.
    fn usage_like() -> impl Strategy<Value = String> {
        // Mostly counts as providers write them; now and then one serde
        // refuses or reads otherwise.
        let count = prop_oneof![
            12 => (0u64..100_000).prop_map(|n| n.to_string()),
            1 => Just(u64::MAX.to_string()),
            1 => Just("18446744073709551616".to_owned()),
            1 => Just("007".to_owned()),
            1 => Just("-3".to_owned()),
            1 => Just("1.5".to_owned()),
            1 => Just("2e3".to_owned()),
            1 => Just("\"4\"".to_owned()),
            1 => Just("null".to_owned()),
        ];
        let key = prop_oneof![
            3 => Just("prompt_tokens".to_owned()),
            3 => Just("completion_tokens".to_owned()),
            3 => Just("total_tokens".to_owned()),
            2 => Just("input_tokens".to_owned()),
            2 => Just("output_tokens".to_owned()),
            2 => Just("prompt_tokens_details".to_owned()),
            2 => "[a-z_]{1,8}",
            1 => Just("tot\\u0061l_tokens".to_owned()),
        ];
        let value = prop_oneof![
            6 => count.clone(),
            2 => proptest::collection::vec(("[a-z_]{1,6}", count), 0..3).prop_map(|kv| {
                let members: Vec<String> =
                    kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", members.join(","))
            }),
            1 => Just("[1]".to_owned()),
        ];
        let space = prop_oneof![Just(""), Just(" "), Just("\n  ")];
        (
            proptest::collection::vec((key, value, space), 0..5),
            proptest::bool::weighted(0.1),
        )
            .prop_map(|(members, trailing_comma)| {
                let body: Vec<String> = members
                    .iter()
                    .map(|(k, v, sp)| format!("{sp}\"{k}\"{sp}:{sp}{v}{sp}"))
                    .collect();
                let comma = if trailing_comma && !body.is_empty() {
                    ","
                } else {
                    ""
                };
                format!("{{{}{comma}}}", body.join(","))
            })
    }

    #[test]
    fn usage_as_providers_write_it_is_read_by_hand() {
        let openai = br#"{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}"#;
        assert_eq!(flat_usage(openai), Some(usage(9, 2)));
        // The Responses API's names.
        let responses = br#"{"input_tokens":36,"input_tokens_details":{"cached_tokens":0},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":123}"#;
        assert_eq!(flat_usage(responses), Some(usage(36, 87)));
        assert_eq!(
            serde_json::from_slice::<Usage>(responses).ok(),
            usage(36, 87)
        );
        let pretty = b"{\n  \"total_tokens\" : 4 ,\n  \"prompt_tokens\": 4\n}";
        assert_eq!(flat_usage(pretty), Some(usage(4, 0)));
        // No total: serde refuses it, and so does the hand reader.
        assert_eq!(flat_usage(br#"{"prompt_tokens":1}"#), Some(None));
        // Left to serde: a key twice, a float, a string, an escape.
        for v in [
            &br#"{"total_tokens":1,"total_tokens":2}"#[..],
            br#"{"total_tokens":2,"prompt_tokens":1,"input_tokens":1}"#,
            br#"{"total_tokens":1.0}"#,
            br#"{"total_tokens":"1"}"#,
            br#"{"tot\u0061l_tokens":1}"#,
            br#"{"total_tokens":1}x"#,
            br#"{"total_tokens":0,"prompt_tokens_details":{"a":007}}"#,
            br#"{"total_tokens":1,}"#,
        ] {
            assert_eq!(flat_usage(v), None, "{}", String::from_utf8_lossy(v));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        /// Wherever the hand reader decides, it decides as serde does.
        #[test]
        fn the_hand_read_usage_agrees_with_serde(v in usage_like()) {
            let serde = serde_json::from_slice::<Usage>(v.as_bytes()).ok();
            if let Some(hand) = flat_usage(v.as_bytes()) {
                prop_assert_eq!(hand, serde, "{}", v);
            }
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
            // The usage read from the end agrees, compact or pretty.
            prop_assert_eq!(read_usage(&body), a.usage);
            let pretty = serde_json::to_vec_pretty(&serde_json::Value::Object(object.clone())).unwrap();
            prop_assert_eq!(read_usage(&pretty), a.usage);
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
