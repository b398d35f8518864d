//! A *spec file* is a rollout spec as people write it: JSON, TOML or YAML.
//! The format is told apart by content unless the caller names it, and an
//! error names the field at fault and, where it can be found, its line.

use super::spec::RolloutSpec;

/// The formats a spec file may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecFormat {
    Json,
    Toml,
    Yaml,
}

impl SpecFormat {
    /// The format's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            SpecFormat::Json => "JSON",
            SpecFormat::Toml => "TOML",
            SpecFormat::Yaml => "YAML",
        }
    }

    /// The format a `Content-Type` names, if any.
    pub fn from_content_type(content_type: &str) -> Option<SpecFormat> {
        let t = content_type.to_ascii_lowercase();
        if t.contains("json") {
            Some(SpecFormat::Json)
        } else if t.contains("toml") {
            Some(SpecFormat::Toml)
        } else if t.contains("yaml") || t.contains("yml") {
            Some(SpecFormat::Yaml)
        } else {
            None
        }
    }
}

/// Why a spec file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", format.name(), line.map(|l| format!(" spec, line {l}")).unwrap_or_else(|| " spec".into()))]
pub struct SpecError {
    pub format: SpecFormat,
    /// 1-based, when the field at fault could be found.
    pub line: Option<usize>,
    pub message: String,
}

/// Reads a spec from `text` in `format`, or in the format its content shows.
pub fn parse(text: &str, format: Option<SpecFormat>) -> Result<RolloutSpec, SpecError> {
    let spec = match format {
        Some(f) => parse_as(text, f)?,
        None => detect(text)?,
    };
    spec.check().map_err(|e| SpecError {
        format: format.unwrap_or_else(|| guess(text)),
        line: None,
        message: e.to_string(),
    })?;
    Ok(spec)
}

/// JSON when the text opens with `{`; otherwise TOML, then YAML; when both
/// fail, the error of the one the text looks like.
fn detect(text: &str) -> Result<RolloutSpec, SpecError> {
    if text.trim_start().starts_with('{') {
        return parse_as(text, SpecFormat::Json);
    }
    let toml = parse_as(text, SpecFormat::Toml);
    if toml.is_ok() {
        return toml;
    }
    let yaml = parse_as(text, SpecFormat::Yaml);
    if yaml.is_ok() {
        return yaml;
    }
    if guess(text) == SpecFormat::Toml {
        toml
    } else {
        yaml
    }
}

/// The format the text looks like: TOML when a line is a `[table]` or a
/// `key = value`, else YAML.
fn guess(text: &str) -> SpecFormat {
    if text.trim_start().starts_with('{') {
        return SpecFormat::Json;
    }
    let toml_line = |l: &str| {
        let l = l.trim();
        l.starts_with('[')
            || l.split_once('=').is_some_and(|(k, _)| {
                let k = k.trim();
                !k.is_empty() && k.chars().all(|c| c.is_alphanumeric() || "_-.\"".contains(c))
            })
    };
    if text.lines().any(toml_line) {
        SpecFormat::Toml
    } else {
        SpecFormat::Yaml
    }
}

fn parse_as(text: &str, format: SpecFormat) -> Result<RolloutSpec, SpecError> {
    let fail = |line: Option<usize>, message: String| {
        let line = locate(text, &message).or(line);
        SpecError {
            format,
            line,
            message,
        }
    };
    match format {
        SpecFormat::Json => serde_json::from_str(text).map_err(|e| {
            let line = (e.line() > 0).then_some(e.line());
            fail(line, strip_position(&e.to_string()))
        }),
        SpecFormat::Toml => toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            fail(line, e.message().trim().to_string())
        }),
        SpecFormat::Yaml => serde_yaml_ng::from_str(text).map_err(|e| {
            let line = e.location().map(|l| l.line());
            fail(line, strip_position(&e.to_string()))
        }),
    }
}

/// serde_json and serde_yaml append " at line L column C": the error
/// carries the line separately.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// The 1-based line of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// The line of the field a semantic error names: `unknown field `x``,
/// `missing field `x`` (none: it is absent), or a path `a[1].b: …` (the
/// second `b` after `a`).
fn locate(text: &str, message: &str) -> Option<usize> {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let key = rest.split('`').next()?;
        return find_key(text, key, 0, 0);
    }
    let (path, _) = message.split_once(": ")?;
    if path.contains(' ') || path.is_empty() {
        return None;
    }
    let mut line = 0;
    let mut skip = 0;
    for segment in path.split('.') {
        let (key, index) = match segment.split_once('[') {
            Some((k, i)) => (k, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        if !key.is_empty() {
            line = find_key(text, key, line, skip)?;
        }
        skip = index.unwrap_or(0);
    }
    Some(line)
}

/// The line (1-based) of the `nth` (0-based) occurrence of `key` as a key
/// (followed by `=` or `:`, or quoted) at or after line `from`.
fn find_key(text: &str, key: &str, from: usize, nth: usize) -> Option<usize> {
    let quoted = format!("\"{key}\"");
    let mut seen = 0;
    for (i, line) in text.lines().enumerate().skip(from.saturating_sub(1)) {
        let mut at = 0;
        while let Some(found) = line[at..].find(key) {
            let start = at + found;
            let end = start + key.len();
            let after = line[end..].trim_start().trim_start_matches('"').trim_start();
            let before = line[..start].chars().last();
            let quoted_here = line[..start].ends_with('"') && line[end..].starts_with('"');
            let bare = (after.starts_with('=') || after.starts_with(':'))
                && before.is_none_or(|c| !c.is_alphanumeric() && c != '_');
            if bare || (quoted_here && line.contains(&quoted)) {
                if seen == nth {
                    return Some(i + 1);
                }
                seen += 1;
            }
            at = end;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = "strategy = \"canary\"\ncandidate = 2\nsteps = [{ weight = 10, bake = \"30s\" }, { weight = \"50%\" }]\n\n[analysis]\ninterval = \"10s\"\n";

    #[test]
    fn the_format_is_told_by_content_whatever_the_file_is_called() {
        let spec = parse(TOML, None).unwrap();
        assert_eq!(spec.candidate, 2);
        let yaml =
            "strategy: canary\ncandidate: 2\nsteps:\n  - weight: 10%\n    bake: 30s\n  - weight: 100\n";
        assert_eq!(parse(yaml, None).unwrap().candidate, 2);
        let json = r#"{"strategy": "canary", "candidate": 2, "steps": [{"weight": "10%"}]}"#;
        assert_eq!(parse(json, None).unwrap().candidate, 2);
        assert_eq!(
            parse(TOML, Some(SpecFormat::Toml)).unwrap(),
            parse(TOML, None).unwrap()
        );
    }

    #[test]
    fn errors_name_the_field_and_its_line() {
        let typo = TOML.replace("steps =", "stpes =");
        let e = parse(&typo, None).unwrap_err();
        assert_eq!((e.format, e.line), (SpecFormat::Toml, Some(3)), "{e}");
        assert!(e.message.contains("unknown field `stpes`"), "{e}");
        assert!(e.message.contains("steps"), "lists the expected fields: {e}");

        let bad_weight = TOML.replace("weight = \"50%\"", "weight = \"150%\"");
        let e = parse(&bad_weight, None).unwrap_err();
        assert!(e.message.starts_with("steps[1].weight"), "{e}");
        assert!(e.message.contains("150"), "{e}");
        assert_eq!(e.line, Some(3), "{e}");

        let yaml = "strategy: canary\ncandidate: 2\nsteps:\n  - weight: 10\n  - weight: 5000\n";
        let e = parse(yaml, None).unwrap_err();
        assert_eq!((e.format, e.line), (SpecFormat::Yaml, Some(5)), "{e}");

        let e = parse("strategy = \"canary\"\ncandidate = 2\n", None).unwrap_err();
        assert!(e.message.contains("missing field `steps`"), "{e}");
        let e = parse(
            "{\"strategy\": \"canary\",\n \"candidate\": \"two\", \"steps\": []}",
            None,
        )
        .unwrap_err();
        assert!(e.message.contains("candidate"), "{e}");
        assert_eq!(e.line, Some(2), "{e}");
        let e = parse(&TOML.replace("\"canary\"", "\"canery\""), None).unwrap_err();
        assert!(e.message.contains("unknown strategy `canery`"), "{e}");
    }
}
