//! `switchyard validate`: the pre-deployment checks of one version, run
//! here (it loads the model itself; no server needed).

use std::process::ExitCode;
use std::sync::Arc;

use super::args::{Output, ValidateArgs};
use super::output::{emit, machine, Table};
use crate::repository::Repository;
use crate::rollout::validation;

/// `switchyard validate`: exit 0 when every check passes, 1 otherwise.
pub fn validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let lib = args
        .onnxruntime_lib
        .clone()
        .unwrap_or_else(crate::runtime::onnx::default_library_path);
    crate::runtime::onnx::init(&lib)?;
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
    let format = if args.json { Output::Json } else { args.output };
    if let Some(text) = machine(&serde_json::to_value(&report)?, format)? {
        emit(&text)?;
    } else {
        let mut text = format!(
            "validation of {} version {}{}: {}\n",
            report.model,
            report.version,
            against
                .map(|s| format!(" against version {s}"))
                .unwrap_or_default(),
            if report.passed { "PASSED" } else { "FAILED" }
        );
        let mut t = Table::new(&["check", "result", "value", "detail"]);
        for c in &report.checks {
            let result = if c.passed { "ok" } else { "FAIL" };
            t.row(vec![
                c.name.into(),
                result.into(),
                c.value.clone(),
                c.detail.clone(),
            ]);
        }
        text.push_str(&t.render());
        emit(&text)?;
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
