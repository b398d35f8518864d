//! `/metrics` on the admin listener: valid Prometheus text (promtool), and
//! counters that rise by exactly the requests sent, per version and route.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use common::{digits_request, digits_samples, TestRepo, TestServer};
use serde_json::json;

/// One sample of the exposition: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a value");
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').expect("label=value");
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            Sample {
                name: name.to_string(),
                labels,
                value: value.parse().expect("a number"),
            }
        })
        .collect()
}

/// The value of the series `name` whose labels include `want` (0 if none).
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_count_requests_per_version_and_route() {
    // digits 1 and 2 served; versionless requests go to the stable label (1)
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start_with(repo.path(), |c| c.admin_token = Some("s3cret".into())).await;
    let row = digits_samples()[0].0.clone();
    let before = parse(&s.metrics().await);
    // the panic counters exist at 0 from the start: a server's first panic
    // then counts in an increase()
    for listener in ["data", "admin", "grpc"] {
        let zero = before.iter().any(|x| {
            x.name == "switchyard_handler_panics_total"
                && x.labels.get("listener").map(String::as_str) == Some(listener)
        });
        assert!(
            zero,
            "no switchyard_handler_panics_total{{listener={listener:?}}}"
        );
    }

    let body = digits_request(std::slice::from_ref(&row));
    for _ in 0..7 {
        let (st, b) = s.post("/v2/models/digits/infer", &body).await;
        assert_eq!(st, 200, "{b}");
    }
    for _ in 0..5 {
        let (st, b) = s.post("/v2/models/digits/versions/2/infer", &body).await;
        assert_eq!(st, 200, "{b}");
    }
    for _ in 0..3 {
        let (st, b) = s
            .post(
                "/v1/models/digits/labels/stable:predict",
                &json!({"instances": [row.clone()]}),
            )
            .await;
        assert_eq!(st, 200, "{b}");
    }
    // a client error reaches version 2 and counts as 4xx
    let (st, _) = s
        .post(
            "/v2/models/digits/versions/2/infer",
            &json!({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}),
        )
        .await;
    assert_eq!(st, 400);
    // an unknown model reaches no version and makes no series
    let (st, _) = s.post("/v2/models/nope/infer", &body).await;
    assert_eq!(st, 404);

    let text = s.metrics().await;
    let after = parse(&text);
    let delta = |labels: &[(&str, &str)]| {
        value(&after, "switchyard_requests_total", labels)
            - value(&before, "switchyard_requests_total", labels)
    };
    let m = ("model", "digits");
    assert_eq!(
        delta(&[
            m,
            ("version", "1"),
            ("route", "stable"),
            ("protocol", "v2"),
            ("status", "2xx")
        ]),
        7.0
    );
    assert_eq!(
        delta(&[
            m,
            ("version", "2"),
            ("route", "explicit"),
            ("protocol", "v2"),
            ("status", "2xx")
        ]),
        5.0
    );
    assert_eq!(
        delta(&[
            m,
            ("version", "1"),
            ("route", "label"),
            ("protocol", "v1"),
            ("status", "2xx")
        ]),
        3.0
    );
    assert_eq!(delta(&[m, ("version", "2"), ("status", "4xx")]), 1.0);
    assert_eq!(delta(&[m]), 16.0);
    assert!(
        !text.contains("\"nope\""),
        "unknown models must not become labels"
    );

    // histograms have buckets and a count per version
    let count = |name: &str, v: &str| {
        value(&after, name, &[m, ("version", v)]) - value(&before, name, &[m, ("version", v)])
    };
    assert_eq!(count("switchyard_request_duration_seconds_count", "1"), 10.0);
    assert_eq!(count("switchyard_request_duration_seconds_count", "2"), 6.0);
    assert!(text.contains("switchyard_request_duration_seconds_bucket{"));
    assert!(count("switchyard_inference_duration_seconds_count", "1") >= 1.0);
    assert!(count("switchyard_queue_wait_seconds_count", "2") >= 5.0);
    assert!(count("switchyard_batch_size_rows_count", "2") >= 1.0);
    // snapshot gauges
    assert_eq!(
        value(&after, "switchyard_version_ready", &[m, ("version", "1")]),
        1.0
    );
    assert_eq!(
        value(&after, "switchyard_version_ready", &[m, ("version", "2")]),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "switchyard_traffic_weight_basis_points",
            &[m, ("version", "1")]
        ),
        10000.0
    );
    assert_eq!(
        value(&after, "switchyard_circuit_state", &[m, ("version", "2")]),
        0.0
    );
    assert!(text.contains("switchyard_queue_depth_requests{"));

    // a canary policy shows in the weight gauge at the next scrape
    s.set_policy(
        "digits",
        json!({"stable": 1, "candidate": {"version": 2, "weight": "25%"}}),
    )
    .await;
    let after = parse(&s.metrics().await);
    assert_eq!(
        value(
            &after,
            "switchyard_traffic_weight_basis_points",
            &[m, ("version", "2")]
        ),
        2500.0
    );
    assert_eq!(
        value(
            &after,
            "switchyard_traffic_weight_basis_points",
            &[m, ("version", "1")]
        ),
        7500.0
    );

    // promtool agrees it is valid, lint-clean exposition
    let text = s.metrics().await;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is missing: run `make setup-test` (installs the Debian package prometheus)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_carry_a_request_id() {
    // its own model name: the metrics registry is shared by the tests of this file
    let repo = TestRepo::empty();
    repo.add_version("models/digits/1", "ids", 1);
    let s = TestServer::start(repo.path()).await;
    let body = digits_request(&[digits_samples()[0].0.clone()]);
    let resp = s
        .client
        .post(s.url("/v2/models/ids/infer"))
        .header("x-request-id", "req-42")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "req-42");
    let resp = s
        .client
        .post(s.url("/v2/models/ids/infer"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let generated = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 32, "{generated}");
    s.stop().await;
}
