//! Shadow mirroring: after the primary answer is ready, a sampled copy of the
//! request goes to the shadow version through a bounded queue, and the two
//! answers are compared off the request path.
//!
//! A *comparison* looks at every output tensor both answers have: labels
//! (integer, bool, string tensors) must be equal, score tensors (float,
//! `[N, K]` with K > 1) must agree on each row's argmax, and the largest
//! absolute difference of float outputs is recorded. A full queue drops the
//! copy and counts it; the primary never waits for the shadow.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::runtime::VersionRuntime;
use crate::tensor::json::FlatJson;
use crate::tensor::{Tensor, TensorData};

/// How many mirrored requests run against shadows at once.
const CONCURRENCY: usize = 4;
/// How many recent disagreements are kept per model.
pub const RECENT: usize = 50;
/// How many elements of each output a recorded disagreement keeps.
const KEEP_ELEMENTS: usize = 100;

/// A mirrored request waiting for the shadow.
pub struct ShadowJob {
    pub model: String,
    pub primary_version: u64,
    pub shadow_version: u64,
    pub runtime: Arc<VersionRuntime>,
    pub inputs: Vec<Tensor>,
    pub primary: Vec<Tensor>,
    pub request_id: String,
}

/// One recorded disagreement.
#[derive(Debug, Clone, Serialize)]
pub struct Disagreement {
    pub request_id: String,
    /// Seconds since the Unix epoch.
    pub at: f64,
    pub primary_version: u64,
    pub shadow_version: u64,
    pub reasons: Vec<String>,
    pub primary: serde_json::Value,
    pub shadow: serde_json::Value,
}

/// Counters for one (model, primary, shadow) pair.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShadowStats {
    pub primary_version: u64,
    pub shadow_version: u64,
    pub compared: u64,
    pub agreed: u64,
    pub disagreed: u64,
    /// The shadow failed (error, deadline) while the primary succeeded.
    pub shadow_errors: u64,
    /// Copies dropped because the queue was full.
    pub dropped: u64,
    /// Largest absolute difference seen in any float output.
    pub max_abs_diff: f64,
    /// agreed / compared (1.0 when nothing was compared).
    pub agreement: f64,
    pub recent_disagreements: VecDeque<Disagreement>,
}

impl ShadowStats {
    /// A copy of the counters only (no disagreements).
    fn clone_counters(&self) -> ShadowStats {
        ShadowStats {
            primary_version: self.primary_version,
            shadow_version: self.shadow_version,
            compared: self.compared,
            agreed: self.agreed,
            disagreed: self.disagreed,
            shadow_errors: self.shadow_errors,
            dropped: self.dropped,
            max_abs_diff: self.max_abs_diff,
            agreement: self.agreement,
            recent_disagreements: VecDeque::new(),
        }
    }
}

/// The shadow queue and the per-model results.
pub struct ShadowHub {
    tx: mpsc::Sender<ShadowJob>,
    stats: Mutex<HashMap<String, Vec<ShadowStats>>>,
}

impl ShadowHub {
    /// Starts the worker task with room for `queue` waiting copies; needs a
    /// tokio runtime.
    pub fn start(queue: usize) -> Arc<ShadowHub> {
        let (tx, mut rx) = mpsc::channel::<ShadowJob>(queue.max(1));
        let hub = Arc::new(ShadowHub {
            tx,
            stats: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&hub);
        // A few copies run at once so the shadow's own batching can help;
        // while all permits are taken the queue fills and copies drop.
        let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let weak = weak.clone();
                tokio::spawn(async move {
                    let result = job.runtime.infer(job.inputs.clone(), None, false).await;
                    drop(permit);
                    if let Some(hub) = weak.upgrade() {
                        hub.record(job, result.map_err(|e| e.to_string()));
                    }
                });
            }
        });
        hub
    }

    /// Queues a copy for the shadow; a full queue drops it (counted).
    pub fn mirror(&self, job: ShadowJob) {
        if let Err(mpsc::error::TrySendError::Full(job)) = self.tx.try_send(job) {
            let mut stats = self.stats.lock();
            pair_stats(&mut stats, &job.model, job.primary_version, job.shadow_version).dropped += 1;
            metrics::counter!(
                crate::telemetry::names::SHADOW_DROPPED_TOTAL,
                "model" => job.model.clone(),
                "version" => job.shadow_version.to_string(),
            )
            .increment(1);
            tracing::debug!(model = %job.model, "shadow queue full; copy dropped");
        }
    }

    fn record(&self, job: ShadowJob, shadow: Result<Vec<Tensor>, String>) {
        let count = |result: &'static str| {
            metrics::counter!(
                crate::telemetry::names::SHADOW_COMPARISONS_TOTAL,
                "model" => job.model.clone(),
                "version" => job.shadow_version.to_string(),
                "result" => result,
            )
            .increment(1)
        };
        let mut stats = self.stats.lock();
        let st = pair_stats(&mut stats, &job.model, job.primary_version, job.shadow_version);
        let outputs = match shadow {
            Ok(outputs) => outputs,
            Err(e) => {
                st.shadow_errors += 1;
                count("error");
                tracing::debug!(model = %job.model, error = %e, "shadow inference failed");
                return;
            }
        };
        let cmp = compare(&job.primary, &outputs);
        st.compared += 1;
        st.max_abs_diff = st.max_abs_diff.max(cmp.max_abs_diff);
        count(if cmp.agree { "agree" } else { "disagree" });
        if cmp.agree {
            st.agreed += 1;
        } else {
            st.disagreed += 1;
            if st.recent_disagreements.len() == RECENT {
                st.recent_disagreements.pop_front();
            }
            st.recent_disagreements.push_back(Disagreement {
                request_id: job.request_id,
                at: SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0),
                primary_version: job.primary_version,
                shadow_version: job.shadow_version,
                reasons: cmp.reasons,
                primary: outputs_json(&job.primary),
                shadow: outputs_json(&outputs),
            });
        }
        st.agreement = st.agreed as f64 / st.compared as f64;
    }

    /// Forgets the counters of one (primary, shadow) pair: a new rollout or
    /// a retry judges agreement on its own comparisons only.
    pub fn reset(&self, model: &str, primary: u64, shadow: u64) {
        let mut stats = self.stats.lock();
        if let Some(list) = stats.get_mut(model) {
            list.retain(|s| !(s.primary_version == primary && s.shadow_version == shadow));
        }
    }

    /// Results for `model`, one entry per (primary, shadow) pair seen.
    pub fn stats(&self, model: &str) -> Vec<ShadowStats> {
        self.stats.lock().get(model).cloned().unwrap_or_default()
    }

    /// The counters of `model`'s pairs without their recorded
    /// disagreements: cheap enough for a once-a-second sampler.
    pub fn counters(&self, model: &str) -> Vec<ShadowStats> {
        let stats = self.stats.lock();
        let Some(pairs) = stats.get(model) else {
            return Vec::new();
        };
        pairs.iter().map(ShadowStats::clone_counters).collect()
    }
}

fn pair_stats<'a>(
    stats: &'a mut HashMap<String, Vec<ShadowStats>>,
    model: &str,
    primary: u64,
    shadow: u64,
) -> &'a mut ShadowStats {
    let list = stats.entry(model.to_string()).or_default();
    let i = match list
        .iter()
        .position(|s| s.primary_version == primary && s.shadow_version == shadow)
    {
        Some(i) => i,
        None => {
            list.push(ShadowStats {
                primary_version: primary,
                shadow_version: shadow,
                agreement: 1.0,
                ..ShadowStats::default()
            });
            list.len() - 1
        }
    };
    &mut list[i]
}

/// Outputs as JSON for the disagreement log, each cut to its first
/// `KEEP_ELEMENTS` elements so the log stays small.
fn outputs_json(outputs: &[Tensor]) -> serde_json::Value {
    outputs
        .iter()
        .map(|t| {
            let n = t.data.len().min(KEEP_ELEMENTS);
            let data = serde_json::to_value(FlatJson(&t.data.slice(0..n))).unwrap_or_default();
            (
                t.name.clone(),
                serde_json::json!({"shape": t.shape, "data": data, "truncated": n < t.data.len()}),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The verdict on one pair of answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub agree: bool,
    pub max_abs_diff: f64,
    pub reasons: Vec<String>,
}

/// Compares two answers output by output.
pub fn compare(primary: &[Tensor], shadow: &[Tensor]) -> Comparison {
    let mut cmp = Comparison {
        agree: true,
        max_abs_diff: 0.0,
        reasons: Vec::new(),
    };
    for p in primary {
        let Some(s) = shadow.iter().find(|s| s.name == p.name) else {
            cmp.agree = false;
            cmp.reasons
                .push(format!("output '{}' missing from the shadow", p.name));
            continue;
        };
        if p.shape != s.shape {
            cmp.agree = false;
            cmp.reasons.push(format!(
                "output '{}' shapes differ: {:?} vs {:?}",
                p.name, p.shape, s.shape
            ));
            continue;
        }
        match (floats(&p.data), floats(&s.data)) {
            (Some(a), Some(b)) => {
                let diff = a
                    .iter()
                    .zip(&b)
                    .map(|(x, y)| {
                        if x.is_nan() && y.is_nan() {
                            0.0
                        } else {
                            (x - y).abs()
                        }
                    })
                    .fold(0.0f64, |m, d| if d.is_nan() { f64::INFINITY } else { m.max(d) });
                cmp.max_abs_diff = cmp.max_abs_diff.max(diff);
                let width = if p.shape.len() == 2 {
                    p.shape[1] as usize
                } else {
                    0
                };
                if width > 1 {
                    let rows_differ = a
                        .chunks(width)
                        .zip(b.chunks(width))
                        .filter(|(x, y)| argmax(x) != argmax(y))
                        .count();
                    if rows_differ > 0 {
                        cmp.agree = false;
                        cmp.reasons.push(format!(
                            "output '{}': argmax differs in {rows_differ} row(s)",
                            p.name
                        ));
                    }
                }
            }
            _ => {
                if p.data != s.data {
                    cmp.agree = false;
                    cmp.reasons.push(format!("output '{}' differs", p.name));
                }
            }
        }
    }
    cmp
}

fn floats(d: &TensorData) -> Option<Vec<f64>> {
    match d {
        TensorData::Fp16(v) => Some(v.iter().map(|x| x.to_f64()).collect()),
        TensorData::Fp32(v) => Some(v.iter().map(|&x| x as f64).collect()),
        TensorData::Fp64(v) => Some(v.clone()),
        _ => None,
    }
}

fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, shape: Vec<i64>, data: TensorData) -> Tensor {
        Tensor {
            name: name.into(),
            shape,
            data,
        }
    }

    #[test]
    fn labels_must_match_and_scores_must_agree_on_argmax() {
        let a = vec![
            t("label", vec![2], TensorData::Int64(vec![3, 1])),
            t("p", vec![2, 2], TensorData::Fp32(vec![0.2, 0.8, 0.9, 0.1])),
        ];
        let same = compare(&a, &a);
        assert!(same.agree);
        assert_eq!(same.max_abs_diff, 0.0);

        let mut b = a.clone();
        b[1].data = TensorData::Fp32(vec![0.3, 0.7, 0.9, 0.1]);
        let close = compare(&a, &b);
        assert!(close.agree);
        assert!((close.max_abs_diff - 0.1).abs() < 1e-6);

        b[1].data = TensorData::Fp32(vec![0.6, 0.4, 0.9, 0.1]);
        b[0].data = TensorData::Int64(vec![3, 2]);
        let differ = compare(&a, &b);
        assert!(!differ.agree);
        assert_eq!(differ.reasons.len(), 2, "{:?}", differ.reasons);
    }
}
