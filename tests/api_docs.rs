//! docs/api.md cannot drift from the code: every route the code defines is
//! listed there, every listed route is answered by a live server (not the
//! "no route" 404 nor a 405), and every default of the rollout spec table
//! equals what the server fills in.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{root, TestRepo, TestServer};
use serde_json::Value;

fn doc() -> String {
    std::fs::read_to_string(root().join("docs/api.md")).unwrap()
}

/// The table rows of the section `## {title}`: cells without backticks.
fn rows(doc: &str, title: &str) -> Vec<Vec<String>> {
    let start = doc
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("docs/api.md has no section '{title}'"));
    let section = &doc[start + 1..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    section[..end]
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| ---"))
        .skip(1) // the header row
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().trim_matches('`').to_string())
                .collect()
        })
        .collect()
}

/// Every path given to `.route(...)` under `dir`, outside the unit tests
/// (a file's `#[cfg(test)]` module comes last).
fn routes_in(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            routes_in(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let file = std::fs::read_to_string(&path).unwrap();
            let text = file.split("#[cfg(test)]").next().unwrap();
            for (i, _) in text.match_indices(".route(") {
                let rest = text[i + ".route(".len()..].trim_start();
                if let Some(lit) = rest.strip_prefix('"') {
                    out.push(lit[..lit.find('"').unwrap()].to_string());
                }
            }
        }
    }
}

#[test]
fn every_route_of_the_code_is_documented() {
    let doc = doc();
    let mut routes = Vec::new();
    routes_in(&root().join("src/api"), &mut routes);
    assert!(routes.len() > 30, "found only {routes:?}");
    let missing: Vec<&String> = routes
        .iter()
        .filter(|r| !doc.contains(&format!("`{r}`")))
        .collect();
    assert!(missing.is_empty(), "routes missing from docs/api.md: {missing:?}");
}

fn concrete(path: &str) -> String {
    path.replace("{model}", "digits")
        .replace("{version}", "1")
        .replace("{label}", "stable")
        .replace("{action}", "pause")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_answered() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start_with(repo.path(), |c| c.repository_api = true).await;
    let http = reqwest::Client::new();
    let doc = doc();
    let mut checked = 0;
    for (section, base) in [("Data listener", s.url("")), ("Admin listener", s.admin.clone())] {
        for row in rows(&doc, section) {
            let (method, path) = (row[0].as_str(), concrete(&row[1]));
            let method: reqwest::Method = method.parse().unwrap();
            let mut req = http.request(method.clone(), format!("{base}{path}"));
            if method != reqwest::Method::GET {
                req = req.header("content-type", "application/json").body("{}");
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            // an event stream does not end: its headers are the answer
            let streaming = resp
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            let body = if streaming {
                String::new()
            } else {
                resp.text().await.unwrap_or_default()
            };
            assert!(
                !(status == 404 && body.contains("no route")) && status != 405,
                "{section}: {method} {path} → {status} {body}"
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "{checked} routes");
    s.stop().await;
}

/// `{"a": {"b": 1}}` → `a.b = 1`; arrays are leaves.
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

fn written(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
fn the_spec_table_has_every_field_and_its_default() {
    let doc = doc();
    let table: BTreeMap<String, String> = rows(&doc, "Rollout spec")
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    let minimal = [
        r#"{"strategy": "canary", "candidate": 2, "steps": [{"weight": "10%"}]}"#,
        r#"{"strategy": "blue-green", "candidate": 2}"#,
        r#"{"strategy": "shadow", "candidate": 2}"#,
        r#"{"strategy": "ab-test", "candidate": 2}"#,
    ];
    let mut seen = 0;
    for text in minimal {
        let spec: switchyard::rollout::RolloutSpec = serde_json::from_str(text).unwrap();
        let mut fields = BTreeMap::new();
        flatten("", &serde_json::to_value(&spec).unwrap(), &mut fields);
        for (field, value) in fields {
            let documented = table
                .get(&field)
                .unwrap_or_else(|| panic!("docs/api.md's spec table lacks `{field}`"));
            if documented != "required" {
                assert_eq!(documented, &written(&value), "the default of `{field}`");
            }
            seen += 1;
        }
    }
    assert!(seen > 40, "{seen}");
}
