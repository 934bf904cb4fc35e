//! The gateway driven by the official OpenAI Node SDK (openai 7.59.0), over
//! real loopback sockets: whole answers, streams with usage, embeddings,
//! 100 concurrent calls, a 404, a rate limit with `Retry-After`, and a 502
//! the SDK does not retry because the gateway says not to.
//!
//! The SDK is installed on first use with npm into cargo's target directory,
//! so `cargo test` needs `node` and `npm` and the npm registry reachable
//! once. Without them these tests fail saying what is missing; they never
//! skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::Running;

const VERSION: &str = "7.59.0";

/// The directory the SDK is installed in, with the check script beside it.
fn sdk_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("openai-node-sdk");
        common::installing(&dir, || install_sdk(&dir));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/openai_check.mjs");
        std::fs::copy(script, dir.join("openai_check.mjs")).unwrap();
        dir
    })
}

/// Installs the SDK into `dir` with npm, unless it is there.
fn install_sdk(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let installed = std::fs::read_to_string(dir.join("node_modules/openai/package.json"))
        .is_ok_and(|p| p.contains(&format!("\"version\": \"{VERSION}\"")));
    if !installed {
        let out = Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--no-save",
                "--prefix",
            ])
            .arg(dir)
            .arg(format!("openai@{VERSION}"))
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "installing openai@{VERSION} with npm into {} failed:\n{}{}",
                dir.display(),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("npm could not run ({e}): the Node SDK test needs node and npm"),
        }
    }
}

/// Runs the check script's `mode` against `r` and returns what it printed.
async fn sdk(r: &Running, mode: &str) -> serde_json::Value {
    let dir = sdk_dir();
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("openai_check.mjs"))
        .arg(mode)
        .arg(format!("{}/v1", r.base))
        .current_dir(dir);
    common::script_json(cmd).await
}

fn config(faults: &str) -> String {
    common::sdk_config(faults, "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_sdk_gets_answers_streams_and_embeddings() {
    let r = Running::start(&config("")).await;
    let v = sdk(&r, "happy").await;
    assert_eq!(v["models"], serde_json::json!(["m"]), "{v}");
    let whole = &v["whole"];
    assert_eq!(whole["object"], "chat.completion", "{v}");
    assert_eq!(whole["finish_reason"], "stop", "{v}");
    assert_eq!(whole["provider"], "primary", "{v}");
    assert!(whole["total_tokens"].as_u64().unwrap() > 0, "{v}");
    let stream = &v["stream"];
    assert_eq!(stream["finish_reason"], "stop", "{v}");
    assert!(!stream["text"].as_str().unwrap().is_empty(), "{v}");
    assert!(
        stream["total_tokens"].as_u64().unwrap() > 0,
        "usage chunk: {v}"
    );
    assert_eq!(v["embeddings"]["count"], 2, "{v}");
    assert_eq!(v["embeddings"]["dims"], 8, "{v}");
    let resp = &v["responses"];
    assert_eq!(resp["status"], "completed", "{v}");
    assert_eq!(resp["text"], "[primary] tok0 tok1 tok2 tok3", "{v}");
    assert_eq!(resp["output_tokens"], 4, "{v}");
    assert_eq!(resp["stream_text"], resp["text"], "{v}");
    assert_eq!(resp["last_event"], "response.completed", "{v}");
    let stored = &v["stored"];
    assert_eq!(stored["same_id"], true, "{v}");
    assert_eq!(stored["text"], resp["text"], "{v}");
    assert_eq!(stored["input"], serde_json::json!(["hello"]), "{v}");
    assert_eq!(stored["gone"], 404, "{v}");
    assert_eq!(v["not_found"], 404, "{v}");
    assert_eq!(v["concurrent"], 100, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_sdk_sees_a_rate_limit_with_retry_after_and_does_not_retry_a_502() {
    let r = Running::start(&config(", rate_limit_secs = 30")).await;
    let v = sdk(&r, "rate_limited").await;
    assert_eq!(v["raised"], "RateLimitError", "{v}");
    assert_eq!(v["status"], 429, "{v}");
    let after: u64 = v["retry_after"].as_str().unwrap().parse().unwrap();
    assert!((29..=30).contains(&after), "{v}");

    let r = Running::start(&config(", down = true")).await;
    let v = sdk(&r, "failing").await;
    assert_eq!(v["raised"], "InternalServerError", "{v}");
    assert_eq!(v["status"], 502, "{v}");
    assert_eq!(v["should_retry"], "false", "{v}");
    // The SDK's default is two retries of a 5xx; told not to, it sent one
    // request, which the gateway tried once on each provider.
    assert_eq!(r.sims["primary"].requests(), 1, "{v}");
    assert_eq!(r.sims["secondary"].requests(), 1, "{v}");
}
