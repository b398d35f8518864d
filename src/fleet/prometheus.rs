//! Fleet-wide metrics from Prometheus: the [`MetricsSource`] a fleet's
//! leader analyses with. Every query sums over all replicas (`sum by`), so
//! the verdict is on the whole fleet's traffic. The rules it keeps:
//!
//! - a window is `[W]` with W the time since the step's policy converged,
//!   so traffic routed by the previous policy never counts;
//! - a missing series reads as 0 (`or vector(0)`), and the replicas
//!   initialise every counter a routable version can have to 0, so a
//!   version without errors never drops out of a ratio;
//! - no samples is "no data" (the analysis is inconclusive and holds); a
//!   failed query is an error (the step holds, then aborts at the error
//!   limit); neither ever promotes.
//!
//! The convergence gate asks whether every ready replica
//! (`switchyard_ready == 1`) reports `switchyard_policy_revision` at or
//! above the step's revision.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::rollout::analysis::{BoxFuture, MetricsError, MetricsSource, ShadowSummary};
use crate::rollout::controller::now_secs;
use crate::runtime::window::{Moments, Summary};
use crate::telemetry::names;

/// A Prometheus server's HTTP API.
pub struct PrometheusSource {
    client: reqwest::Client,
    /// e.g. `http://prometheus.monitoring:9090`.
    url: String,
    /// Extra label matchers for every selector, e.g. `namespace="ml"`.
    matchers: String,
}

fn quote(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

impl PrometheusSource {
    /// A source for the Prometheus at `url`; `matchers` (may be empty) are
    /// added to every selector; each query gives up after `timeout`.
    pub fn new(url: &str, matchers: &str, timeout: Duration) -> PrometheusSource {
        PrometheusSource {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .unwrap_or_default(),
            url: url.trim_end_matches('/').to_string(),
            matchers: matchers.trim().trim_matches(',').to_string(),
        }
    }

    /// `metric{label="value",...,<matchers>}`.
    fn select(&self, metric: &str, labels: &[(&str, String)]) -> String {
        let mut parts: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", quote(v)))
            .collect();
        if !self.matchers.is_empty() {
            parts.push(self.matchers.clone());
        }
        if parts.is_empty() {
            return metric.to_string();
        }
        format!("{metric}{{{}}}", parts.join(","))
    }

    /// An instant query: each series' labels and value.
    pub async fn query(&self, q: &str) -> Result<Vec<(Value, f64)>, MetricsError> {
        let err = |e: String| MetricsError(format!("Prometheus at {}: {e}", self.url));
        let resp = self
            .client
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", q)])
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(|e| err(format!("{status}: {e}")))?;
        parse_vector(&body).map_err(err)
    }

    /// The one value of a query whose result is a single sample (or none).
    async fn scalar(&self, q: &str) -> Result<Option<f64>, MetricsError> {
        Ok(self.query(q).await?.into_iter().map(|(_, v)| v).next())
    }
}

/// The samples of an instant-query answer (`resultType` vector).
pub fn parse_vector(body: &Value) -> Result<Vec<(Value, f64)>, String> {
    if body["status"] != "success" {
        return Err(format!(
            "query failed: {} {}",
            body["errorType"].as_str().unwrap_or(""),
            body["error"].as_str().unwrap_or("(no error message)")
        ));
    }
    let data = &body["data"];
    if data["resultType"] != "vector" {
        return Err(format!("expected a vector, got {}", data["resultType"]));
    }
    let mut out = Vec::new();
    for r in data["result"].as_array().into_iter().flatten() {
        let text = r["value"][1].as_str().ok_or("a sample without a value")?;
        let v = match text {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            t => t.parse().map_err(|_| format!("unreadable sample value {t:?}"))?,
        };
        out.push((r["metric"].clone(), v));
    }
    Ok(out)
}

/// `[Wms]` for the time since `since`, at least a millisecond.
fn range(since: SystemTime) -> String {
    let ms = SystemTime::now()
        .duration_since(since)
        .map_or(1, |d| d.as_millis().max(1));
    format!("[{ms}ms]")
}

impl PrometheusSource {
    async fn summary_of(
        &self,
        model: &str,
        version: u64,
        since: SystemTime,
    ) -> Result<Option<Summary>, MetricsError> {
        let w = range(since);
        let labels = [("model", model.to_string()), ("version", version.to_string())];
        let requests = self.select(names::REQUESTS_TOTAL, &labels);
        let by_status = self
            .query(&format!("sum by (status) (increase({requests}{w}))"))
            .await?;
        let count = |class: &str| {
            by_status
                .iter()
                .filter(|(m, _)| m["status"] == class)
                .map(|(_, v)| v.max(0.0))
                .sum::<f64>()
        };
        if by_status.is_empty() {
            return Ok(None);
        }
        // 4xx are the clients' faults: the local windows leave them out too
        let (ok, failed) = (count("2xx"), count("5xx"));
        let requests = (ok + failed).round() as u64;
        let errors = failed.round() as u64;
        let buckets = self.select(&format!("{}_bucket", names::REQUEST_DURATION_SECONDS), &labels);
        let mut quantiles = [0.0; 3];
        for (i, q) in [0.5, 0.95, 0.99].into_iter().enumerate() {
            let v = self
                .scalar(&format!(
                    "histogram_quantile({q}, sum by (le) (rate({buckets}{w})))"
                ))
                .await?
                .unwrap_or(f64::NAN);
            quantiles[i] = if v.is_finite() { v * 1000.0 } else { 0.0 };
        }
        let feedback = self.feedback(&labels, &w).await?;
        Ok(Some(Summary {
            requests,
            errors,
            error_rate: if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            },
            p50_ms: quantiles[0],
            p95_ms: quantiles[1],
            p99_ms: quantiles[2],
            feedback_count: feedback.count,
            feedback_mean: feedback.mean,
            feedback,
        }))
    }

    /// The moments of the feedback values in the window, from the sums.
    async fn feedback(&self, labels: &[(&str, String)], w: &str) -> Result<Moments, MetricsError> {
        // counters grow: increase(); the running sums are gauges (values
        // may be negative): delta()
        let sum = |f: &str, metric: &str| {
            let s = self.select(metric, labels);
            format!("sum({f}({s}{w})) or vector(0)")
        };
        let n = self
            .scalar(&sum("increase", names::FEEDBACK_VALUES_TOTAL))
            .await?
            .unwrap_or(0.0)
            .round();
        if n < 1.0 {
            return Ok(Moments::default());
        }
        let total = self
            .scalar(&sum("delta", names::FEEDBACK_SUM))
            .await?
            .unwrap_or(0.0);
        let squares = self
            .scalar(&sum("delta", names::FEEDBACK_SQUARES_SUM))
            .await?
            .unwrap_or(0.0);
        let non_binary = self
            .scalar(&sum("increase", names::FEEDBACK_NON_BINARY_TOTAL))
            .await?
            .unwrap_or(0.0);
        let mean = total / n;
        Ok(Moments {
            count: n as u64,
            mean,
            m2: (squares - total * mean).max(0.0),
            non_binary: non_binary.round().max(0.0) as u64,
        })
    }
}

impl MetricsSource for PrometheusSource {
    fn summary<'a>(
        &'a self,
        model: &'a str,
        version: u64,
        since: SystemTime,
    ) -> BoxFuture<'a, Result<Option<Summary>, MetricsError>> {
        Box::pin(self.summary_of(model, version, since))
    }

    fn shadow<'a>(
        &'a self,
        model: &'a str,
        _primary: u64,
        shadow: u64,
        since: SystemTime,
    ) -> BoxFuture<'a, Result<Option<ShadowSummary>, MetricsError>> {
        Box::pin(async move {
            let s = self.select(
                names::SHADOW_COMPARISONS_TOTAL,
                &[("model", model.to_string()), ("version", shadow.to_string())],
            );
            let results = self
                .query(&format!("sum by (result) (increase({s}{}))", range(since)))
                .await?;
            if results.is_empty() {
                return Ok(None);
            }
            let count = |r: &str| {
                results
                    .iter()
                    .filter(|(m, _)| m["result"] == r)
                    .map(|(_, v)| v.max(0.0).round() as u64)
                    .sum::<u64>()
            };
            let (agree, disagree) = (count("agree"), count("disagree"));
            let compared = agree + disagree;
            Ok(Some(ShadowSummary {
                compared,
                agreement: if compared == 0 {
                    1.0
                } else {
                    agree as f64 / compared as f64
                },
                errors: count("error"),
            }))
        })
    }

    fn breaker_open<'a>(
        &'a self,
        model: &'a str,
        version: u64,
        since: SystemTime,
    ) -> BoxFuture<'a, Result<bool, MetricsError>> {
        Box::pin(async move {
            let s = self.select(
                names::CIRCUIT_STATE,
                &[("model", model.to_string()), ("version", version.to_string())],
            );
            // open (1) or half-open (2) on any replica at any scrape
            let worst = self
                .scalar(&format!("max(max_over_time({s}{}))", range(since)))
                .await?;
            Ok(worst.is_some_and(|v| v >= 1.0))
        })
    }

    fn converged<'a>(
        &'a self,
        model: &'a str,
        revision: u64,
    ) -> BoxFuture<'a, Result<Option<f64>, MetricsError>> {
        Box::pin(async move {
            let ready = format!("({} == 1)", self.select(names::READY, &[]));
            let held = self.select(names::POLICY_REVISION, &[("model", model.to_string())]);
            let replicas = self.scalar(&format!("count{ready}")).await?.unwrap_or(0.0);
            let behind = self
                .scalar(&format!(
                    "count({ready} unless on(instance) ({held} >= {revision}))"
                ))
                .await?
                .unwrap_or(0.0);
            Ok((replicas >= 1.0 && behind == 0.0).then(now_secs))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn instant_query_answers_are_read_and_errors_are_errors() {
        let ok = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"version": "1"}, "value": [1.0, "12.5"]},
            {"metric": {"version": "2"}, "value": [1.0, "NaN"]},
        ]}});
        let v = parse_vector(&ok).unwrap();
        assert_eq!(v[0].1, 12.5);
        assert!(v[1].1.is_nan());
        assert_eq!(v[1].0["version"], "2");
        let empty = json!({"status": "success", "data": {"resultType": "vector", "result": []}});
        assert!(parse_vector(&empty).unwrap().is_empty());
        let bad = json!({"status": "error", "errorType": "bad_data", "error": "parse error"});
        assert!(parse_vector(&bad).unwrap_err().contains("parse error"));
        let matrix = json!({"status": "success", "data": {"resultType": "matrix", "result": []}});
        assert!(parse_vector(&matrix).is_err());
    }

    #[test]
    fn selectors_carry_the_extra_matchers_and_escape_values() {
        let p = PrometheusSource::new("http://p:9090/", "namespace=\"ml\",", Duration::from_secs(1));
        assert_eq!(
            p.select("m", &[("model", "a\"b".into())]),
            "m{model=\"a\\\"b\",namespace=\"ml\"}"
        );
        let p = PrometheusSource::new("http://p:9090", "", Duration::from_secs(1));
        assert_eq!(p.select("m", &[]), "m");
        assert_eq!(p.url, "http://p:9090");
    }
}
