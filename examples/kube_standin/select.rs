//! The selector: which objects a list or watch asks for, from its
//! `labelSelector` and `fieldSelector` query parameters.

use serde_json::Value;

use crate::status::ApiError;

/// One requirement on a label or a field.
#[derive(Debug, Clone)]
enum Req {
    Exists(String),
    NotExists(String),
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed `labelSelector` and `fieldSelector`; every requirement must hold.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selector {
    labels: Vec<Req>,
    /// Field requirements, on `metadata.name` or `metadata.namespace` only
    /// (always `Eq` or `NotEq`).
    fields: Vec<Req>,
}

/// Splits on commas that are not inside parentheses (`k in (a,b),x=y`).
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().map(str::trim).filter(|p| !p.is_empty()).collect()
}

/// Parses `(a, b)` into its values.
fn set_values(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

/// One requirement: `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (..)`, `k notin (..)`.
fn parse_req(part: &str) -> Option<Req> {
    if let Some((k, v)) = part.split_once("!=") {
        return Some(Req::NotEq(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Some(Req::Eq(k.trim().into(), v.trim().into()));
    }
    if let Some((k, rest)) = part.split_once(" notin ") {
        return Some(Req::NotIn(k.trim().into(), set_values(rest)?));
    }
    if let Some((k, rest)) = part.split_once(" in ") {
        return Some(Req::In(k.trim().into(), set_values(rest)?));
    }
    if let Some(k) = part.strip_prefix('!') {
        return Some(Req::NotExists(k.trim().into()));
    }
    (!part.contains(char::is_whitespace)).then(|| Req::Exists(part.into()))
}

impl Selector {
    /// From the raw query values; 400 for what cannot be parsed or a field
    /// the stand-in cannot select on.
    pub(crate) fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Selector, ApiError> {
        let mut sel = Selector::default();
        for part in split_top(labels.unwrap_or("")) {
            let req = parse_req(part)
                .ok_or_else(|| ApiError::bad_request(format!("unable to parse requirement: {part:?}")))?;
            sel.labels.push(req);
        }
        for part in split_top(fields.unwrap_or("")) {
            let req = match parse_req(part) {
                Some(r @ (Req::Eq(..) | Req::NotEq(..))) => r,
                _ => return Err(ApiError::bad_request(format!("invalid field selector: {part:?}"))),
            };
            let (Req::Eq(f, _) | Req::NotEq(f, _)) = &req else {
                unreachable!()
            };
            if f != "metadata.name" && f != "metadata.namespace" {
                return Err(ApiError::bad_request(format!("field label not supported: {f}")));
            }
            sel.fields.push(req);
        }
        Ok(sel)
    }

    /// The name a `metadata.name=X` field selector pins, which RBAC treats
    /// as the request's object name.
    pub(crate) fn pinned_name(&self) -> Option<&str> {
        self.fields.iter().find_map(|r| match r {
            Req::Eq(f, v) if f == "metadata.name" => Some(v.as_str()),
            _ => None,
        })
    }

    /// Whether `obj` is selected.
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let field = |k: &str| match k {
            "metadata.name" => obj.pointer("/metadata/name").and_then(Value::as_str),
            _ => obj.pointer("/metadata/namespace").and_then(Value::as_str),
        };
        self.labels.iter().all(|r| holds(r, &label)) && self.fields.iter().all(|r| holds(r, &field))
    }
}

fn holds<'a>(req: &Req, value_of: &impl Fn(&str) -> Option<&'a str>) -> bool {
    match req {
        Req::Exists(k) => value_of(k).is_some(),
        Req::NotExists(k) => value_of(k).is_none(),
        Req::Eq(k, v) => value_of(k) == Some(v.as_str()),
        Req::NotEq(k, v) => value_of(k) != Some(v.as_str()),
        Req::In(k, vs) => value_of(k).is_some_and(|x| vs.iter().any(|v| v == x)),
        Req::NotIn(k, vs) => value_of(k).is_none_or(|x| vs.iter().all(|v| v != x)),
    }
}
