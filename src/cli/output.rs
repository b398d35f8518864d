//! Printing for people and for scripts: aligned tables, relative times,
//! percents, and JSON or YAML on request. Everything goes to standard
//! output through [`emit`], which treats a closed pipe (`| head -1`) as the
//! reader having seen enough rather than an error.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::args::Output;

/// Writes `text` to standard output. A closed pipe ends the output quietly.
pub fn emit(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// `value` as the machine formats print it (pretty JSON or YAML), with a
/// trailing newline; `None` for text.
pub fn machine(value: &Value, format: Output) -> anyhow::Result<Option<String>> {
    Ok(match format {
        Output::Text => None,
        Output::Json => Some(serde_json::to_string_pretty(value)? + "\n"),
        Output::Yaml => Some(serde_yaml_ng::to_string(value)?),
    })
}

/// Columns padded to their widest cell, two spaces apart; the last column
/// is not padded.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with a header row (written in capitals, as kubectl does).
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| h.to_uppercase()).collect()],
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// True when only the header is there.
    pub fn is_empty(&self) -> bool {
        self.rows.len() <= 1
    }

    /// The table as lines of text.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Seconds since the Unix epoch now.
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A duration in seconds for people: `45s`, `3m`, `2h5m`, `3d`.
pub fn span(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 if s % 3600 >= 60 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// A past moment (seconds since the Unix epoch) relative to `now`: `2m ago`.
pub fn ago(at: f64, now: f64) -> String {
    if now - at < 1.0 {
        "just now".into()
    } else {
        format!("{} ago", span(now - at))
    }
}

/// A share of traffic in basis points as a percent: `10%`, `0.5%`.
pub fn percent_bp(bp: f64) -> String {
    let p = bp / 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{}%", p.round() as i64)
    } else {
        format!("{}%", (p * 100.0).round() / 100.0)
    }
}

/// A traffic policy in one line: `stable 1, candidate 2 at 10% (sticky),
/// shadow 3 at 50% of requests, allow-list 2 users, pins off`.
pub fn policy_line(policy: &Value) -> String {
    if policy.is_null() {
        return "none".into();
    }
    let mut parts = vec![format!("stable {}", policy["stable"])];
    if let Some(c) = policy.get("candidate").filter(|c| !c.is_null()) {
        let how = if policy["sticky"].as_bool().unwrap_or(true) {
            "sticky"
        } else {
            "random"
        };
        parts.push(format!("candidate {} at {} ({how})", c["version"], weight_of(c)));
    }
    if let Some(s) = policy.get("shadow").filter(|s| !s.is_null()) {
        let rate = s["rate"].as_f64().unwrap_or(0.0);
        parts.push(format!(
            "shadow {} at {} of requests",
            s["version"],
            percent_bp(rate * 10_000.0)
        ));
    }
    if let Some(p) = policy.get("preview").filter(|p| !p.is_null()) {
        parts.push(format!("preview {p}"));
    }
    let allow = policy["allow_list"].as_array().map_or(0, Vec::len);
    if allow > 0 {
        parts.push(format!(
            "allow-list {allow} user{}",
            if allow == 1 { "" } else { "s" }
        ));
    }
    if let Some(pins) = policy["pins"].as_str().filter(|p| *p != "off") {
        parts.push(format!("pins {pins}"));
    }
    if let Some(labels) = policy["labels"].as_object().filter(|l| !l.is_empty()) {
        let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.push(format!("labels {}", l.join(" ")));
    }
    parts.join(", ")
}

/// A candidate's weight as the admin API writes it: `weight` in percent
/// (or a `"10%"` string), else `weight_bp`.
fn weight_of(c: &Value) -> String {
    match (&c["weight"], &c["weight_bp"]) {
        (Value::String(s), _) => s.clone(),
        (Value::Number(n), _) => format!("{}%", n),
        (_, Value::Number(bp)) => percent_bp(bp.as_f64().unwrap_or(0.0)),
        _ => "?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_times_read_naturally() {
        let mut t = Table::new(&["when", "phase", "decision"]);
        t.row(vec!["2m ago".into(), "progressing".into(), "advanced".into()]);
        t.row(vec![
            "just now".into(),
            "paused".into(),
            "paused by an admin".into(),
        ]);
        assert_eq!(
            t.render(),
            "WHEN      PHASE        DECISION\n\
             2m ago    progressing  advanced\n\
             just now  paused       paused by an admin\n"
        );
        assert_eq!(span(42.0), "42s");
        assert_eq!(span(150.0), "2m");
        assert_eq!(span(3600.0 + 300.0), "1h5m");
        assert_eq!(span(7200.0), "2h");
        assert_eq!(span(3.0 * 86_400.0), "3d");
        assert_eq!(ago(100.0, 100.4), "just now");
        assert_eq!(ago(100.0, 220.0), "2m ago");
        assert_eq!(percent_bp(1000.0), "10%");
        assert_eq!(percent_bp(50.0), "0.5%");
        assert_eq!(percent_bp(1.0), "0.01%");
    }

    #[test]
    fn policies_read_as_sentences() {
        let p = serde_json::json!({
            "stable": 1, "candidate": {"version": 2, "weight": 10}, "sticky": true,
            "allow_list": ["alice"], "pins": "allow-listed",
            "shadow": {"version": 3, "rate": 0.5}, "labels": {"gold": 1}
        });
        assert_eq!(
            policy_line(&p),
            "stable 1, candidate 2 at 10% (sticky), shadow 3 at 50% of requests, \
             allow-list 1 user, pins allow-listed, labels gold=1"
        );
        assert_eq!(policy_line(&serde_json::json!({"stable": 4})), "stable 4");
    }
}
