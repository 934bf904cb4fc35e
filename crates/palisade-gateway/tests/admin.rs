//! `POST /admin/reload` over real loopback sockets: the config file read
//! again and applied while serving, a bad file refused with its problems
//! (the running config keeps serving; a new upstream's stored responses
//! read back from it), the admin key required when there
//! is one, and a gateway on its embedded config saying there is no file.

mod common;

use common::Running;

const V1: &str = r#"
[gateway]
listen = "127.0.0.1:0"

[upstreams.primary]
models = { "m" = "p-model" }
simulated = { latency_ms = 1, tokens = 2, token_interval_ms = 1 }
"#;

fn file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("admin");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn models(v: &serde_json::Value) -> Vec<String> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_endpoint_reloads_the_config_file_and_refuses_a_bad_one() {
    let path = file("gateway.toml", V1);
    let p = path.clone();
    let gw = Running::start_with(V1, move |g| g.reload_from(p)).await;
    assert_eq!(models(&gw.json("/v1/models").await), ["m"]);

    // A second model and a second upstream.
    let v2 = format!(
        "{V1}\n[upstreams.secondary]\nmodels = {{ \"m\" = \"s-model\", \"n\" = \"s-other\" }}\nsimulated = {{ latency_ms = 1 }}\n"
    );
    std::fs::write(&path, &v2).unwrap();
    let (status, body, _) = gw.send("POST", "/admin/reload", "").await;
    assert_eq!(status, 200, "{body}");
    let done: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(done["reloaded"], true);
    assert_eq!(done["kept"], serde_json::json!(["primary"]));
    assert_eq!(done["added"], serde_json::json!(["secondary"]));
    assert_eq!(models(&gw.json("/v1/models").await), ["m", "n"]);
    // A response the new upstream stored is read back from it.
    let (status, body, _) = gw
        .post_to("/v1/responses", r#"{"model":"n","input":"hi"}"#, &[])
        .await;
    assert_eq!(status, 200, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body, headers) = gw.send("GET", &format!("/v1/responses/{id}"), "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-palisade-provider"], "secondary");

    // A file with a problem: refused, named, and v2 keeps serving.
    std::fs::write(
        &path,
        v2.replace(
            "latency_ms = 1 }",
            "latency_ms = 1 }\n[palisade.defaults.breaker]\nfailure_rate = 7\n",
        ),
    )
    .unwrap();
    let (status, body, _) = gw.send("POST", "/admin/reload", "").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("breaker.failure_rate"), "{body}");
    assert_eq!(models(&gw.json("/v1/models").await), ["m", "n"]);
    assert_eq!(gw.chat().await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_needs_the_admin_key_and_a_file() {
    // No file given: nothing to reload.
    let gw = Running::start(V1).await;
    let (status, body, _) = gw.send("POST", "/admin/reload", "").await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("no file to reload"), "{body}");

    // With an admin key (by its SHA-256: here of "test"), a call without
    // it is refused.
    let with_key = format!(
        "{V1}\n[gateway.auth]\nadmin_key_sha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n"
    );
    let gw = Running::start(&with_key).await;
    let (status, _, _) = gw.send("POST", "/admin/reload", "").await;
    assert_eq!(status, 401);
}
