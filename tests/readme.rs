//! README's "Roll out a new model" walkthrough, run literally: the commands
//! of its first code block, line by line, in a directory laid out like a
//! checkout after `make run` (target/release/switchyard, models/,
//! examples/), against a real server. The server listens on free ports;
//! SWITCHYARD_ADMIN_URL and SWITCHYARD_URL point the commands at it.

mod common;

use std::path::Path;
use std::process::Command;

use common::{root, TestRepo, TestServer};

/// The commands of the first ```sh block after `heading`.
fn commands(heading: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = &readme[readme
        .find(heading)
        .unwrap_or_else(|| panic!("README has no {heading}"))..];
    let block = section
        .split("```sh\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// A directory that looks like the checkout the README speaks from.
fn checkout(repo: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("target/release")).unwrap();
    let link = |from: &Path, to: &str| std::os::unix::fs::symlink(from, dir.path().join(to)).unwrap();
    link(
        Path::new(env!("CARGO_BIN_EXE_switchyard")),
        "target/release/switchyard",
    );
    link(repo, "models");
    link(&root().join("examples"), "examples");
    link(&root().join(".onnxruntime"), ".onnxruntime");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollout_walkthrough_completes_as_written() {
    let cmds = commands("## Roll out a new model");
    assert!(cmds.iter().any(|c| c.contains("switchyard load")), "{cmds:?}");
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start(repo.path()).await;
    let dir = checkout(repo.path());
    let mut outputs = Vec::new();
    for cmd in &cmds {
        let out = Command::new("bash")
            .args(["-c", cmd])
            .current_dir(dir.path())
            .env("SWITCHYARD_ADMIN_URL", &s.admin)
            .env("SWITCHYARD_URL", &s.base)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "`{cmd}` failed:\n{stdout}\n{stderr}");
        eprintln!("$ {cmd}\n{stdout}");
        outputs.push(stdout);
    }
    // the walkthrough ends with the candidate promoted, and says so
    let status = &outputs[outputs.len() - 2];
    assert!(
        status
            .lines()
            .any(|l| l.trim_start().starts_with("phase") && l.contains("promoted")),
        "{status}"
    );
    let events = outputs.last().unwrap();
    for step in [
        "validation passed",
        "advanced to step 2 of 3 (50%)",
        "promoted: version 2 is stable",
    ] {
        assert!(events.contains(step), "events lack `{step}`:\n{events}");
    }
}
