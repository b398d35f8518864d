//! A real Prometheus (the Debian binary) scrapes a running switchyard and
//! answers PromQL over its HTTP API; the deploy/prometheus assets pass
//! promtool's config, rules and rule unit-test checks.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{digits_request, digits_samples, free_port, root, TestRepo, TestServer};
use serde_json::Value;

const MISSING: &str = "is missing: run `make setup-test` (installs the Debian package prometheus)";

/// Stops a child by its PID (SIGTERM, then waits).
struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

#[test]
fn deploy_assets_pass_promtool() {
    let out = Command::new("bash")
        .arg(root().join("deploy/prometheus/check.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deploy/prometheus/check.sh failed (promtool {MISSING}?):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_switchyard_and_sees_per_version_counts() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start(repo.path()).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: switchyard\n    static_configs:\n      - targets: [\"{}\"]\n",
        s.admin.trim_start_matches("http://")
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("prometheus {MISSING} ({e})"));
    let _prometheus = Stop(child);

    let query = |q: &'static str| {
        let client = s.client.clone();
        async move {
            let resp = client
                .get(format!("http://127.0.0.1:{port}/api/v1/query"))
                .query(&[("query", q)])
                .send()
                .await
                .ok()?;
            let v: Value = resp.json().await.ok()?;
            let result = v["data"]["result"].as_array()?.clone();
            Some(result)
        }
    };
    let value_of = |result: &[Value], version: &str| {
        result
            .iter()
            .find(|r| r["metric"]["version"] == version)
            .and_then(|r| r["value"][1].as_str()?.parse::<f64>().ok())
    };
    let row = digits_samples()[0].0.clone();
    let body = digits_request(&[row]);
    // one request per version first: a series' first sample has no rate
    assert_eq!(s.post("/v2/models/digits/versions/2/infer", &body).await.0, 200);
    assert_eq!(s.post("/v2/models/digits/infer", &body).await.0, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let counts = query("sum by (version) (switchyard_requests_total{model=\"digits\"})").await;
        if counts.is_some_and(|c| value_of(&c, "1") == Some(1.0) && value_of(&c, "2") == Some(1.0)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape switchyard within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for _ in 0..11 {
        assert_eq!(s.post("/v2/models/digits/versions/2/infer", &body).await.0, 200);
    }
    for _ in 0..4 {
        assert_eq!(s.post("/v2/models/digits/infer", &body).await.0, 200);
    }
    loop {
        let counts = query("sum by (version) (switchyard_requests_total{model=\"digits\"})").await;
        let rates =
            query("sum by (version) (rate(switchyard_requests_total{model=\"digits\"}[1m])) > 0").await;
        if let (Some(counts), Some(rates)) = (counts, rates) {
            if value_of(&counts, "2") == Some(12.0) && value_of(&counts, "1") == Some(5.0) && rates.len() == 2
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus did not see the requests within 60 s: counts {counts:?}, rates {rates:?}"
            );
        } else {
            assert!(Instant::now() < deadline, "Prometheus did not answer within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    s.stop().await;
}
