//! The `Status` object: how the stand-in reports a failed request, in the
//! shape and wording of the real API server's `metav1.Status`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::kinds::KindInfo;

/// A failed request, rendered as a `Status` body with its HTTP code.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    /// `details` as the real server fills it (`name`, `group`, `kind`).
    pub(crate) details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, kind: &KindInfo, name: &str) -> ApiError {
        let mut d = json!({ "name": name, "kind": kind.plural });
        if !kind.group.is_empty() {
            d["group"] = json!(kind.group);
        }
        self.details = Some(d);
        self
    }

    /// 404 for an object that is not there.
    pub(crate) fn not_found(kind: &KindInfo, name: &str) -> ApiError {
        let msg = format!("{} \"{}\" not found", kind.qualified(), name);
        ApiError::new(404, "NotFound", msg).with_details(kind, name)
    }

    /// 404 for a path no kind is served at.
    pub(crate) fn no_route() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 404 for a create in a namespace that does not exist.
    pub(crate) fn namespace_not_found(ns: &str) -> ApiError {
        let mut e = ApiError::new(404, "NotFound", format!("namespaces \"{ns}\" not found"));
        e.details = Some(json!({ "name": ns, "kind": "namespaces" }));
        e
    }

    /// 409 for a create of a name that is taken.
    pub(crate) fn already_exists(kind: &KindInfo, name: &str) -> ApiError {
        let msg = format!("{} \"{}\" already exists", kind.qualified(), name);
        ApiError::new(409, "AlreadyExists", msg).with_details(kind, name)
    }

    /// 409 for a write whose resourceVersion is not the stored one.
    pub(crate) fn conflict(kind: &KindInfo, name: &str) -> ApiError {
        let msg = format!(
            "Operation cannot be fulfilled on {} \"{}\": the object has been modified; \
             please apply your changes to the latest version and try again",
            kind.qualified(),
            name
        );
        ApiError::new(409, "Conflict", msg).with_details(kind, name)
    }

    /// 409 for a DELETE whose preconditions do not hold.
    pub(crate) fn precondition_failed(kind: &KindInfo, name: &str, what: String) -> ApiError {
        let msg = format!(
            "Operation cannot be fulfilled on {} \"{}\": Precondition failed: {}",
            kind.qualified(),
            name,
            what
        );
        ApiError::new(409, "Conflict", msg).with_details(kind, name)
    }

    /// 422 for an object that fails validation.
    pub(crate) fn invalid(kind: &KindInfo, name: &str, field_error: &str) -> ApiError {
        let group = if kind.group.is_empty() {
            String::new()
        } else {
            format!(".{}", kind.group)
        };
        let msg = format!("{}{} \"{}\" is invalid: {}", kind.kind, group, name, field_error);
        let mut e = ApiError::new(422, "Invalid", msg);
        e.details = Some(json!({ "name": name, "group": kind.group, "kind": kind.kind }));
        e
    }

    /// 400 for a request the server cannot make sense of.
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// 405 for a verb the path does not take.
    pub(crate) fn method_not_allowed() -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 415 for a patch type the stand-in does not implement.
    pub(crate) fn unsupported_media_type(content_type: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/merge-patch+json (got {content_type:?})"),
        )
    }

    /// 500, as the real server answers a create that carries a resourceVersion.
    pub(crate) fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalError", message)
    }

    /// 503 while a fault-injected outage lasts.
    pub(crate) fn unavailable() -> ApiError {
        ApiError::new(
            503,
            "ServiceUnavailable",
            "the API server stand-in is down (injected outage)",
        )
    }

    /// 410 for a watch from a resourceVersion older than the history held.
    pub(crate) fn expired(requested: u64, oldest: u64) -> ApiError {
        ApiError::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// The `Status` object.
    pub(crate) fn to_json(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, axum::Json(self.to_json())).into_response()
    }
}

/// A `Status` of `Success`, as DELETE answers for most built-in kinds.
pub(crate) fn success(kind: &KindInfo, name: &str, uid: &Value) -> Value {
    let mut details = json!({ "name": name, "kind": kind.plural, "uid": uid });
    if !kind.group.is_empty() {
        details["group"] = json!(kind.group);
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}
