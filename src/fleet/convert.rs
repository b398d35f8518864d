//! Conversions between the custom resource's Kubernetes-style fields and
//! the rollout layer's values: a spec's [`RolloutFields`] and a
//! [`RolloutSpec`], a status and a [`Rollout`], a [`PolicyStatus`] and a
//! [`PolicySpec`], seconds and RFC 3339 times, basis points and "10%".

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::crd::{
    AbTestFields, AnalysisFields, HistoryEntry, ModelRolloutStatus, PolicyStatus, RolloutFields,
    ShadowFields, StepFields, StrategyName, HISTORY,
};
use crate::policy::{CandidateSpec, PinMode, PolicySpec, ShadowSpec, Weight};
use crate::rollout::machine::{Event, Phase, Rollout};
use crate::rollout::{AnalysisSpec, RolloutSpec, Step, Strategy};

/// Why a custom resource's fields do not make a rollout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidFields(pub String);

/// `"10%"` → 1000 basis points; at most two decimals, 0..=100 %.
pub fn parse_percent(s: &str) -> Result<u32, InvalidFields> {
    let bad = || {
        InvalidFields(format!(
            "weight '{s}' is not a percentage such as \"10%\" or \"2.5%\""
        ))
    };
    let number = s.trim().strip_suffix('%').ok_or_else(bad)?.trim();
    let value: f64 = number.parse().map_err(|_| bad())?;
    let bp = value * 100.0;
    if !(0.0..=10_000.0).contains(&bp) || (bp - bp.round()).abs() > 1e-6 {
        return Err(bad());
    }
    Ok(bp.round() as u32)
}

/// 1000 basis points → `"10%"`, 250 → `"2.5%"`.
pub fn percent(bp: u32) -> String {
    let whole = bp / 100;
    let frac = bp % 100;
    match frac {
        0 => format!("{whole}%"),
        f if f % 10 == 0 => format!("{whole}.{}%", f / 10),
        f => format!("{whole}.{f:02}%"),
    }
}

/// Seconds since the Unix epoch → RFC 3339 with milliseconds.
pub fn rfc3339(secs: f64) -> String {
    // to the nearest millisecond: a time read back from a status (x.235 is
    // 0.23499… as f64) must write the same text again, not drift by 1 ms
    let t = UNIX_EPOCH + Duration::from_millis((secs.max(0.0) * 1000.0).round() as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// RFC 3339 → seconds since the Unix epoch.
pub fn parse_time(s: &str) -> Option<f64> {
    let t: SystemTime = humantime::parse_rfc3339_weak(s).ok()?;
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs_f64())
}

fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn insert<T: serde::Serialize>(m: &mut Map<String, Value>, key: &str, v: Option<T>) {
    if let Some(v) = v {
        m.insert(key.to_string(), json!(v));
    }
}

fn step_json(s: &StepFields) -> Result<Value, InvalidFields> {
    let weight = match (&s.weight, s.weight_basis_points) {
        (Some(p), None) => parse_percent(p)?,
        (None, Some(bp)) => bp,
        _ => {
            return Err(InvalidFields(
                "each step needs exactly one of weight (\"10%\") and weightBasisPoints".into(),
            ))
        }
    };
    let mut m = Map::new();
    m.insert("weight_bp".into(), json!(weight));
    insert(&mut m, "bake", s.bake.clone());
    Ok(Value::Object(m))
}

/// The rollout spec these fields describe, validated.
pub fn rollout_spec(f: &RolloutFields) -> Result<RolloutSpec, InvalidFields> {
    let mut m = Map::new();
    m.insert("candidate".into(), json!(f.candidate));
    let steps = f.steps.iter().map(step_json).collect::<Result<Vec<_>, _>>()?;
    match f.strategy {
        StrategyName::Canary => {
            m.insert("strategy".into(), json!("canary"));
            m.insert("steps".into(), Value::Array(steps));
        }
        StrategyName::BlueGreen => {
            m.insert("strategy".into(), json!("blue-green"));
            insert(&mut m, "observe", f.observe.clone());
        }
        StrategyName::Shadow => {
            m.insert("strategy".into(), json!("shadow"));
            let s = f.shadow.clone().unwrap_or_default();
            insert(&mut m, "rate", s.rate);
            insert(&mut m, "min_agreement", s.min_agreement);
            insert(&mut m, "min_samples", s.min_samples);
            m.insert("then_canary".into(), Value::Array(steps));
        }
        StrategyName::AbTest => {
            m.insert("strategy".into(), json!("ab-test"));
            let a = f.ab_test.clone().unwrap_or_default();
            insert(&mut m, "split_bp", a.split_basis_points);
            insert(&mut m, "duration", a.duration);
            insert(&mut m, "min_samples", a.min_samples);
            insert(&mut m, "alpha", a.alpha);
            insert(&mut m, "auto_promote", a.auto_promote);
        }
    }
    if let Some(a) = &f.analysis {
        let mut n = Map::new();
        insert(&mut n, "interval", a.interval.clone());
        insert(&mut n, "min_requests", a.min_requests);
        insert(&mut n, "max_error_rate_ratio", a.max_error_rate_ratio);
        insert(&mut n, "max_error_rate_delta", a.max_error_rate_delta);
        insert(&mut n, "max_p95_ratio", a.max_p95_ratio);
        insert(&mut n, "min_feedback_delta", a.min_feedback_delta);
        insert(&mut n, "failure_limit", a.failure_limit);
        insert(&mut n, "progress_deadline", a.progress_deadline.clone());
        insert(&mut n, "error_limit", a.error_limit);
        m.insert("analysis".into(), Value::Object(n));
    }
    m.insert("skip_validation".into(), json!(f.skip_validation));
    let spec: RolloutSpec = serde_json::from_value(Value::Object(m))
        .map_err(|e| InvalidFields(format!("invalid rollout: {e}")))?;
    spec.check().map_err(|e| InvalidFields(e.to_string()))?;
    Ok(spec)
}

fn step_fields(s: &Step) -> StepFields {
    StepFields {
        weight: Some(s.weight.to_string()),
        weight_basis_points: None,
        bake: s.bake.map(duration),
    }
}

fn analysis_fields(a: &AnalysisSpec) -> AnalysisFields {
    AnalysisFields {
        interval: Some(duration(a.interval)),
        min_requests: Some(a.min_requests),
        max_error_rate_ratio: Some(a.max_error_rate_ratio),
        max_error_rate_delta: Some(a.max_error_rate_delta),
        max_p95_ratio: Some(a.max_p95_ratio),
        min_feedback_delta: Some(a.min_feedback_delta),
        failure_limit: Some(a.failure_limit),
        progress_deadline: Some(duration(a.progress_deadline)),
        error_limit: Some(a.error_limit),
    }
}

/// The custom resource's fields for a rollout spec (every default spelled out).
pub fn rollout_fields(spec: &RolloutSpec) -> RolloutFields {
    let mut f = RolloutFields {
        candidate: spec.candidate,
        strategy: StrategyName::Canary,
        steps: Vec::new(),
        observe: None,
        shadow: None,
        ab_test: None,
        analysis: Some(analysis_fields(&spec.analysis)),
        skip_validation: spec.skip_validation,
    };
    match &spec.strategy {
        Strategy::Canary { steps } => f.steps = steps.iter().map(step_fields).collect(),
        Strategy::BlueGreen { observe } => {
            f.strategy = StrategyName::BlueGreen;
            f.observe = Some(duration(*observe));
        }
        Strategy::Shadow {
            rate,
            min_agreement,
            min_samples,
            then_canary,
        } => {
            f.strategy = StrategyName::Shadow;
            f.steps = then_canary.iter().map(step_fields).collect();
            f.shadow = Some(ShadowFields {
                rate: Some(*rate),
                min_agreement: Some(*min_agreement),
                min_samples: Some(*min_samples),
            });
        }
        Strategy::AbTest {
            split,
            duration: d,
            min_samples,
            alpha,
            auto_promote,
        } => {
            f.strategy = StrategyName::AbTest;
            f.ab_test = Some(AbTestFields {
                split_basis_points: Some(split.bp()),
                duration: d.map(duration),
                min_samples: Some(*min_samples),
                alpha: Some(*alpha),
                auto_promote: Some(*auto_promote),
            });
        }
    }
    f
}

/// `Progressing` (status) ↔ [`Phase::Progressing`].
pub fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Validating => "Validating",
        Phase::Progressing => "Progressing",
        Phase::Paused => "Paused",
        Phase::Promoted => "Promoted",
        Phase::Aborted => "Aborted",
    }
}

fn parse_phase(s: &str) -> Option<Phase> {
    [
        Phase::Validating,
        Phase::Progressing,
        Phase::Paused,
        Phase::Promoted,
        Phase::Aborted,
    ]
    .into_iter()
    .find(|p| phase_name(*p) == s)
}

/// Basis points as written in a status (beyond 10000: all traffic).
fn weight_of(bp: u32) -> Weight {
    Weight::from_bp(u64::from(bp)).unwrap_or(Weight::FULL)
}

/// The traffic policy a status carries.
pub fn policy_spec(p: &PolicyStatus) -> PolicySpec {
    let mut spec = PolicySpec::pinned(p.stable);
    spec.candidate = p.candidate.map(|version| CandidateSpec {
        version,
        weight: weight_of(p.candidate_weight_basis_points),
    });
    spec.sticky = p.sticky;
    spec.salt = p.salt.clone();
    spec.allow_list = p.allow_list.clone();
    spec.pins = match p.pins.as_deref() {
        Some("all") => PinMode::All,
        Some("allow-listed") => PinMode::AllowListed,
        _ => PinMode::Off,
    };
    spec.shadow = p.shadow.map(|version| ShadowSpec {
        version,
        rate: p.shadow_rate.unwrap_or(1.0),
    });
    spec.labels = p.labels.clone();
    spec.preview = p.preview;
    spec
}

/// A status's policy for `spec` at `revision`.
pub fn policy_status(spec: &PolicySpec, revision: u64) -> PolicyStatus {
    PolicyStatus {
        revision,
        stable: spec.stable,
        candidate: spec.candidate.as_ref().map(|c| c.version),
        candidate_weight_basis_points: spec.candidate.as_ref().map_or(0, |c| c.weight.bp()),
        sticky: spec.sticky,
        salt: spec.salt.clone(),
        allow_list: spec.allow_list.clone(),
        pins: match spec.pins {
            PinMode::Off => None,
            PinMode::AllowListed => Some("allow-listed".into()),
            PinMode::All => Some("all".into()),
        },
        shadow: spec.shadow.as_ref().map(|s| s.version),
        shadow_rate: spec.shadow.as_ref().map(|s| s.rate),
        labels: spec.labels.clone(),
        preview: spec.preview,
    }
}

/// The rollout a status describes (`None` before the first rollout, or
/// when the status is not readable as one).
pub fn rollout_of(model: &str, s: &ModelRolloutStatus) -> Option<Rollout> {
    let fields = s.rollout.as_ref()?;
    let spec = rollout_spec(fields).ok()?;
    let phase = parse_phase(s.phase.as_deref()?)?;
    let mut r = Rollout::new(
        s.rollout_id,
        model,
        s.stable?,
        spec,
        parse_time(s.started_at.as_deref()?)?,
    );
    r.phase = phase;
    r.step = s.step as usize;
    r.step_started_at = s
        .step_started_at
        .as_deref()
        .and_then(parse_time)
        .unwrap_or(r.started_at);
    r.revision_converged_at = s.revision_converged_at.as_deref().and_then(parse_time);
    r.inconclusive_since = s.inconclusive_since.as_deref().and_then(parse_time);
    r.last_analysis_at = s.last_analysis_at.as_deref().and_then(parse_time);
    r.failures = s.consecutive_failures;
    r.metric_errors = s.consecutive_metric_errors;
    r.last_analysis = s.last_analysis.clone();
    r.baseline = s.baseline.clone().and_then(|v| serde_json::from_value(v).ok());
    r.ab_result = s.ab_result.clone();
    r.reason = s.message.clone();
    if let Some(p) = &s.policy {
        r.revision = p.revision;
        r.salt = p.salt.clone();
        // the effective policy carries what the rollout keeps
        r.kept = crate::rollout::machine::Kept::of(&policy_spec(p), r.stable, r.candidate);
    }
    Some(r)
}

/// Writes rollout `r` (and the event explaining it) into status `s`: the
/// rollout's fields, its policy at its revision, the bounded history.
pub fn write_rollout(s: &mut ModelRolloutStatus, r: &Rollout, event: Option<&Event>) {
    s.rollout_id = r.id;
    s.phase = Some(phase_name(r.phase).to_string());
    s.step = r.step as u32;
    s.weight = Some(r.weight().to_string());
    s.stable = Some(r.stable);
    s.candidate = Some(r.candidate);
    s.message = r.reason.clone();
    s.rollout = Some(rollout_fields(&r.spec));
    s.started_at = Some(rfc3339(r.started_at));
    s.step_started_at = Some(rfc3339(r.step_started_at));
    s.revision_converged_at = r.revision_converged_at.map(rfc3339);
    s.inconclusive_since = r.inconclusive_since.map(rfc3339);
    s.last_analysis_at = r.last_analysis_at.map(rfc3339);
    s.consecutive_failures = r.failures;
    s.consecutive_metric_errors = r.metric_errors;
    s.last_analysis = r.last_analysis.clone();
    s.baseline = r.baseline.as_ref().and_then(|b| serde_json::to_value(b).ok());
    s.ab_result = r.ab_result.clone();
    // The revision only goes up: a policy that differs from the one in
    // force (say, a rollback's) gets a higher one even if the rollout's
    // own revision did not move.
    let policy = r.policy();
    match &mut s.policy {
        Some(p) if policy_spec(p) == policy => p.revision = p.revision.max(r.revision),
        old => {
            let revision = r.revision.max(old.as_ref().map_or(0, |p| p.revision + 1));
            *old = Some(policy_status(&policy, revision));
        }
    }
    if r.phase == Phase::Promoted {
        s.previous_stable = Some(r.stable);
    }
    if let Some(e) = event {
        push_history(s, r.id, e);
    }
}

/// Appends an event to the bounded history.
pub fn push_history(s: &mut ModelRolloutStatus, rollout_id: i64, e: &Event) {
    s.history.push(HistoryEntry {
        at: rfc3339(e.at),
        rollout_id,
        phase: phase_name(e.phase).to_string(),
        step: e.step as u32,
        weight_basis_points: e.weight.bp(),
        decision: e.decision.clone(),
        actor: e.actor.clone(),
    });
    let excess = s.history.len().saturating_sub(HISTORY);
    s.history.drain(..excess);
}

/// A history entry as an event of the audit log.
pub fn event_of(h: &HistoryEntry) -> Option<Event> {
    Some(Event {
        at: parse_time(&h.at)?,
        phase: parse_phase(&h.phase)?,
        step: h.step as usize,
        weight: weight_of(h.weight_basis_points),
        decision: h.decision.clone(),
        metrics: Value::Null,
        actor: h.actor.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_and_basis_points() {
        assert_eq!(parse_percent("10%").unwrap(), 1000);
        assert_eq!(parse_percent(" 2.5 %").unwrap(), 250);
        assert_eq!(parse_percent("0.01%").unwrap(), 1);
        assert_eq!(parse_percent("100%").unwrap(), 10_000);
        for bad in ["10", "101%", "-1%", "0.001%", "ten%", "%"] {
            assert!(parse_percent(bad).is_err(), "{bad}");
        }
        for bp in [0, 1, 10, 250, 1000, 1234, 9999, 10_000] {
            assert_eq!(parse_percent(&percent(bp)).unwrap(), bp, "{}", percent(bp));
        }
        assert_eq!(percent(250), "2.5%");
        assert_eq!(percent(1205), "12.05%");
    }

    #[test]
    fn a_time_read_back_from_a_status_writes_the_same_text() {
        let text = rfc3339(1_796_060_046.235);
        assert!(text.ends_with(".235Z"), "{text}");
        let read = parse_time(&text).unwrap();
        assert_eq!(rfc3339(read), text, "no drift through a status");
        assert_eq!(rfc3339(1_796_060_046.234_6), text, "to the nearest millisecond");
    }

    #[test]
    fn a_rollout_survives_the_round_trip_through_a_status() {
        let spec: RolloutSpec = serde_json::from_value(json!({
            "strategy": "canary", "candidate": 2,
            "steps": [{"weight": "10%", "bake": "3s"}, {"weight": "50%", "bake": "1m 30s"}, {"weight": "100%"}],
            "analysis": {"interval": "1s", "min_requests": 5, "error_limit": 3}
        }))
        .unwrap();
        assert_eq!(rollout_spec(&rollout_fields(&spec)).unwrap(), spec);
        let mut r = Rollout::new(4, "digits", 1, spec, 1_700_000_000.25);
        r.phase = Phase::Progressing;
        r.step = 1;
        r.step_started_at = 1_700_000_010.5;
        r.revision = 7;
        r.revision_converged_at = Some(1_700_000_011.75);
        r.failures = 1;
        r.metric_errors = 2;
        r.salt = "rollout-4-abc".into();
        r.last_analysis = Some(json!({"verdict": {"result": "pass"}}));
        let mut s = ModelRolloutStatus::default();
        write_rollout(&mut s, &r, None);
        assert_eq!(s.weight.as_deref(), Some("50%"));
        assert_eq!(s.policy.as_ref().unwrap().revision, 7);
        assert_eq!(rollout_of("digits", &s).unwrap(), r);
        assert_eq!(policy_spec(s.policy.as_ref().unwrap()), r.policy());
    }

    #[test]
    fn every_strategy_converts_both_ways() {
        for v in [
            json!({"strategy": "blue-green", "candidate": 3, "observe": "45s"}),
            json!({"strategy": "shadow", "candidate": 3, "rate": 0.5, "min_agreement": 0.9, "min_samples": 20,
                   "then_canary": [{"weight": "25%", "bake": "10s"}]}),
            json!({"strategy": "ab-test", "candidate": 3, "split": "30%", "duration": "1h", "alpha": 0.01,
                   "min_samples": 50, "auto_promote": true}),
        ] {
            let spec: RolloutSpec = serde_json::from_value(v).unwrap();
            assert_eq!(rollout_spec(&rollout_fields(&spec)).unwrap(), spec);
        }
    }

    #[test]
    fn weights_are_given_one_way_per_step() {
        let step = |weight: Option<&str>, bp: Option<u32>| StepFields {
            weight: weight.map(str::to_string),
            weight_basis_points: bp,
            bake: None,
        };
        let mut f = rollout_fields(
            &serde_json::from_value(json!({"strategy": "canary", "candidate": 2, "steps": [{"weight": 10}]}))
                .unwrap(),
        );
        f.steps = vec![step(Some("10%"), None), step(None, Some(5000))];
        let spec = rollout_spec(&f).unwrap();
        assert!(
            matches!(&spec.strategy, Strategy::Canary { steps } if steps[0].weight.bp() == 1000 && steps[1].weight.bp() == 5000)
        );
        f.steps = vec![step(Some("10%"), Some(1000))];
        assert!(rollout_spec(&f).unwrap_err().0.contains("exactly one"));
        f.steps = vec![step(Some("50%"), None), step(Some("10%"), None)];
        assert!(rollout_spec(&f).unwrap_err().0.contains("decrease"));
    }
}
