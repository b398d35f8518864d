//! The Kubernetes request: how one HTTP request on a Kubernetes path is
//! named in RBAC terms (verb, group, resource, subresource), logged, gated
//! by an injected outage, and dispatched to the store or a watch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::kinds::{KindInfo, Target, KINDS};
use crate::select::Selector;
use crate::status::ApiError;
use crate::store::WatchFrom;
use crate::watch::{self, WatchRequest};
use crate::App;

/// Largest request body taken.
const MAX_BODY: usize = 8 << 20;

/// A watch without `timeoutSeconds` ends after this long (the real server
/// picks 30 to 60 minutes).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

type Params = HashMap<String, String>;

/// A Go-style boolean query value (`true`, `1`, `t`, ...).
fn flag(q: &Params, name: &str) -> bool {
    matches!(
        q.get(name).map(String::as_str),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True")
    )
}

/// The RBAC verb of a request on `target`.
fn rbac_verb(method: &Method, target: &Target, q: &Params) -> &'static str {
    let named = target.name.is_some();
    match *method {
        Method::GET if flag(q, "watch") => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

/// The fallback handler: every path that is not a `/_standin/` control.
pub(crate) async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let q: Params = Query::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let target = Target::parse(&path);
    let mut entry = json!({
        "verb": "get", "group": "", "version": "", "resource": "", "subresource": "",
        "namespace": "", "name": "", "path": path, "query": query,
    });
    if let Some(t) = &target {
        let name = t.name.clone().or_else(|| {
            let sel = Selector::parse(None, q.get("fieldSelector").map(String::as_str)).ok()?;
            sel.pinned_name().map(str::to_string)
        });
        entry["verb"] = json!(rbac_verb(&parts.method, t, &q));
        entry["group"] = json!(t.group);
        entry["version"] = json!(t.version);
        entry["resource"] = json!(t.plural);
        entry["subresource"] = json!(t.subresource.clone().unwrap_or_default());
        entry["namespace"] = json!(t.namespace.clone().unwrap_or_default());
        entry["name"] = json!(name.unwrap_or_default());
    }
    let resp = if app.is_down() {
        ApiError::unavailable().into_response()
    } else {
        match axum::body::to_bytes(body, MAX_BODY).await {
            Err(e) => ApiError::bad_request(format!("reading the body: {e}")).into_response(),
            Ok(bytes) => match &target {
                Some(t) => dispatch(&app, t, &parts.method, &parts.headers, &q, &bytes)
                    .unwrap_or_else(IntoResponse::into_response),
                None => discovery(&parts.method, &path).unwrap_or_else(IntoResponse::into_response),
            },
        }
    };
    entry["code"] = json!(resp.status().as_u16());
    entry["ms"] = json!(app.started.elapsed().as_millis() as u64);
    app.log.lock().push(entry);
    resp
}

/// Parses the body as JSON.
fn json_body(bytes: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("decoding the body: {e}")))
}

fn ok(code: u16, v: Value) -> Response {
    (StatusCode::from_u16(code).unwrap_or(StatusCode::OK), Json(v)).into_response()
}

/// Runs one resource request.
fn dispatch(
    app: &App,
    t: &Target,
    method: &Method,
    headers: &HeaderMap,
    q: &Params,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let kind = t.kind().ok_or_else(ApiError::no_route)?;
    let verb = rbac_verb(method, t, q);
    let status_only = match t.subresource.as_deref() {
        None => false,
        Some("status") if kind.status_subresource && matches!(verb, "get" | "update" | "patch") => true,
        Some(_) => return Err(ApiError::no_route()),
    };
    let store = &app.store;
    let (Some(ns), Some(name)) = (t.namespace.as_deref(), t.name.as_deref()) else {
        // A collection: in one namespace, or across all of them.
        if t.name.is_some() {
            return Err(ApiError::no_route());
        }
        return match verb {
            "list" => list(app, kind, t.namespace.as_deref(), q),
            "watch" => watch_request(app, kind, t.namespace.clone(), q),
            "create" if !status_only => match t.namespace.as_deref() {
                Some(ns) => Ok(ok(201, store.create(kind, ns, json_body(body)?)?)),
                None => Err(ApiError::method_not_allowed()),
            },
            _ => Err(ApiError::method_not_allowed()),
        };
    };
    match verb {
        "get" => Ok(ok(200, store.get(kind, ns, name)?)),
        "update" => {
            let (code, v) = store.replace(kind, ns, name, json_body(body)?, status_only)?;
            Ok(ok(code, v))
        }
        "patch" => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            // Strategic merge is taken as a merge patch for the built-in
            // kinds (their fields here have no list merge keys); custom
            // resources refuse it, as the real server does.
            let builtin = kind.group.is_empty() || kind.group.ends_with("k8s.io");
            let merge = ct.starts_with("application/merge-patch+json")
                || (builtin && ct.starts_with("application/strategic-merge-patch+json"));
            if !merge {
                return Err(ApiError::unsupported_media_type(ct));
            }
            Ok(ok(
                200,
                store.patch(kind, ns, name, &json_body(body)?, status_only)?,
            ))
        }
        "delete" => {
            let options = if body.is_empty() {
                json!({})
            } else {
                json_body(body)?
            };
            Ok(ok(200, store.delete(kind, ns, name, &options)?))
        }
        "watch" => {
            // The old single-object watch form: a watch pinned to the name.
            let mut q = q.clone();
            q.insert("fieldSelector".into(), format!("metadata.name={name}"));
            watch_request(app, kind, Some(ns.to_string()), &q)
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// LIST: every selected object, as one page with no `continue`.
fn list(app: &App, kind: &'static KindInfo, ns: Option<&str>, q: &Params) -> Result<Response, ApiError> {
    let sel = Selector::parse(
        q.get("labelSelector").map(String::as_str),
        q.get("fieldSelector").map(String::as_str),
    )?;
    let (items, rv) = app.store.list(kind, ns, |o| sel.matches(o));
    Ok(ok(
        200,
        json!({
            "apiVersion": kind.api_version(),
            "kind": format!("{}List", kind.kind),
            "metadata": { "resourceVersion": rv.to_string() },
            "items": items,
        }),
    ))
}

/// WATCH: parameters parsed, then the stream.
fn watch_request(
    app: &App,
    kind: &'static KindInfo,
    namespace: Option<String>,
    q: &Params,
) -> Result<Response, ApiError> {
    let selector = Selector::parse(
        q.get("labelSelector").map(String::as_str),
        q.get("fieldSelector").map(String::as_str),
    )?;
    let send_initial = flag(q, "sendInitialEvents");
    let from = match q.get("resourceVersion").map(String::as_str) {
        _ if send_initial => WatchFrom::Now,
        None | Some("" | "0") => WatchFrom::Now,
        Some(rv) => WatchFrom::After(rv.parse().map_err(|_| watch::bad_resource_version(rv))?),
    };
    let timeout = match q.get("timeoutSeconds") {
        Some(s) => Duration::from_secs(
            s.parse()
                .map_err(|_| ApiError::bad_request(format!("timeoutSeconds: invalid value {s:?}")))?,
        ),
        None => DEFAULT_WATCH_TIMEOUT,
    };
    let bookmarks = flag(q, "allowWatchBookmarks");
    let req = WatchRequest {
        kind,
        namespace,
        from,
        selector,
        bookmarks,
        initial_events_end: send_initial && bookmarks,
        timeout,
        bookmark_every: app.bookmark_every,
    };
    Ok(watch::serve(&app.store, app.down_epoch.subscribe(), req))
}

/// `/version`, `/api`, `/apis`, and the resource lists of the group
/// versions served, for clients that discover before they call.
fn discovery(method: &Method, path: &str) -> Result<Response, ApiError> {
    if method != Method::GET {
        return Err(ApiError::no_route());
    }
    let path = path.trim_end_matches('/');
    let body = match path {
        "/version" => json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-switchyard-standin",
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc",
            "platform": "linux/amd64",
        }),
        "/api" => json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1" }],
        }),
        "/apis" => {
            let groups: Vec<Value> = KINDS
                .iter()
                .filter(|k| !k.group.is_empty())
                .map(|k| {
                    let gv = json!({ "groupVersion": k.api_version(), "version": k.version });
                    json!({ "name": k.group, "versions": [gv], "preferredVersion": gv })
                })
                .collect();
            json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
        }
        _ => resource_list(path).ok_or_else(ApiError::no_route)?,
    };
    Ok(ok(200, body))
}

/// The `APIResourceList` of `/api/v1` or `/apis/{group}/{version}`.
fn resource_list(path: &str) -> Option<Value> {
    let gv = path
        .strip_prefix("/api/")
        .or_else(|| path.strip_prefix("/apis/"))?;
    let kinds: Vec<&KindInfo> = KINDS.iter().filter(|k| k.api_version() == gv).collect();
    if kinds.is_empty() {
        return None;
    }
    let verbs = ["create", "delete", "get", "list", "patch", "update", "watch"];
    let mut resources = Vec::new();
    for k in kinds {
        resources.push(json!({
            "name": k.plural, "singularName": k.kind.to_lowercase(), "namespaced": true,
            "kind": k.kind, "verbs": verbs,
        }));
        if k.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", k.plural), "singularName": "", "namespaced": true,
                "kind": k.kind, "verbs": ["get", "patch", "update"],
            }));
        }
    }
    Some(json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources }))
}
