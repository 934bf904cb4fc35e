//! `[batch]` over real sockets: concurrent `/v1/embeddings` requests share
//! upstream calls, and each caller gets its own vectors, the same as the
//! provider gives for its texts alone.

mod common;

use common::Running;
use palisade_gateway::GatewayConfig;

fn config(batch: &str) -> String {
    format!(
        r#"
[gateway]
listen = "127.0.0.1:0"

[upstreams.primary]
models = {{ "m" = "p-model", "e" = "p-embed" }}
simulated = {{ latency_ms = 5, tokens = 2, token_interval_ms = 1 }}

[palisade.router]
order = ["primary"]

{batch}
"#
    )
}

fn embeddings(texts: &[String]) -> String {
    serde_json::json!({"model": "e", "input": texts}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_embeddings_share_calls_and_each_caller_gets_its_own_vectors() {
    let gw = Running::start(&config("[batch]\nmax_delay_ms = 50\nmax_items = 64")).await;
    let callers: Vec<_> = (0..200)
        .map(|i| {
            let (client, base) = (gw.client.clone(), gw.base.clone());
            // Every tenth caller sends two texts.
            let texts: Vec<String> = (0..1 + usize::from(i % 10 == 0))
                .map(|k| format!("text {i}.{k}"))
                .collect();
            tokio::spawn(async move {
                let req = http::Request::post(format!("{base}/v1/embeddings"))
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(embeddings(
                        &texts,
                    ))))
                    .unwrap();
                let res = client.request(req).await.unwrap();
                assert_eq!(res.status(), 200);
                let body = http_body_util::BodyExt::collect(res.into_body())
                    .await
                    .unwrap()
                    .to_bytes();
                let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
                (texts, answer)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for c in callers {
        answers.push(c.await.unwrap());
    }
    let upstream = gw.sims["primary"].requests();
    assert!(
        upstream <= 12,
        "220 inputs from 200 callers took {upstream} upstream calls"
    );
    let health = gw.json("/health").await;
    assert_eq!(health["batch"]["requests"], 200, "{health}");
    assert!(health["batch"]["largest"].as_u64().unwrap() > 1, "{health}");

    // Each caller's vectors are the ones its texts get alone, in its order.
    let direct = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    for (texts, answer) in answers.iter().step_by(7) {
        let data = answer["data"].as_array().unwrap();
        assert_eq!(data.len(), texts.len(), "{answer}");
        for (i, text) in texts.iter().enumerate() {
            assert_eq!(data[i]["index"], i);
            let req =
                http::Request::post(format!("{}/v1/embeddings", gw.sims["primary"].base_url()))
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(
                        serde_json::json!({"model": "p-embed", "input": text}).to_string(),
                    )))
                    .unwrap();
            let res = direct.request(req).await.unwrap();
            let body = http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap()
                .to_bytes();
            let alone: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                data[i]["embedding"], alone["data"][0]["embedding"],
                "{text}"
            );
        }
    }
    let metrics = gw.text("/metrics").await;
    assert!(
        metrics.contains("palisade_batch_requests_total 200"),
        "{metrics}"
    );
    // Chat completions are not batched.
    assert_eq!(gw.chat().await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_reaches_every_caller_with_the_gateways_error() {
    let gw = Running::start(&config("[batch]\nmax_delay_ms = 30")).await;
    gw.sims["primary"].set_faults(|f| f.down = true);
    let callers: Vec<_> = (0..5)
        .map(|i| {
            let (client, base) = (gw.client.clone(), gw.base.clone());
            tokio::spawn(async move {
                let req = http::Request::post(format!("{base}/v1/embeddings"))
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(embeddings(
                        &[format!("t{i}")],
                    ))))
                    .unwrap();
                let res = client.request(req).await.unwrap();
                res.status().as_u16()
            })
        })
        .collect();
    for c in callers {
        let status = c.await.unwrap();
        assert!(status == 503 || status == 502, "{status}");
    }
}

#[test]
fn a_bad_batch_section_is_refused_naming_the_field() {
    let err = GatewayConfig::from_toml(&config("[batch]\nmax_items = 0"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("batch.max_items"), "{err}");
}
