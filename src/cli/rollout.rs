//! `switchyard rollout ...`: start, inspect and steer a model's rollout
//! through the admin API, printed for people (tables, percents, relative
//! times) or as the API's JSON/YAML.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use super::args::{RolloutArgs, RolloutCommand, SpecFormat};
use super::client::Admin;
use super::output::{ago, emit, machine, now_secs, policy_line, span, Table};
use crate::rollout::spec_file::{self, SpecFormat as FileFormat};

/// `switchyard rollout ...`.
pub async fn rollout(args: RolloutArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args.admin);
    let format = args.admin.format();
    let m = |model: &str, rest: &str| format!("/admin/v1/models/{model}{rest}");
    let value = match &args.command {
        RolloutCommand::Start { model, spec, format } => {
            let body = read_spec(spec, *format)?;
            admin.post(&m(model, "/rollouts"), Some(&body)).await?
        }
        RolloutCommand::Status { model } => admin.get(&m(model, "/rollout")).await?,
        RolloutCommand::Promote { model, full } => {
            let action = if *full { "promote-full" } else { "promote" };
            admin.post(&m(model, &format!("/rollout/{action}")), None).await?
        }
        RolloutCommand::Pause { model } => admin.post(&m(model, "/rollout/pause"), None).await?,
        RolloutCommand::Resume { model } => admin.post(&m(model, "/rollout/resume"), None).await?,
        RolloutCommand::Abort { model } => admin.post(&m(model, "/rollout/abort"), None).await?,
        RolloutCommand::Retry { model } => admin.post(&m(model, "/rollout/retry"), None).await?,
        RolloutCommand::Rollback { model } => admin.post(&m(model, "/rollback"), None).await?,
        RolloutCommand::Events { model, limit } => {
            let mut v = admin.get(&m(model, "/events")).await?;
            if let (Some(n), Some(events)) = (limit, v["events"].as_array_mut()) {
                let drop = events.len().saturating_sub(*n);
                events.drain(..drop);
            }
            v
        }
    };
    if let Some(text) = machine(&value, format)? {
        emit(&text)?;
        return Ok(ExitCode::SUCCESS);
    }
    let text = match &args.command {
        RolloutCommand::Rollback { model } => format!(
            "{model}: rolled back; all traffic on version {}\n",
            value["policy"]["stable"]
        ),
        RolloutCommand::Events { .. } => events_text(&value),
        _ => rollout_text(&value, now_secs()),
    };
    emit(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// Reads a spec file (`-` = standard input) and checks it here, so an error
/// names the file's own line; the server gets it as JSON.
fn read_spec(path: &std::path::Path, format: Option<SpecFormat>) -> anyhow::Result<Value> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read the spec from standard input")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    let format = format.map(|f| match f {
        SpecFormat::Json => FileFormat::Json,
        SpecFormat::Toml => FileFormat::Toml,
        SpecFormat::Yaml => FileFormat::Yaml,
    });
    let spec = spec_file::parse(&text, format)
        .with_context(|| format!("{} is not a valid rollout spec", path.display()))?;
    Ok(serde_json::to_value(spec)?)
}

/// A rollout as a few aligned lines.
pub(super) fn rollout_text(r: &Value, now: f64) -> String {
    let strategy = r["strategy"]["strategy"].as_str().unwrap_or("?");
    let phase = r["phase"].as_str().unwrap_or("?");
    let mut lines = vec![format!(
        "rollout {} of {}: {strategy}, version {} → {}",
        r["id"],
        r["model"].as_str().unwrap_or("?"),
        r["stable"],
        r["candidate"]
    )];
    let mut field = |name: &str, value: String| lines.push(format!("  {name:<10}{value}"));
    let steps = r["steps"]
        .as_u64()
        .map(|n| format!(" of {n}"))
        .unwrap_or_default();
    let weight = r["weight"].as_str().unwrap_or("0%");
    field(
        "phase",
        match phase {
            "progressing" | "paused" => format!(
                "{phase}, step {}{steps}, candidate at {weight}",
                r["step"].as_u64().unwrap_or(0) + 1
            ),
            _ => format!("{phase}, candidate at {weight}"),
        },
    );
    if let Some(left) = r["bake_left_secs"].as_f64() {
        field(
            "bake",
            if left > 0.0 {
                format!("{} left", span(left))
            } else {
                "done".into()
            },
        );
    }
    if let Some(at) = r["started_at"].as_f64() {
        field("started", ago(at, now));
    }
    if let Some(reason) = r["reason"].as_str() {
        field("reason", reason.to_string());
    }
    match (r["last_analysis_at"].as_f64(), r["last_analysis"].get("verdict")) {
        (Some(at), Some(v)) if !v.is_null() => field(
            "analysis",
            format!(
                "{}: {} {}",
                ago(at, now),
                v["result"].as_str().unwrap_or("?"),
                v["detail"].as_str().unwrap_or("")
            ),
        ),
        (Some(at), _) => field("analysis", format!("{}: no verdict yet", ago(at, now))),
        (None, _) if phase == "validating" => field("analysis", "validating the candidate".into()),
        (None, _) => field("analysis", "none yet".into()),
    }
    if let Some(ab) = r.get("ab_result").filter(|v| !v.is_null()) {
        let res = &ab["result"];
        field(
            "a/b",
            format!(
                "{} (p = {}, means {} vs {})",
                ab["winner"].as_str().or(ab["status"].as_str()).unwrap_or("?"),
                res["p_value"].as_f64().map_or("?".into(), |p| format!("{p:.4}")),
                res["mean_stable"]
                    .as_f64()
                    .map_or("?".into(), |m| format!("{m:.4}")),
                res["mean_candidate"]
                    .as_f64()
                    .map_or("?".into(), |m| format!("{m:.4}")),
            ),
        );
    }
    if !r["policy"].is_null() {
        field("traffic", policy_line(&r["policy"]));
    }
    lines.join("\n") + "\n"
}

/// The audit log as a table, oldest first.
fn events_text(v: &Value) -> String {
    let now = now_secs();
    let mut t = Table::new(&["when", "rollout", "phase", "step", "weight", "actor", "decision"]);
    for e in v["events"].as_array().into_iter().flatten() {
        t.row(vec![
            e["at"].as_f64().map_or("?".into(), |at| ago(at, now)),
            e["rollout"].to_string(),
            e["phase"].as_str().unwrap_or("?").to_string(),
            e["step"].as_u64().map_or("-".into(), |s| (s + 1).to_string()),
            e["weight"].as_str().unwrap_or("?").to_string(),
            e["actor"].as_str().unwrap_or("?").to_string(),
            e["decision"].as_str().unwrap_or("").to_string(),
        ]);
    }
    if t.is_empty() {
        format!("{}: no rollout events yet\n", v["model"].as_str().unwrap_or("?"))
    } else {
        t.render()
    }
}
