//! The *overview* is what the live page shows at one moment, as one JSON
//! document: per model its versions (state, reason, labels, traffic share,
//! circuit breaker), the traffic split with the route each share takes, the
//! newest rollout with its stages and timers, the recent audit log and the
//! shadow counters. The per-second history travels separately (see
//! `stream`), so an unchanged overview is not sent again.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::api::admin::{rollout_view, view};
use crate::guard::CircuitState;
use crate::policy::PinMode;
use crate::repository::ModelEntry;
use crate::rollout::machine::{Phase, Rollout, Stage};
use crate::rollout::Strategy;
use crate::serving::history::SPAN;
use crate::serving::AppState;

/// Audit log entries the page shows per model.
pub(super) const EVENTS: usize = 50;
/// Basis points of all traffic.
const FULL: u32 = 10_000;

/// Builds overviews, remembering each model's newest rollout and its recent
/// events, so the audit log is read again only when the rollout changed.
#[derive(Default)]
pub(super) struct Overviewer {
    seen: HashMap<String, (Option<Rollout>, Value)>,
}

/// Milliseconds since the Unix epoch.
pub(super) fn now_ms() -> u64 {
    (crate::rollout::controller::now_secs() * 1000.0) as u64
}

/// What the page needs to know about the server itself.
pub(super) fn server(state: &AppState) -> Value {
    json!({
        "name": "switchyard",
        "version": env!("CARGO_PKG_VERSION"),
        "now_ms": now_ms(),
        "token_required": state.settings.admin_token.as_deref().is_some_and(|t| !t.is_empty()),
        "history": {"interval_ms": 1000, "span_secs": SPAN},
    })
}

impl Overviewer {
    /// Every model of the current snapshot, as the page shows it.
    pub(super) async fn models(&mut self, state: &AppState) -> Value {
        let snapshot = state.repo.snapshot();
        let mut models = Vec::with_capacity(snapshot.models.len());
        for m in snapshot.models.values() {
            models.push(self.model(state, m).await);
        }
        self.seen.retain(|name, _| snapshot.models.contains_key(name));
        Value::Array(models)
    }

    async fn model(&mut self, state: &AppState, m: &ModelEntry) -> Value {
        let mut out = serde_json::to_value(view(m)).unwrap_or_default();
        let shares = crate::serving::scrape::weights(m);
        if let Some(versions) = out["versions"].as_array_mut() {
            for v in versions {
                let n = v["version"].as_u64().unwrap_or(0);
                let share = shares.iter().find(|(w, _)| *w == n).map_or(0, |(_, bp)| *bp);
                v["share_bp"] = share.into();
                v["breaker"] = breaker(state.guard.breakers.state(&m.name, n)).into();
            }
        }
        out["split"] = split(m);
        let rollout = match state.rollouts.get(&m.name).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(model = %m.name, error = %e, "rollout not readable for the live page");
                None
            }
        };
        out["rollout"] = rollout.as_ref().map_or(Value::Null, rollout_json);
        out["events"] = self.events(state, &m.name, rollout).await;
        out["shadow"] = serde_json::to_value(state.shadow.counters(&m.name)).unwrap_or_default();
        out
    }

    /// The recent audit log of `model`, read again only when its rollout
    /// changed since the last overview.
    async fn events(&mut self, state: &AppState, model: &str, rollout: Option<Rollout>) -> Value {
        if let Some((seen, events)) = self.seen.get(model) {
            if *seen == rollout {
                return events.clone();
            }
        }
        let events = match state.rollouts.recent_events(model, EVENTS).await {
            Ok(events) => Value::Array(
                events
                    .into_iter()
                    .map(|(id, e)| {
                        let mut v = serde_json::to_value(e).unwrap_or_default();
                        v["rollout"] = id.into();
                        v
                    })
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(model, error = %e, "audit log not readable for the live page");
                Value::Array(Vec::new())
            }
        };
        self.seen.insert(model.to_string(), (rollout, events.clone()));
        events
    }
}

fn breaker(state: CircuitState) -> &'static str {
    match state {
        CircuitState::Closed => "closed",
        CircuitState::Open => "open",
        CircuitState::HalfOpen => "half-open",
    }
}

/// Where versionless traffic goes and why: the shares of stable and
/// candidate with the route each takes, the allow-list, pins, the shadow
/// and the preview.
fn split(m: &ModelEntry) -> Value {
    let Some(p) = &m.policy else {
        return json!({
            "stable": m.default_version().map(|v| json!({"version": v, "weight_bp": FULL, "route": "stable"})),
        });
    };
    let spec = p.spec();
    let candidate = spec
        .candidate
        .as_ref()
        .filter(|c| c.version != spec.stable)
        .map(|c| {
            json!({
                "version": c.version,
                "weight_bp": c.weight.bp().min(FULL),
                // users with a key are hashed; requests without one draw a bucket
                "route": if spec.sticky { "sticky" } else { "weighted" },
            })
        });
    let stable_bp = FULL
        - candidate
            .as_ref()
            .map_or(0, |c| c["weight_bp"].as_u64().unwrap_or(0) as u32);
    json!({
        "stable": {"version": spec.stable, "weight_bp": stable_bp, "route": "stable"},
        "candidate": candidate,
        "allow_list": spec.allow_list.len(),
        "pins": match spec.pins {
            PinMode::Off => "off",
            PinMode::AllowListed => "allow-listed",
            PinMode::All => "all",
        },
        "shadow": spec.shadow.as_ref().map(|s| json!({"version": s.version, "rate": s.rate})),
        "preview": spec.preview,
    })
}

/// The admin API's rollout view plus its stages (kind, weight, bake) and
/// the instants its timers end, so the page can count them down.
fn rollout_json(r: &Rollout) -> Value {
    let mut out = rollout_view(r);
    let stages: Vec<(Stage, Option<std::time::Duration>)> = r.steps();
    out["stages"] = stages
        .iter()
        .map(|(stage, bake)| {
            let (kind, weight) = match stage {
                Stage::Weight(w) => ("weight", w.bp()),
                Stage::Preview => ("preview", 0),
                Stage::Switched => ("switched", FULL),
                Stage::Shadow => ("shadow", 0),
                Stage::Split(w) => ("split", w.bp()),
            };
            json!({"kind": kind, "weight_bp": weight, "bake_secs": bake.map(|b| b.as_secs_f64())})
        })
        .collect();
    let active = matches!(r.phase, Phase::Progressing | Phase::Paused);
    let bake = stages.get(r.step).and_then(|(_, bake)| *bake).filter(|_| active);
    out["bake_ends_at"] = bake.map(|b| r.step_started_at + b.as_secs_f64()).into();
    out["deadline_at"] = r
        .inconclusive_since
        .filter(|_| active)
        .map(|since| since + r.spec.analysis.progress_deadline.as_secs_f64())
        .into();
    out["next_analysis_at"] = (r.phase == Phase::Progressing)
        .then(|| r.last_analysis_at.unwrap_or(r.step_started_at) + r.spec.analysis.interval.as_secs_f64())
        .into();
    out["thresholds"] = thresholds(r);
    out
}

/// The strategy's own thresholds (shadow agreement, A/B alpha) next to the
/// analysis ones, with durations in seconds.
fn thresholds(r: &Rollout) -> Value {
    let a = &r.spec.analysis;
    let mut t = json!({
        "min_requests": a.min_requests,
        "max_error_rate_ratio": a.max_error_rate_ratio,
        "max_error_rate_delta": a.max_error_rate_delta,
        "max_p95_ratio": a.max_p95_ratio,
        "min_feedback_delta": a.min_feedback_delta,
        "failure_limit": a.failure_limit,
        "interval_secs": a.interval.as_secs_f64(),
        "progress_deadline_secs": a.progress_deadline.as_secs_f64(),
    });
    match &r.spec.strategy {
        Strategy::Shadow {
            min_agreement,
            min_samples,
            rate,
            ..
        } => {
            t["min_agreement"] = (*min_agreement).into();
            t["min_samples"] = (*min_samples).into();
            t["shadow_rate"] = (*rate).into();
        }
        Strategy::AbTest {
            alpha, min_samples, ..
        } => {
            t["alpha"] = (*alpha).into();
            t["min_samples"] = (*min_samples).into();
        }
        Strategy::Canary { .. } | Strategy::BlueGreen { .. } => {}
    }
    t
}
