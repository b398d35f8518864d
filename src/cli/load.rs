//! `switchyard load`: real traffic for a walkthrough or a demo. It sends the
//! rows of the model's `samples.json` as V2 requests at a steady rate, each
//! from one of `--users` sticky users, and posts feedback (1 when the
//! answer's label is the sample's true label, else 0) naming the request id,
//! which is what rollout analysis and A/B tests consume. It prints what
//! answered: requests per version and route, statuses, latency.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::args::{FeedbackKind, LoadArgs};
use super::output::{emit, Table};
use crate::repository::Samples;

/// Requests in flight at most; beyond, the sender waits (the rate drops).
const MAX_IN_FLIGHT: usize = 64;

/// What came back.
#[derive(Default)]
struct Tally {
    /// (version, route) → answers.
    answered: BTreeMap<(String, String), u64>,
    /// status → answers.
    statuses: BTreeMap<u16, u64>,
    failures: u64,
    feedback: u64,
    feedback_refused: u64,
    latencies_ms: Vec<f64>,
}

/// One request ready to send: its body and, when known, the true label.
struct Row {
    inputs: Value,
    label: Option<i64>,
}

/// `switchyard load`.
pub async fn load(args: LoadArgs) -> anyhow::Result<ExitCode> {
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be a positive number of requests per second");
    }
    let base = args.url.trim_end_matches('/').to_string();
    let client = reqwest::Client::new();
    let rows = Arc::new(rows(&client, &base, &args).await?);
    let label_output = Samples::read(&samples_path(&args))?
        .and_then(|s| s.label_output)
        .filter(|_| args.feedback == FeedbackKind::Correct);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < args.duration {
        tick.tick().await;
        let permit = permits.clone().acquire_owned().await?;
        let send = Send {
            client: client.clone(),
            base: base.clone(),
            model: args.model.clone(),
            feedback_token: args.feedback_token.clone(),
            label_output: label_output.clone(),
        };
        let (rows, tally) = (rows.clone(), tally.clone());
        let user = format!("user-{}", n % args.users.max(1));
        let id = format!("load-{}-{n}", std::process::id());
        tokio::spawn(async move {
            send.one(&rows[n as usize % rows.len()], &user, &id, &tally).await;
            drop(permit);
        });
        n += 1;
    }
    let _ = permits.acquire_many(MAX_IN_FLIGHT as u32).await;
    let tally = tally.lock();
    emit(&summary(&tally, n, started.elapsed()))?;
    Ok(
        if tally.failures == 0 && tally.statuses.keys().all(|s| *s < 500) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

fn samples_path(args: &LoadArgs) -> std::path::PathBuf {
    args.model_repository.join(&args.model).join("samples.json")
}

/// The sample rows as V2 input lists, typed by the model's metadata.
async fn rows(client: &reqwest::Client, base: &str, args: &LoadArgs) -> anyhow::Result<Vec<Row>> {
    let path = samples_path(args);
    let samples = Samples::read(&path)?.with_context(|| {
        format!(
            "{} does not exist: load needs the model's sample rows",
            path.display()
        )
    })?;
    let meta: Value = client
        .get(format!("{base}/v2/models/{}", args.model))
        .send()
        .await
        .with_context(|| format!("cannot reach {base}"))?
        .error_for_status()
        .with_context(|| format!("model '{}' is not served at {base}", args.model))?
        .json()
        .await?;
    let datatype = |name: &str| {
        meta["inputs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["name"] == name)
            .and_then(|i| i["datatype"].as_str())
            .unwrap_or("FP32")
            .to_string()
    };
    let rows: Vec<Row> = samples
        .samples
        .iter()
        .map(|s| Row {
            inputs: Value::Array(
                s.inputs
                    .iter()
                    .map(|(name, value)| {
                        let shape = value_shape(value);
                        json!({"name": name, "shape": shape, "datatype": datatype(name), "data": value})
                    })
                    .collect(),
            ),
            label: s.label,
        })
        .collect();
    if rows.is_empty() {
        bail!("{} holds no samples", path.display());
    }
    Ok(rows)
}

/// Everything one request needs besides its row.
struct Send {
    client: reqwest::Client,
    base: String,
    model: String,
    feedback_token: Option<String>,
    label_output: Option<String>,
}

impl Send {
    async fn one(&self, row: &Row, user: &str, id: &str, tally: &Mutex<Tally>) {
        let t = Instant::now();
        let resp = self
            .client
            .post(format!("{}/v2/models/{}/infer", self.base, self.model))
            .header("x-user-id", user)
            .json(&json!({"id": id, "inputs": row.inputs}))
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(_) => {
                tally.lock().failures += 1;
                return;
            }
        };
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        let (version, route) = (header("x-model-version"), header("x-route"));
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        {
            let mut t_ = tally.lock();
            *t_.statuses.entry(status).or_default() += 1;
            if status < 300 {
                *t_.answered.entry((version, route)).or_default() += 1;
            }
            t_.latencies_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        if status >= 300 {
            return;
        }
        let (Some(output), Some(label)) = (&self.label_output, row.label) else {
            return;
        };
        let predicted = body["outputs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["name"] == output.as_str())
            .and_then(|o| o["data"][0].as_i64());
        let value = if predicted == Some(label) { 1 } else { 0 };
        let mut req = self
            .client
            .post(format!("{}/v2/models/{}/feedback", self.base, self.model))
            .json(&json!({"request_id": id, "value": value}));
        if let Some(token) = &self.feedback_token {
            req = req.bearer_auth(token);
        }
        let ok = req.send().await.is_ok_and(|r| r.status().is_success());
        let mut t_ = tally.lock();
        if ok {
            t_.feedback += 1;
        } else {
            t_.feedback_refused += 1;
        }
    }
}

fn summary(t: &Tally, sent: u64, took: Duration) -> String {
    let mut lat = t.latencies_ms.clone();
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        lat.get(((lat.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    let statuses: Vec<String> = t.statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    let mut text = format!(
        "sent {sent} requests in {:.1} s ({:.0}/s); statuses {}; {} connection failures\n\
         latency p50 {:.2} ms, p99 {:.2} ms; feedback posted {} ({} refused)\n",
        took.as_secs_f64(),
        sent as f64 / took.as_secs_f64().max(1e-9),
        if statuses.is_empty() {
            "none".into()
        } else {
            statuses.join(", ")
        },
        t.failures,
        pct(0.5),
        pct(0.99),
        t.feedback,
        t.feedback_refused,
    );
    let mut table = Table::new(&["version", "route", "answers"]);
    for ((version, route), n) in &t.answered {
        table.row(vec![version.clone(), route.clone(), n.to_string()]);
    }
    text.push_str(&table.render());
    text
}

/// The shape a nested JSON value claims, read along its first elements
/// (`[[1, 2, 3]]` → `[1, 3]`, a scalar → `[]`); the server checks the rest.
fn value_shape(value: &Value) -> Vec<usize> {
    let mut shape = Vec::new();
    let mut cur = value;
    while let Value::Array(items) = cur {
        shape.push(items.len());
        match items.first() {
            Some(first) => cur = first,
            None => break,
        }
    }
    shape
}
