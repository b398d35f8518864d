//! The live page in a real browser: headless Chromium (Debian `chromium`
//! and `chromium-driver`, installed by `make setup-test`) driven over
//! WebDriver against a real server with an admin token. The page asks for
//! the token, refuses a wrong one, shows the models and versions, shows a
//! canary started through the admin API within 2 s without a reload, pauses
//! it with the token (checked through the admin API), changes nothing with
//! a wrong token, asks before aborting, says when the connection is lost, and
//! logs no console errors. A screenshot taken mid-rollout is saved under
//! `target/ui/`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::Method as HttpMethod;
use common::{digits_request, digits_samples, free_port, root, TestRepo, TestServer};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::Method;
use serde_json::{json, Value};

const TOKEN: &str = "browser-test-token";
const MISSING: &str = "run `make setup-test` (installs the Debian packages chromium and chromium-driver)";

/// chromedriver on a loopback port, stopped by its PID.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    async fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("chromedriver is missing ({e}): {MISSING}"));
        let driver = Driver { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = reqwest::get(format!("http://127.0.0.1:{port}/status"))
                .await
                .ok()
                .map(|r| r.json::<Value>());
            if let Some(body) = ready {
                if body.await.is_ok_and(|b| b["value"]["ready"] == true) {
                    return driver;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not start within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// The browser's console log (chromedriver's log endpoint).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }
    fn method_and_body(&self, _: &url::Url) -> (HttpMethod, Option<String>) {
        (HttpMethod::POST, Some(json!({"type": "browser"}).to_string()))
    }
}

/// Headless Chromium with a fresh profile, logging everything the console sees.
async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1800",
        &format!("--user-data-dir={}", profile.display()),
    ];
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        "goog:loggingPrefs": {"browser": "ALL"},
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .unwrap_or_else(|e| panic!("no browser session ({e}): {MISSING}"))
}

/// Evaluates `script` (a function body returning a value) until `ok` holds
/// for its result; returns that result. Panics after `within`.
async fn wait_js(c: &Client, script: &str, within: Duration, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let v = c.execute(script, vec![]).await.unwrap();
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "after {within:?}: {script} gave {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the page has re-rendered `model`'s card (it does on every
/// update it receives): marks the card, then waits for a card without the mark.
async fn rerender(c: &Client, model: &str) {
    let card = format!("document.getElementById('model-{model}')");
    c.execute(&format!("{card}.dataset.old = '1'; return true;"), vec![])
        .await
        .unwrap();
    let fresh = format!("return !{card}.dataset.old;");
    wait_js(c, &fresh, Duration::from_secs(5), |v| v == true).await;
}

fn text_of(id: &str) -> String {
    format!("const e = document.getElementById('{id}'); return e ? e.textContent : null;")
}

async fn enter_token(c: &Client, token: &str) {
    let form_shown = "return !document.getElementById('token-form').hidden;";
    if c.execute(form_shown, vec![]).await.unwrap() != true {
        c.find(Locator::Id("token-button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }
    let input = c.find(Locator::Id("token-input")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(token).await.unwrap();
    c.find(Locator::Id("token-save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn conn_state(c: &Client, want: &str, within: Duration) {
    let script = "return document.getElementById('conn').dataset.state;";
    wait_js(c, script, within, |v| v == want).await;
}

async fn phase(s: &TestServer) -> String {
    let (st, r) = s
        .admin(Method::GET, "/admin/v1/models/digits/rollout", None)
        .await;
    assert_eq!(st, 200, "{r}");
    r["phase"].as_str().unwrap().to_string()
}

/// Console entries that are errors, except the refusals the test provokes
/// on purpose (401 for a wrong token) and the fleet route a local server
/// does not have (404).
async fn console_errors(c: &Client) -> Vec<Value> {
    let log = c.issue_cmd(BrowserLog).await.unwrap();
    log.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .filter(|e| {
            let m = e["message"].as_str().unwrap_or_default();
            let refused = m.contains("Failed to load resource: the server responded with a status of 401");
            let no_fleet = m.contains("/admin/v1/fleet") && m.contains("status of 404");
            !(refused || no_fleet)
        })
        .cloned()
        .collect()
}

/// Predict traffic with user keys until `stop` is set.
fn traffic(
    s: &TestServer,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let client = s.client.clone();
    let url = s.url("/v2/models/digits/infer");
    tokio::spawn(async move {
        let rows = digits_samples();
        let mut i = 0usize;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let body = digits_request(&[rows[i % rows.len()].0.clone()]);
            let _ = client
                .post(&url)
                .header("x-user-id", format!("user-{}", i % 200))
                .json(&body)
                .send()
                .await;
            i += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_in_headless_chromium() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start_with(repo.path(), |c| c.admin_token = Some(TOKEN.into())).await;
    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = traffic(&s, stop.clone());

    // the page loads without the token and asks for it
    c.goto(&format!("{}/", s.admin)).await.unwrap();
    conn_state(&c, "unauthorized", Duration::from_secs(10)).await;
    let shown = "return !document.getElementById('token-form').hidden;";
    wait_js(&c, shown, Duration::from_secs(5), |v| v == true).await;

    // a wrong token is refused with an error
    enter_token(&c, "not-the-token").await;
    let notice = wait_js(&c, &text_of("notice"), Duration::from_secs(5), |v| {
        v.as_str().is_some_and(|t| t.contains("token"))
    })
    .await;
    assert!(notice.as_str().unwrap().contains("refused"), "{notice}");
    conn_state(&c, "unauthorized", Duration::from_secs(5)).await;

    // the right one shows the models and versions
    enter_token(&c, TOKEN).await;
    conn_state(&c, "live", Duration::from_secs(10)).await;
    for v in [1, 2] {
        let row = wait_js(
            &c,
            &text_of(&format!("version-digits-{v}")),
            Duration::from_secs(5),
            |t| t.as_str().is_some_and(|t| t.contains("READY")),
        )
        .await;
        assert!(row.as_str().unwrap().starts_with(&format!("v{v}")), "{row}");
    }
    assert_eq!(
        c.execute(&text_of("phase-digits"), vec![]).await.unwrap(),
        Value::Null,
        "no rollout yet"
    );
    assert_eq!(
        c.execute("return document.getElementById('fleet').hidden;", vec![])
            .await
            .unwrap(),
        true,
        "no fleet: the fleet badge stays hidden"
    );

    // a canary started through the admin API shows within 2 s, no reload
    let marker = "window.__same_page = true; return true;";
    c.execute(marker, vec![]).await.unwrap();
    let spec = json!({"strategy": "canary", "candidate": 2,
        "steps": [{"weight": "30%", "bake": "1h"}, {"weight": "100%"}],
        "analysis": {"interval": "1s", "min_requests": 5, "max_p95_ratio": 5.0, "progress_deadline": "10m"}});
    let (st, started) = s
        .admin(Method::POST, "/admin/v1/models/digits/rollouts", Some(spec))
        .await;
    assert_eq!(st, 200, "{started}");
    let at = Instant::now();
    let shown = wait_js(&c, &text_of("phase-digits"), Duration::from_secs(2), |t| {
        t.as_str()
            .is_some_and(|p| p == "validating" || p == "progressing")
    })
    .await;
    eprintln!("the page showed phase {shown} {:?} after the start", at.elapsed());
    assert_eq!(
        c.execute("return window.__same_page === true;", vec![])
            .await
            .unwrap(),
        true,
        "the page was not reloaded"
    );

    // mid-rollout: progressing at 30 %, analysed, charts with traffic
    let deadline = Instant::now() + Duration::from_secs(60);
    while phase(&s).await != "progressing" {
        assert!(Instant::now() < deadline, "the canary did not start progressing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_js(&c, &text_of("weight-digits"), Duration::from_secs(5), |t| {
        t == "30%"
    })
    .await;
    wait_js(&c, &text_of("rollout-digits"), Duration::from_secs(30), |t| {
        t.as_str()
            .is_some_and(|t| t.contains("p95 latency") && t.contains("✓ pass"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await; // a few seconds of chart
    let png = c.screenshot().await.unwrap();
    let dir = root().join("target/ui");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("rollout.png"), &png).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");

    // Pause with a wrong token: an error, and nothing changes
    enter_token(&c, "still-not-the-token").await;
    c.find(Locator::Id("act-digits-pause"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let result = wait_js(&c, &text_of("result-digits"), Duration::from_secs(5), |t| {
        t.as_str().is_some_and(|t| t.contains("failed"))
    })
    .await;
    assert!(result.as_str().unwrap().contains("401"), "{result}");
    assert_eq!(
        phase(&s).await,
        "progressing",
        "a wrong token changed the rollout"
    );

    // Pause with the token pauses it, even when the page re-rendered between
    // finding the button and clicking it (analysis pushes an update every second)
    enter_token(&c, TOKEN).await;
    conn_state(&c, "live", Duration::from_secs(10)).await;
    let pause = c.find(Locator::Id("act-digits-pause")).await.unwrap();
    rerender(&c, "digits").await;
    pause.click().await.unwrap();
    wait_js(&c, &text_of("result-digits"), Duration::from_secs(5), |t| {
        t.as_str().is_some_and(|t| t.contains("pause done"))
    })
    .await;
    assert_eq!(phase(&s).await, "paused");
    wait_js(&c, &text_of("phase-digits"), Duration::from_secs(3), |t| {
        t == "paused"
    })
    .await;

    // the audit log, open while it has events, stays as the user leaves it
    // when the page re-renders
    let log_open = "return document.getElementById('log-digits').open;";
    wait_js(&c, log_open, Duration::from_secs(3), |v| v == true).await;
    for want in [false, true] {
        c.find(Locator::Css("#log-digits > summary"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        rerender(&c, "digits").await;
        assert_eq!(
            c.execute(log_open, vec![]).await.unwrap(),
            want,
            "the audit log after a re-render"
        );
    }

    // Abort asks first; cancelling changes nothing
    c.find(Locator::Id("act-digits-abort"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let open = "return document.getElementById('confirm').open;";
    wait_js(&c, open, Duration::from_secs(3), |v| v == true).await;
    let question = c.execute(&text_of("confirm-text"), vec![]).await.unwrap();
    assert!(question.as_str().unwrap().contains("Abort"), "{question}");
    c.find(Locator::Id("confirm-cancel"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(&c, open, Duration::from_secs(3), |v| v == false).await;
    assert_eq!(phase(&s).await, "paused", "a cancelled abort changed the rollout");

    let errors = console_errors(&c).await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");

    // the server goes away: the page says the connection is lost
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();
    s.stop().await;
    conn_state(&c, "lost", Duration::from_secs(10)).await;
    let conn = c.execute(&text_of("conn"), vec![]).await.unwrap();
    assert!(conn.as_str().unwrap().contains("connection lost"), "{conn}");
    c.close().await.unwrap();
}
