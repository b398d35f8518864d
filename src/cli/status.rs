//! `switchyard status [MODEL]`: every model's versions and traffic policy,
//! and its rollout when it has one.

use std::process::ExitCode;

use serde_json::{json, Value};

use super::args::StatusArgs;
use super::client::Admin;
use super::output::{emit, machine, now_secs, policy_line, Table};
use super::rollout::rollout_text;

/// `switchyard status`.
pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args.admin);
    let models: Vec<Value> = match &args.model {
        Some(m) => vec![admin.get(&format!("/admin/v1/models/{m}")).await?],
        None => admin.get("/admin/v1/models").await?["models"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
    };
    let mut rollouts = Vec::new();
    for model in &models {
        let name = model["name"].as_str().unwrap_or("");
        // 404 = the model has no rollout yet
        let r = admin.get(&format!("/admin/v1/models/{name}/rollout")).await.ok();
        rollouts.push(r);
    }
    let value = json!({
        "models": models.iter().zip(&rollouts).map(|(m, r)| {
            let mut m = m.clone();
            m["rollout"] = r.clone().unwrap_or(Value::Null);
            m
        }).collect::<Vec<_>>()
    });
    if let Some(text) = machine(&value, args.admin.format())? {
        emit(&text)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["model", "versions", "traffic"]);
    for m in &models {
        let versions: Vec<String> = m["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| {
                let state = v["state"].as_str().unwrap_or("?");
                match v["reason"].as_str().filter(|r| !r.is_empty()) {
                    Some(_) => format!("{} {state} (see --output json)", v["version"]),
                    None => format!("{} {state}", v["version"]),
                }
            })
            .collect();
        let traffic = match m["error"].as_str() {
            Some(e) => format!("unavailable: {e}"),
            None => policy_line(&m["policy"]),
        };
        table.row(vec![
            m["name"].as_str().unwrap_or("?").to_string(),
            versions.join(", "),
            traffic,
        ]);
    }
    let mut text = table.render();
    let now = now_secs();
    for r in rollouts.iter().flatten() {
        text.push('\n');
        text.push_str(&rollout_text(r, now));
    }
    emit(&text)?;
    Ok(ExitCode::SUCCESS)
}
