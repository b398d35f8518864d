//! Traffic for the fleet tests: the central noun is the **load**, a few
//! client tasks sending held-out digits samples to a set of replicas in
//! turn, each request with a user id, optionally posting 1/0 feedback (was
//! the label right?) to the replica that answered; it counts every request
//! that did not get a 200.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::json;

use crate::common::digits_samples;
use crate::harness::{infer, LocalFleet};

/// Running traffic; stop it to get the counts.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    pub(crate) sent: Arc<AtomicU64>,
    pub(crate) failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `streams` clients sending to the replicas `pods` (by index) in turn.
    pub(crate) fn start(fleet: &LocalFleet, pods: &[usize], streams: usize, feedback: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(digits_samples());
        let targets: Arc<Vec<(String, String)>> = Arc::new(
            pods.iter()
                .map(|&i| (fleet.pods[i].data.clone(), fleet.pods[i].name.clone()))
                .collect(),
        );
        let tasks = (0..streams)
            .map(|k| {
                let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
                let (samples, targets) = (samples.clone(), targets.clone());
                let client = reqwest::Client::new();
                tokio::spawn(async move {
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let (data, name) = &targets[(n + k) % targets.len()];
                        let (row, label) = &samples[(n * streams + k) % samples.len()];
                        let id = format!("{name}-{k}-{n}");
                        let user = format!("user-{}", (n * streams + k) % 1000);
                        let (status, _, _, predicted) = infer(&client, data, &user, row, &id).await;
                        sent.fetch_add(1, Ordering::Relaxed);
                        if status != 200 {
                            failed.fetch_add(1, Ordering::Relaxed);
                            eprintln!("load: {name} answered {status} to {id}");
                        } else if feedback {
                            let value = if predicted == Some(*label) { 1.0 } else { 0.0 };
                            let _ = client
                                .post(format!("{data}/v2/models/digits/feedback"))
                                .bearer_auth(crate::harness::TOKEN)
                                .json(&json!({"request_id": id, "value": value}))
                                .send()
                                .await;
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        Load {
            stop,
            sent,
            failed,
            tasks,
        }
    }

    /// Stops the clients: (sent, failed).
    pub(crate) async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}
