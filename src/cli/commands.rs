//! The client subcommands: `validate` (offline, loads the model itself) and
//! `rollout` / `status` (talk to a running server's admin API).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use serde_json::Value;

use super::args::{AdminArgs, RolloutArgs, RolloutCommand, ValidateArgs};
use super::client::Admin;
use crate::repository::Repository;
use crate::rollout::validation;

/// `switchyard validate`: exit 0 when every check passes, 1 otherwise.
pub fn validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let lib = args
        .onnxruntime_lib
        .clone()
        .unwrap_or_else(crate::runtime::onnx::default_library_path);
    crate::runtime::onnx::init(&lib).map_err(anyhow::Error::msg)?;
    let repo = Arc::new(Repository::new(args.model_repository.clone()));
    repo.load_model(&args.model);
    let against = args.against.or_else(|| {
        repo.snapshot()
            .models
            .get(&args.model)
            .and_then(|m| m.default_version())
            .filter(|&v| v != args.version)
    });
    let report = validation::validate(&repo, &args.model, args.version, against);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "validation of {} version {}{}: {}",
            report.model,
            report.version,
            against
                .map(|s| format!(" against version {s}"))
                .unwrap_or_default(),
            if report.passed { "PASSED" } else { "FAILED" }
        );
        for c in &report.checks {
            println!(
                "  {:<10} {:<4}  {:<16} {}",
                c.name,
                if c.passed { "ok" } else { "FAIL" },
                c.value,
                c.detail
            );
        }
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_rollout(v: &Value) {
    println!(
        "rollout {} of {}: {} {} → {}  phase {}  step {}  candidate weight {}%",
        v["id"],
        v["model"].as_str().unwrap_or(""),
        v["strategy"]["strategy"].as_str().unwrap_or(""),
        v["stable"],
        v["candidate"],
        v["phase"].as_str().unwrap_or(""),
        v["step"],
        v["weight"].as_f64().unwrap_or(0.0) / 100.0
    );
    if let Some(r) = v["reason"].as_str() {
        println!("  reason: {r}");
    }
    if !v["last_analysis"].is_null() {
        println!("  last analysis: {}", v["last_analysis"]["verdict"]);
    }
    if !v["ab_result"].is_null() {
        println!("  a/b: {}", v["ab_result"]);
    }
}

/// `switchyard rollout ...`.
pub async fn rollout(args: RolloutArgs) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    let admin = Admin::new(&args.admin);
    let m = |model: &str, rest: &str| format!("/admin/v1/models/{model}{rest}");
    let value = match &args.command {
        RolloutCommand::Start { model, spec } => {
            let text =
                std::fs::read_to_string(spec).with_context(|| format!("cannot read {}", spec.display()))?;
            let content_type = if spec.extension().is_some_and(|e| e == "toml") {
                "application/toml"
            } else {
                "application/json"
            };
            admin
                .call(Method::POST, &m(model, "/rollouts"), Some((text, content_type)))
                .await?
        }
        RolloutCommand::Status { model } => admin.call(Method::GET, &m(model, "/rollout"), None).await?,
        RolloutCommand::Promote { model, full } => {
            let action = if *full { "promote-full" } else { "promote" };
            admin
                .call(Method::POST, &m(model, &format!("/rollout/{action}")), None)
                .await?
        }
        RolloutCommand::Pause { model } => {
            admin
                .call(Method::POST, &m(model, "/rollout/pause"), None)
                .await?
        }
        RolloutCommand::Resume { model } => {
            admin
                .call(Method::POST, &m(model, "/rollout/resume"), None)
                .await?
        }
        RolloutCommand::Abort { model } => {
            admin
                .call(Method::POST, &m(model, "/rollout/abort"), None)
                .await?
        }
        RolloutCommand::Retry { model } => {
            admin
                .call(Method::POST, &m(model, "/rollout/retry"), None)
                .await?
        }
        RolloutCommand::Rollback { model } => admin.call(Method::POST, &m(model, "/rollback"), None).await?,
        RolloutCommand::Events { model } => admin.call(Method::GET, &m(model, "/events"), None).await?,
    };
    if args.admin.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    match &args.command {
        RolloutCommand::Rollback { model } => {
            println!(
                "{model}: rolled back; stable is version {}",
                value["policy"]["stable"]
            );
        }
        RolloutCommand::Events { .. } => {
            for e in value["events"].as_array().into_iter().flatten() {
                println!(
                    "{:>14.3}  rollout {}  {:<11} step {}  weight {:>5}  {:<10} {}",
                    e["at"].as_f64().unwrap_or(0.0),
                    e["rollout"],
                    e["phase"].as_str().unwrap_or(""),
                    e["step"],
                    e["weight"],
                    e["actor"].as_str().unwrap_or(""),
                    e["decision"].as_str().unwrap_or("")
                );
            }
        }
        _ => print_rollout(&value),
    }
    Ok(ExitCode::SUCCESS)
}

/// `switchyard status`.
pub async fn status(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args);
    let value = admin.call(reqwest::Method::GET, "/admin/v1/models", None).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    for model in value["models"].as_array().into_iter().flatten() {
        let name = model["name"].as_str().unwrap_or("");
        let versions: Vec<String> = model["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| format!("{}:{}", v["version"], v["state"].as_str().unwrap_or("")))
            .collect();
        println!(
            "{name}  versions {}  policy {}",
            versions.join(" "),
            model["policy"]
        );
        if let Ok(r) = admin
            .call(
                reqwest::Method::GET,
                &format!("/admin/v1/models/{name}/rollout"),
                None,
            )
            .await
        {
            print!("  ");
            print_rollout(&r);
        }
    }
    Ok(ExitCode::SUCCESS)
}
