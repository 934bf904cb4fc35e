//! The gateway driven by the official OpenAI Python SDK (openai 3.57.0),
//! over real loopback sockets: what a user's application would see.
//!
//! The SDK is installed on first use into a virtual environment under
//! cargo's target directory (`python3 -m venv`, then `pip install`), so
//! `cargo test` needs `python3` with `venv` and `pip`, and PyPI reachable
//! once. Without them these tests fail with a message saying what is
//! missing; they never skip. `PALISADE_PYTHON` names another interpreter
//! to build the environment with.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::Running;

const OPENAI: &str = "openai==3.57.0";

/// The virtual environment's interpreter, with the SDK installed.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("openai-sdk-venv");
        common::installing(&dir, || install_sdk(&dir))
    })
}

/// Makes a virtual environment in `dir` with the SDK, unless it has it.
fn install_sdk(dir: &Path) -> PathBuf {
    let py = dir.join("bin").join("python");
    let has_sdk = |py: &Path| {
        Command::new(py)
            .args([
                "-c",
                &format!(
                    "import openai; assert openai.__version__ == {:?}",
                    &OPENAI[8..]
                ),
            ])
            .status()
            .is_ok_and(|s| s.success())
    };
    if has_sdk(&py) {
        return py;
    }
    let base = std::env::var("PALISADE_PYTHON").unwrap_or_else(|_| "python3".into());
    run(Command::new(&base).args(["-m", "venv", "--clear"]).arg(dir), &format!(
            "creating a virtual environment with `{base} -m venv` (the OpenAI SDK test needs python3 with venv)"
        ));
    run(
        Command::new(dir.join("bin").join("pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            OPENAI,
        ]),
        &format!("installing {OPENAI} from PyPI into {}", dir.display()),
    );
    assert!(has_sdk(&py), "{OPENAI} installed but does not import");
    py
}

fn run(cmd: &mut Command, what: &str) {
    match cmd.output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("{what} failed: {e}"),
    }
}

async fn start(cfg: &str) -> Running {
    Running::start(cfg).await
}

/// Runs the check script's `mode` against `r` and returns what it printed.
async fn sdk(r: &Running, mode: &str) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/openai_check.py");
    let mut cmd = Command::new(python());
    cmd.arg(script).arg(mode).arg(format!("{}/v1", r.base));
    common::script_json(cmd).await
}

fn config(faults: &str, router: &str) -> String {
    common::sdk_config(faults, router)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_gets_whole_answers_streams_usage_embeddings_completions_and_404s() {
    let r = start(&config("", "")).await;
    let v = sdk(&r, "happy").await;
    assert_eq!(v["models"], serde_json::json!(["m"]), "{v}");
    assert_eq!(v["retrieved"], "m", "models.retrieve: {v}");
    let whole = &v["whole"];
    assert_eq!(whole["finish_reason"], "stop", "{v}");
    assert_eq!(whole["object"], "chat.completion", "{v}");
    assert!(whole["created"].as_u64().unwrap() > 1_700_000_000, "{v}");
    assert!(whole["total_tokens"].as_u64().unwrap() > 0, "{v}");
    assert!(!whole["content"].as_str().unwrap().is_empty(), "{v}");
    assert_eq!(whole["provider"], "primary", "{v}");
    assert_eq!(whole["attempts"], "1", "{v}");
    let stream = &v["stream"];
    assert_eq!(stream["finish_reason"], "stop", "{v}");
    assert!(!stream["text"].as_str().unwrap().is_empty(), "{v}");
    assert_eq!(stream["usage"], false, "no usage chunk unless asked: {v}");
    // With include_usage, a last chunk with no choices carries the usage.
    assert_eq!(v["stream_usage"]["last_choices"], 0, "{v}");
    assert!(
        v["stream_usage"]["total_tokens"].as_u64().unwrap() > 0,
        "{v}"
    );
    let emb = &v["embeddings"];
    assert_eq!(emb["count"], 2, "{v}");
    assert_eq!(emb["dims"], 8, "{v}");
    assert_eq!(
        emb["same_text_same_vector"], true,
        "base64 and float agree: {v}"
    );
    assert_eq!(emb["texts_differ"], true, "{v}");
    assert_eq!(emb["wide"], 16, "dimensions passed through: {v}");
    assert!(emb["usage"].as_u64().unwrap() > 0, "{v}");
    let c = &v["completions"];
    assert_eq!(c["object"], "text_completion", "{v}");
    assert_eq!(c["finish_reason"], "stop", "{v}");
    assert!(c["text"].as_str().unwrap().starts_with("[primary]"), "{v}");
    assert_eq!(c["stream_text"], c["text"], "{v}");
    assert_eq!(c["stream_finish"], "stop", "{v}");
    let resp = &v["responses"];
    assert_eq!(resp["object"], "response", "{v}");
    assert_eq!(resp["status"], "completed", "{v}");
    assert_eq!(resp["text"], "[primary] tok0 tok1 tok2 tok3", "{v}");
    assert_eq!(resp["output_tokens"], 4, "{v}");
    assert!(resp["input_tokens"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(resp["provider"], "primary", "{v}");
    assert_eq!(resp["first_event"], "response.created", "{v}");
    assert_eq!(resp["last_event"], "response.completed", "{v}");
    assert_eq!(resp["stream_text"], resp["text"], "{v}");
    assert_eq!(resp["stream_final_text"], resp["text"], "{v}");
    assert_eq!(resp["stream_output_tokens"], 4, "{v}");
    let stored = &v["stored"];
    assert_eq!(stored["same_id"], true, "{v}");
    assert_eq!(stored["text"], resp["text"], "{v}");
    assert_eq!(stored["input"], serde_json::json!(["hello"]), "{v}");
    assert_eq!(stored["deleted_status"], 200, "{v}");
    assert_eq!(stored["gone"], 404, "{v}");
    assert_eq!(v["not_found"], 404, "{v}");
    assert_eq!(v["concurrent"], 200, "200 concurrent async calls: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_stream_cut_midway_is_raised_by_the_sdk() {
    // Both providers stall after their first events: the gateway's idle
    // timeout ends the stream with an error event.
    let cfg = config(", stall_after_tokens = 3", "").replacen(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nidle_timeout_ms = 200",
        1,
    );
    let r = start(&cfg).await;
    let v = sdk(&r, "responses_cut").await;
    assert_eq!(v["raised"], "APIError", "{v}");
    assert_eq!(v["code"], "stream_interrupted", "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("idle timeout"),
        "{v}"
    );
    assert_eq!(
        v["events"],
        serde_json::json!([
            "response.created",
            "response.in_progress",
            "response.output_item.added"
        ]),
        "the events before the cut reached the caller: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_bad_request_reaches_the_sdk_as_bad_request_error() {
    // Both providers' context windows are too small for the prompt: the
    // provider's 400 comes back as it is, not retried, not failed over.
    let r = start(&config(", context_window = 100", "")).await;
    let v = sdk(&r, "too_long").await;
    assert_eq!(v["raised"], "BadRequestError", "{v}");
    assert_eq!(v["status"], 400, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_rate_limited_is_a_rate_limit_error_with_retry_after() {
    let r = start(&config(", rate_limit_secs = 30", "")).await;
    let v = sdk(&r, "rate_limited").await;
    assert_eq!(v["raised"], "RateLimitError", "{v}");
    assert_eq!(v["status"], 429, "{v}");
    let after: u64 = v["retry_after"].as_str().unwrap().parse().unwrap();
    assert!((29..=30).contains(&after), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_provider_failed_the_sdk_is_told_not_to_retry_and_does_not() {
    let r = start(&config(", down = true", "")).await;
    let v = sdk(&r, "failing").await;
    assert_eq!(v["raised"], "InternalServerError", "{v}");
    assert_eq!(v["status"], 502, "{v}");
    assert_eq!(v["should_retry"], "false", "{v}");
    // The SDK's default is two retries of a 5xx; told not to, it sent one
    // request, which the gateway tried once on each provider.
    assert_eq!(r.sims["primary"].requests(), 1, "{v}");
    assert_eq!(r.sims["secondary"].requests(), 1, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_and_a_model_the_key_may_not_use_are_the_sdks_auth_errors() {
    let cfg = config("", "").replace(
        "[upstreams.primary]",
        r#"[gateway.auth]
        # sha256 of "client-b-secret", which may use "m" only
        keys = [{ id = "b", sha256 = "4ac2cabcc8d1bc2deb7f60567d9bb8bb7b3bc06aca588c5259889573232228f5", models = ["m"] }]

        [upstreams.primary]"#,
    );
    let cfg = cfg.replace(
        r#"models = { "m" = "p-model" }"#,
        r#"models = { "m" = "p-model", "other" = "p-other" }"#,
    );
    let r = start(&cfg).await;
    let v = sdk(&r, "keys").await;
    assert_eq!(v["wrong_key"]["raised"], "AuthenticationError", "{v}");
    assert_eq!(v["wrong_key"]["status"], 401, "{v}");
    assert_eq!(v["other_model"]["raised"], "PermissionDeniedError", "{v}");
    assert_eq!(v["other_model"]["status"], 403, "{v}");
    assert_eq!(v["ok"], "stop", "{v}");
}
