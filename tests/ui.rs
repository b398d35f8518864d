//! The live page's HTTP side against a real server: its files load without
//! the token and name nothing outside the server, its data and event stream
//! need the token, the stream pushes the history every second and the
//! overview when something changes, a rollout's analysis numbers sit next to
//! their thresholds, viewers are capped, and shutdown ends the stream.

mod common;

use std::time::{Duration, Instant};

use common::{digits_request, digits_samples, TestRepo, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

const TOKEN: &str = "ui-test-token";

/// Reads server-sent events from a streaming response.
struct Events {
    resp: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(s: &TestServer, token: Option<&str>) -> Events {
        let mut req = s.client.get(format!("{}/admin/v1/overview/stream", s.admin));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Events {
            resp,
            buffer: String::new(),
        }
    }

    /// The next (event name, JSON data); `None` when the stream ended. Panics
    /// when nothing comes within `within`.
    async fn next(&mut self, within: Duration) -> Option<(String, Value)> {
        self.try_next(within)
            .await
            .unwrap_or_else(|| panic!("no event within {within:?}"))
    }

    /// Like `next`, but `None` when nothing came within `within`.
    async fn try_next(&mut self, within: Duration) -> Option<Option<(String, Value)>> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(cut) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..cut + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(n) = line.strip_prefix("event:") {
                        name = n.trim().to_string();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // keep-alive comment
                }
                return Some(Some((name, serde_json::from_str(&data).unwrap())));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(chunk) = tokio::time::timeout(left, self.resp.chunk()).await else {
                return None;
            };
            match chunk.unwrap() {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => return Some(None),
            }
        }
    }

    /// Waits (up to `within`) for an event named `name` whose data passes `f`.
    async fn until(&mut self, name: &str, within: Duration, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (n, data) = self
                .try_next(left)
                .await
                .unwrap_or_else(|| panic!("no matching '{name}' event within {within:?}"))
                .expect("the stream ended");
            if n == name && f(&data) {
                return data;
            }
        }
    }
}

fn model<'a>(overview: &'a Value, name: &str) -> &'a Value {
    overview["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("model {name} in {overview}"))
}

async fn send_digits(s: &TestServer, n: usize) {
    let rows = digits_samples();
    for i in 0..n {
        let body = digits_request(&[rows[i % rows.len()].0.clone()]);
        let resp = s
            .client
            .post(s.url("/v2/models/digits/infer"))
            .header("x-user-id", format!("user-{i}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_loads_without_the_token_and_its_data_needs_it() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start_with(repo.path(), |c| c.admin_token = Some(TOKEN.into())).await;
    let get = |path: &str, token: Option<&str>| {
        let mut req = s.client.get(format!("{}{path}", s.admin));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let mut files = Vec::new();
    for (path, kind) in [
        ("/", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/charts.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let resp = get(path, None).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers();
        assert!(h["content-type"].to_str().unwrap().starts_with(kind), "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        files.push((path, resp.text().await.unwrap()));
    }
    // self-contained: nothing is loaded from anywhere but this server
    for (path, text) in &files {
        let outside = text
            .match_indices("http")
            .map(|(i, _)| &text[i..(i + 40).min(text.len())])
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .filter(|u| !u.starts_with("http://www.w3.org/2000/svg"))
            .collect::<Vec<_>>();
        assert!(outside.is_empty(), "{path} names {outside:?}");
        assert!(!text.contains("@import") && !text.contains("url("), "{path}");
    }
    let index = &files[0].1;
    for attr in ["src=\"", "href=\""] {
        for (i, _) in index.match_indices(attr) {
            let target = &index[i + attr.len()..];
            assert!(target.starts_with("/ui/"), "index.html loads {}", &target[..20]);
        }
    }
    // the data needs the token, and says so in the error shape
    for path in ["/admin/v1/overview", "/admin/v1/overview/stream"] {
        for token in [None, Some("wrong")] {
            let resp = get(path, token).await.unwrap();
            assert_eq!(resp.status(), 401, "{path} {token:?}");
            let body: Value = resp.json().await.unwrap();
            assert!(body["error"].as_str().unwrap().contains("token"), "{body}");
        }
    }
    let resp = get("/admin/v1/overview", Some(TOKEN)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let overview: Value = resp.json().await.unwrap();
    assert_eq!(overview["server"]["token_required"], true);
    let digits = model(&overview, "digits");
    let states: Vec<_> = digits["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].as_u64().unwrap(), v["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [(1, "READY"), (2, "READY")]);
    assert_eq!(
        digits["split"]["stable"],
        json!({"version": 1, "weight_bp": 10000, "route": "stable"})
    );
    assert_eq!(digits["versions"][0]["share_bp"], 10000);
    assert_eq!(digits["versions"][1]["breaker"], "closed");
    assert_eq!(digits["rollout"], Value::Null);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_pushes_history_every_second_and_the_overview_on_change() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start(repo.path()).await;
    let mut events = Events::open(&s, None).await;
    let (name, _) = events.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(name, "history", "the history comes first");
    let first = events.until("overview", Duration::from_secs(10), |_| true).await;
    assert_eq!(model(&first, "digits")["split"]["candidate"], Value::Null);

    // traffic shows up in the next seconds' samples of version 1
    send_digits(&s, 30).await;
    let history = events
        .until("history", Duration::from_secs(15), |h| {
            h["series"].as_array().unwrap().iter().any(|x| {
                x["model"] == "digits"
                    && x["version"] == 1
                    && x["samples"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|sample| sample[1].as_f64().unwrap() > 0.0)
            })
        })
        .await;
    let series = history["series"].as_array().unwrap();
    let v1 = series.iter().find(|x| x["version"] == 1).unwrap();
    let busy = v1["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x[1].as_f64().unwrap() > 0.0)
        .unwrap();
    assert_eq!(busy[2], 0.0, "no errors: {busy}");
    assert!(busy[4].as_f64().unwrap() > 0.0, "a p95 latency: {busy}");

    // a policy change is pushed within two seconds
    let changed = Instant::now();
    s.set_policy(
        "digits",
        json!({"stable": 1, "candidate": {"version": 2, "weight": "25%"}, "sticky": true}),
    )
    .await;
    let pushed = events
        .until("overview", Duration::from_secs(2), |o| {
            !model(o, "digits")["split"]["candidate"].is_null()
        })
        .await;
    let digits = model(&pushed, "digits");
    assert_eq!(
        digits["split"]["candidate"],
        json!({"version": 2, "weight_bp": 2500, "route": "sticky"})
    );
    assert_eq!(digits["versions"][1]["share_bp"], 2500);
    eprintln!("policy change pushed after {:?}", changed.elapsed());

    // shutdown ends the stream (a drain does not wait for viewers)
    let stopping = tokio::spawn(s.stop());
    let deadline = Duration::from_secs(10);
    loop {
        match events.next(deadline).await {
            None => break,
            Some((name, _)) => assert!(name == "history" || name == "overview"),
        }
    }
    tokio::time::timeout(deadline, stopping).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_shows_its_numbers_next_to_the_thresholds_and_its_audit_log() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start(repo.path()).await;
    let spec = json!({"strategy": "canary", "candidate": 2,
        "steps": [{"weight": "50%", "bake": "1h"}, {"weight": "100%"}],
        "analysis": {"interval": "1s", "min_requests": 5, "max_p95_ratio": 5.0, "progress_deadline": "10m"}});
    let (st, body) = s
        .admin(Method::POST, "/admin/v1/models/digits/rollouts", Some(spec))
        .await;
    assert_eq!(st, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let rollout = loop {
        send_digits(&s, 20).await;
        let (st, overview) = s.admin(Method::GET, "/admin/v1/overview", None).await;
        assert_eq!(st, 200);
        let r = model(&overview, "digits")["rollout"].clone();
        if !r["last_analysis"]["measures"].is_null() && r["phase"] == "progressing" {
            break overview;
        }
        assert!(Instant::now() < deadline, "no analysis with measures: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let digits = model(&rollout, "digits");
    let r = &digits["rollout"];
    assert_eq!(
        r["stages"][0],
        json!({"kind": "weight", "weight_bp": 5000, "bake_secs": 3600.0})
    );
    assert_eq!(r["stages"].as_array().unwrap().len(), 2);
    let bake_left = r["bake_ends_at"].as_f64().unwrap() - r["step_started_at"].as_f64().unwrap();
    assert_eq!(bake_left, 3600.0);
    assert_eq!(r["thresholds"]["min_requests"], 5);
    assert_eq!(r["thresholds"]["max_p95_ratio"], 5.0);
    let m = &r["last_analysis"]["measures"];
    assert_eq!(m["requests"]["min"], 5);
    assert!(m["requests"]["stable"].as_u64().unwrap() > 0, "{m}");
    assert!(m["requests"]["candidate"].as_u64().unwrap() > 0, "{m}");
    // the error limit is max(stable × ratio, stable + delta): 0.005 at no errors
    assert_eq!(m["error_rate"]["stable"], 0.0);
    assert_eq!(m["error_rate"]["limit"], 0.005);
    let p95 = &m["p95_ms"];
    let stable_p95 = p95["stable"].as_f64().unwrap();
    let expected = (stable_p95 * 5.0).max(stable_p95 + 1.0);
    assert!((p95["limit"].as_f64().unwrap() - expected).abs() < 1e-9, "{p95}");
    assert_eq!(m["max_p95_ratio"], 5.0);
    let events: Vec<&str> = digits["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["decision"].as_str().unwrap())
        .collect();
    assert_eq!(events.first(), Some(&"started: 1 → 2"), "{events:?}");
    assert!(events.contains(&"validation passed"), "{events:?}");
    assert_eq!(digits["split"]["candidate"]["weight_bp"], 5000);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_beyond_the_cap_are_refused() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start(repo.path()).await;
    let mut open = Vec::new();
    for _ in 0..switchyard::serving::history::MAX_VIEWERS {
        open.push(Events::open(&s, None).await);
    }
    let resp = s
        .client
        .get(format!("{}/admin/v1/overview/stream", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("viewers"), "{body}");
    // a viewer that leaves frees its place
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = s
            .client
            .get(format!("{}/admin/v1/overview/stream", s.admin))
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the freed place was not reused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(open);
    s.stop().await;
}
