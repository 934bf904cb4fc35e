//! `/metrics` read by a Prometheus text parser: every line parses, the
//! per-request figures are there (counters by model, provider and status;
//! latency and first-token histograms with their buckets; tokens), and
//! they move as requests are made. The Grafana dashboard in the repo asks
//! only for names `/metrics` has.

mod common;

use common::Running;

const CONFIG: &str = r#"
[gateway]
listen = "127.0.0.1:0"

[upstreams.primary]
models = { "m" = "p-model" }
simulated = { latency_ms = 5, tokens = 3, token_interval_ms = 1 }

[palisade.router]
order = ["primary"]
"#;

/// A provider down before one that answers: every request fails over.
const FAILOVER: &str = r#"
[gateway]
listen = "127.0.0.1:0"

[upstreams.primary]
models = { "m" = "p-model" }
simulated = { latency_ms = 2, down = true }

[upstreams.secondary]
models = { "m" = "s-model" }
simulated = { latency_ms = 2 }

[palisade.router]
order = ["primary", "secondary"]

[palisade.defaults.retry]
enabled = false
"#;

async fn read_metrics(gw: &Running) -> (String, prometheus_parse::Scrape) {
    let text = gw.text("/metrics").await;
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("/metrics parses");
    (text, scrape)
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_parse_and_move_with_requests() {
    let gw = Running::start(CONFIG).await;
    assert_eq!(gw.chat().await.0, 200);
    let stream = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(gw.send("POST", "/v1/chat/completions", stream).await.0, 200);
    let (status, _, _) = gw
        .send(
            "POST",
            "/v1/chat/completions",
            r#"{"model":"nope","messages":[]}"#,
        )
        .await;
    assert_eq!(status, 404);

    let (text, scrape) = read_metrics(&gw).await;
    let ok = [("model", "m"), ("provider", "primary"), ("status", "2xx")];
    assert_eq!(
        value(&scrape, "palisade_gateway_answers_total", &ok),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(
            &scrape,
            "palisade_gateway_answers_total",
            &[("provider", "-"), ("status", "4xx")]
        ),
        Some(1.0)
    );
    // Histograms, with buckets from 10 ms to 5 minutes.
    for name in [
        "palisade_gateway_request_duration_seconds",
        "palisade_gateway_time_to_first_token_seconds",
    ] {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .unwrap_or_else(|| panic!("no {name}: {text}"));
        let prometheus_parse::Value::Histogram(buckets) = &sample.value else {
            panic!("{name} is not a histogram");
        };
        assert!(buckets.len() >= 14, "{name}: {buckets:?}");
        assert!(buckets.iter().any(|b| b.less_than == 300.0));
        assert_eq!(buckets.last().unwrap().count, 1.0, "{name}: one request");
    }
    let tokens = [
        ("provider", "primary"),
        ("model", "m"),
        ("kind", "completion"),
    ];
    // The whole answer's three, and the stream's (the gateway asked for
    // its usage chunk, though its caller did not).
    assert_eq!(
        value(&scrape, "palisade_gateway_tokens_total", &tokens),
        Some(6.0),
        "{text}"
    );
    // The resilience figures are on the same page.
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric.starts_with("palisade_breaker")),
        "{text}"
    );

    // And they move.
    assert_eq!(gw.chat().await.0, 200);
    let (_, scrape) = read_metrics(&gw).await;
    assert_eq!(
        value(&scrape, "palisade_gateway_answers_total", &ok),
        Some(3.0)
    );
    assert_eq!(
        value(&scrape, "palisade_gateway_tokens_total", &tokens),
        Some(9.0)
    );
    // A stream's usage chunk is counted once the stream has ended (read
    // whole by `send`).
    let with_usage = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, body, _) = gw.send("POST", "/v1/chat/completions", with_usage).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"usage\":{"), "{body}");
    let (_, scrape) = read_metrics(&gw).await;
    assert_eq!(
        value(&scrape, "palisade_gateway_tokens_total", &tokens),
        Some(12.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_asks_only_for_names_the_gateway_serves() {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../dashboards/palisade-gateway.json"))
            .expect("the dashboard is JSON");
    let mut asked = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("palisade_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                asked.insert(name);
            }
        }
    }
    assert!(asked.len() >= 8, "{asked:?}");
    // The embedded default (every layer on), after a whole answer and a
    // stream.
    let cfg = palisade_gateway::config::DEFAULT_CONFIG
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"");
    let gw = Running::start(&cfg).await;
    let chat = |stream: bool| {
        format!(
            r#"{{"model":"fast","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
        )
    };
    assert_eq!(
        gw.send("POST", "/v1/chat/completions", &chat(false))
            .await
            .0,
        200
    );
    assert_eq!(
        gw.send("POST", "/v1/chat/completions", &chat(true)).await.0,
        200
    );
    let (text, scrape) = read_metrics(&gw).await;
    // And a gateway that failed over (families with no sample yet are not
    // on the page).
    let failing = Running::start(FAILOVER).await;
    assert_eq!(failing.chat().await.0, 200);
    let (failed_text, failed) = read_metrics(&failing).await;
    let served: std::collections::BTreeSet<String> = scrape
        .samples
        .iter()
        .chain(&failed.samples)
        .map(|s| s.metric.clone())
        .chain(text.lines().chain(failed_text.lines()).filter_map(|l| {
            let l = l.strip_prefix("# TYPE ")?;
            l.split(' ').next().map(str::to_owned)
        }))
        .collect();
    for name in &asked {
        let family = name.trim_end_matches("_bucket");
        assert!(
            served.contains(name.as_str()) || served.contains(family),
            "the dashboard asks for {name}, which /metrics does not have"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failovers_are_counted_by_who_answered_and_the_resilience_families_keep_their_types() {
    let gw = Running::start(FAILOVER).await;
    assert_eq!(gw.chat().await.0, 200);
    assert_eq!(gw.chat().await.0, 200);
    let (text, scrape) = read_metrics(&gw).await;
    assert_eq!(
        value(
            &scrape,
            "palisade_gateway_failovers_total",
            &[("provider", "secondary")]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(
            &scrape,
            "palisade_gateway_failovers_total",
            &[("provider", "primary")]
        ),
        None
    );
    // Per-provider gauges and counters, typed as such.
    let typed = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get("provider") == Some("primary"))
            .map(|s| s.value.clone())
            .unwrap_or_else(|| panic!("no {name} for primary: {text}"))
    };
    assert!(matches!(
        typed("palisade_breaker_state"),
        prometheus_parse::Value::Gauge(_)
    ));
    assert!(matches!(
        typed("palisade_breaker_opened_total"),
        prometheus_parse::Value::Counter(_)
    ));
    assert!(text.contains("# TYPE palisade_gateway_requests_total counter"));
    assert_eq!(
        value(&scrape, "palisade_gateway_requests_total", &[]),
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_metrics_serves_is_in_the_readme_s_table() {
    let readme = include_str!("../../../README.md");
    // The embedded default with every optional section on that needs no
    // other process: cache, batching, health checks, outlier ejection.
    let cfg = palisade_gateway::config::DEFAULT_CONFIG
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"")
        .replace("# [cache]\n# max_stale_ms", "[cache]\nmax_stale_ms")
        .replace("# [batch]\n# max_delay_ms", "[batch]\nmax_delay_ms")
        + "\n[palisade.defaults.health_check]\nenabled = true\n\n[palisade.router.outlier]\n";
    assert!(
        cfg.contains("\n[cache]") && cfg.contains("\n[batch]"),
        "{cfg}"
    );
    let gw = Running::start(&cfg).await;
    for stream in [false, true] {
        let body = format!(
            r#"{{"model":"fast","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
        );
        assert_eq!(gw.send("POST", "/v1/chat/completions", &body).await.0, 200);
    }
    let embed = r#"{"model":"fast","input":["a"]}"#;
    assert_eq!(gw.send("POST", "/v1/embeddings", embed).await.0, 200);
    let (text, _) = read_metrics(&gw).await;
    let failing = Running::start(FAILOVER).await;
    assert_eq!(failing.chat().await.0, 200);
    let (failed_text, _) = read_metrics(&failing).await;
    let served: std::collections::BTreeSet<&str> = text
        .lines()
        .chain(failed_text.lines())
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect();
    assert!(served.len() >= 45, "{served:?}");
    let missing: Vec<&&str> = served
        .iter()
        .filter(|name| {
            // prometheus-client names a counter's family without `_total`.
            let row = |n: &str| readme.contains(&format!("| `{n}` |"));
            !row(name) && !row(&format!("{name}_total"))
        })
        .collect();
    assert!(missing.is_empty(), "not in the README's table: {missing:?}");
}
