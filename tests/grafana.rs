//! The Grafana dashboard (`deploy/grafana/switchyard.json`) against real
//! data: its structure has what a provisioning load needs (uid, title,
//! schemaVersion, a datasource variable every panel uses, a PromQL `expr` on
//! every target, only variables it defines), it names only metrics the
//! server exports or the recording rules of `deploy/prometheus` record, and
//! every expression, with its variables substituted, parses and returns at
//! least one series from a real Prometheus scraping a real server that
//! serves a canary, a shadow, failing requests, rate-limited users and
//! shed load.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{digits_request, digits_samples, free_port, root, TestRepo, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

const MISSING: &str = "is missing: run `make setup-test` (installs the Debian package prometheus)";
/// Grafana's own variables the dashboard may use.
const BUILT_IN: &[&str] = &["__rate_interval", "__interval", "__range"];

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

fn dashboard() -> Value {
    let text = std::fs::read_to_string(root().join("deploy/grafana/switchyard.json")).unwrap();
    serde_json::from_str(&text).expect("deploy/grafana/switchyard.json is JSON")
}

/// Every (panel title, expr) of the dashboard.
fn exprs(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap().to_string(),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

/// `$name` and `${name}` references in `text`.
fn variables(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let name: String = rest
            .trim_start_matches('{')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

#[test]
fn the_dashboard_has_what_a_provisioning_load_needs() {
    let d = dashboard();
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty() && u.len() <= 40));
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    let schema = d["schemaVersion"].as_u64().expect("schemaVersion is a number");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(
        d.get("id").is_none_or(Value::is_null),
        "provisioned dashboards carry no id"
    );
    let vars = d["templating"]["list"].as_array().unwrap();
    let names: HashSet<&str> = vars.iter().map(|v| v["name"].as_str().unwrap()).collect();
    for want in ["datasource", "namespace", "job", "model"] {
        assert!(names.contains(want), "variable {want}");
    }
    let ds = vars.iter().find(|v| v["name"] == "datasource").unwrap();
    assert_eq!(
        (ds["type"].as_str(), ds["query"].as_str()),
        (Some("datasource"), Some("prometheus"))
    );
    let uses_ds = |v: &Value| v["type"] == "prometheus" && v["uid"] == "${datasource}";
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert!(uses_ds(&v["datasource"]), "variable {}", v["name"]);
        let query = v["query"]["query"].as_str().unwrap();
        assert!(query.starts_with("label_values("), "{query}");
        for used in variables(query) {
            assert!(names.contains(used.as_str()), "{query} uses ${used}");
        }
    }
    let mut ids = HashSet::new();
    let kinds = ["row", "timeseries", "state-timeline", "stat", "table"];
    for p in d["panels"].as_array().unwrap() {
        let title = p["title"].as_str().unwrap();
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "panel id of {title} is unique"
        );
        assert!(kinds.contains(&p["type"].as_str().unwrap()), "{title}");
        for k in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][k].is_u64(), "{title} gridPos.{k}");
        }
        assert!(p["gridPos"]["x"].as_u64().unwrap() + p["gridPos"]["w"].as_u64().unwrap() <= 24);
        if p["type"] == "row" {
            continue;
        }
        assert!(uses_ds(&p["datasource"]), "{title} uses the datasource variable");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}");
        let refs: HashSet<&str> = targets.iter().map(|t| t["refId"].as_str().unwrap()).collect();
        assert_eq!(refs.len(), targets.len(), "{title}: refIds are unique");
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            assert!(!expr.trim().is_empty(), "{title}");
            for used in variables(expr) {
                assert!(
                    names.contains(used.as_str()) || BUILT_IN.contains(&used.as_str()),
                    "{title}: {expr} uses ${used}"
                );
            }
        }
    }
    // the panels
    let titles: Vec<String> = exprs(&d).into_iter().map(|(t, _)| t.to_lowercase()).collect();
    for want in [
        "request rate by route",
        "error ratio",
        "p99",
        "queue wait",
        "batch size",
        "queue depth",
        "in flight",
        "shed",
        "rate limited",
        "circuit",
        "rollout phase",
        "traffic weight",
        "shadow agreement",
    ] {
        assert!(titles.iter().any(|t| t.contains(want)), "no panel for {want}");
    }
}

#[test]
fn the_dashboard_names_only_exported_metrics_and_recorded_rules() {
    let names = std::fs::read_to_string(root().join("src/telemetry/names.rs")).unwrap();
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/recording_rules.yml")).unwrap();
    let mut known: HashSet<String> = HashSet::new();
    for line in names.lines() {
        if let Some((_, rest)) = line.split_once(": &str = \"") {
            let metric = rest.trim_end_matches("\";");
            known.insert(metric.to_string());
            for suffix in ["_bucket", "_sum", "_count"] {
                known.insert(format!("{metric}{suffix}"));
            }
        }
    }
    for line in rules.lines() {
        if let Some(rule) = line.trim().strip_prefix("- record: ") {
            known.insert(rule.to_string());
        }
    }
    assert!(known.len() > 20, "{known:?}");
    for (title, expr) in exprs(&dashboard()) {
        // metric names: identifiers with a colon or the switchyard_ prefix
        let mut used = Vec::new();
        let mut word = String::new();
        for c in expr.chars().chain([' ']) {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                word.push(c);
            } else {
                if word.starts_with("switchyard_") || word.contains(':') {
                    used.push(std::mem::take(&mut word));
                }
                word.clear();
            }
        }
        assert!(!used.is_empty(), "{title}: {expr}");
        for m in used {
            assert!(
                known.contains(&m),
                "{title}: {m} is neither exported nor recorded"
            );
        }
    }
}

/// Requests that make every metric of the dashboard exist: a canary on
/// digits, a shadow (and failures) on `faulty`, rate-limited users and a
/// full queue on mlp_wide.
async fn traffic(s: &TestServer, rounds: usize) {
    let rows = digits_samples();
    let send = |path: String, user: String, row: Vec<f64>| {
        let req = s
            .client
            .post(s.url(&path))
            .header("x-user-id", user)
            .json(&digits_request(&[row]));
        async move { req.send().await.unwrap().status().as_u16() }
    };
    for i in 0..rounds {
        let row = rows[i % rows.len()].0.clone();
        assert_eq!(
            send("/v2/models/digits/infer".into(), format!("u{i}"), row.clone()).await,
            200
        );
        // one in five fails inside ONNX Runtime (a pixel above 100)
        let faulty = if i % 5 == 0 { vec![200.0; 64] } else { row };
        send("/v2/models/faulty/infer".into(), format!("u{i}"), faulty).await;
    }
}

/// Bursts at mlp_wide (queue of one, a budget of 60 requests a minute that
/// admits a whole burst): some are shed as queue_full, then a greedy user
/// runs into the rate limit.
async fn overload(s: &TestServer) {
    let row = digits_samples()[0].0.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let burst: Vec<_> = (0..24)
            .map(|i| {
                s.client
                    .post(s.url("/v2/models/mlp_wide/infer"))
                    .header("x-user-id", format!("burst-{i}"))
                    .json(&digits_request(std::slice::from_ref(&row)))
                    .send()
            })
            .collect();
        let statuses: Vec<u16> = futures::future::join_all(burst)
            .await
            .into_iter()
            .map(|r| r.unwrap().status().as_u16())
            .collect();
        if statuses.contains(&503) {
            break;
        }
        assert!(Instant::now() < deadline, "no request was shed: {statuses:?}");
    }
    // the user header is not trusted here, so every request counts against
    // the client's address: the bursts took part of its budget, and the
    // greedy user spends the rest
    let mut limited = false;
    for _ in 0..200 {
        let resp = s
            .client
            .post(s.url("/v2/models/mlp_wide/infer"))
            .header("x-user-id", "greedy")
            .json(&digits_request(std::slice::from_ref(&row)))
            .send()
            .await
            .unwrap();
        if resp.status() == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "the greedy user was never rate limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_a_live_server() {
    let repo = TestRepo::bundled(&["digits", "mlp_wide"]);
    repo.config(
        "mlp_wide",
        // a budget that admits a whole burst: the queue of one sheds it
        "[execution]\ninstances = 1\nmax_batch_size = 0\nmax_queue = 1\n\n[limits]\nrate_limit = \"60/1m\"\n",
    );
    repo.add_fixture("digits_faulty", "faulty");
    repo.add_version("models/digits/1", "faulty", 2);
    repo.config("faulty", "[versions]\npolicy = \"all\"\n");
    let s = TestServer::start(repo.path()).await;
    s.set_policy(
        "faulty",
        json!({"stable": 1, "shadow": {"version": 2, "rate": 1.0}}),
    )
    .await;
    let spec = json!({"strategy": "canary", "candidate": 2, "skip_validation": true,
        "steps": [{"weight": "50%", "bake": "1h"}, {"weight": "100%"}],
        "analysis": {"interval": "1s", "min_requests": 5, "max_p95_ratio": 100.0, "progress_deadline": "1h",
                     "max_error_rate_delta": 1.0}});
    let (st, body) = s
        .admin(Method::POST, "/admin/v1/models/digits/rollouts", Some(spec))
        .await;
    assert_eq!(st, 200, "{body}");

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: switchyard\n    static_configs:\n      - targets: [\"{}\"]\n",
        root().join("deploy/prometheus/recording_rules.yml").display(),
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

    overload(&s).await;
    let d = dashboard();
    let mut pending: Vec<(String, String)> = exprs(&d);
    // the variables' own queries: their metric selector must find series
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            let inner = q.trim_start_matches("label_values(").rsplit_once(',').unwrap().0;
            pending.push((format!("variable {}", v["name"]), inner.to_string()));
        }
    }
    let substitute = |e: &str| {
        e.replace("$__rate_interval", "1m")
            .replace("$namespace", ".*")
            .replace("$job", "switchyard")
            .replace("$model", ".*")
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut round = 0;
    while !pending.is_empty() {
        traffic(&s, 20).await;
        round += 1;
        let mut still = Vec::new();
        for (title, expr) in pending {
            let query = substitute(&expr);
            assert!(!query.contains('$'), "{title}: unsubstituted variable in {query}");
            let resp = s
                .client
                .get(format!("http://127.0.0.1:{port}/api/v1/query"))
                .query(&[("query", query.as_str())])
                .send()
                .await;
            let Ok(resp) = resp else {
                still.push((title, expr)); // Prometheus not up yet
                continue;
            };
            let v: Value = resp.json().await.unwrap();
            if v["status"] == "error" && v["errorType"] == "bad_data" {
                panic!("{title}: {query} does not parse: {}", v["error"]);
            }
            let n = v["data"]["result"].as_array().map_or(0, Vec::len);
            if n == 0 {
                still.push((title, expr));
            }
        }
        pending = still;
        assert!(
            Instant::now() < deadline,
            "after {round} rounds these queries still return no series: {pending:#?}"
        );
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    eprintln!("every dashboard query returned data after {round} rounds of traffic");
    s.stop().await;
}
