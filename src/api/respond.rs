//! Building answers: JSON bodies, and request bodies turned into bytes or
//! the right error.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Turns the body extractor's result into bytes or the right error
/// (413 over the limit, 400 otherwise).
pub fn body_bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!("request body is larger than the limit of {limit} bytes"))
        } else {
            ApiError::BadRequest(format!("could not read the request body: {rejection}"))
        }
    })
}

/// Reads a request body that must be one JSON object (`expected` names
/// it) into `T`. serde alone would read an array as a struct's fields in
/// order and answer a misleading "expected a string"; an empty body gets
/// its own message.
pub fn json_object<'a, T: serde::Deserialize<'a>>(body: &'a [u8], expected: &str) -> Result<T, String> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Err(format!("request body is empty; expected {expected}")),
        Some(b'{') => serde_json::from_slice(body).map_err(|e| e.to_string()),
        Some(_) => Err(format!("request body must be {expected}")),
    }
}

/// A 200 JSON response from pre-serialised bytes.
pub fn json_response(body: Vec<u8>) -> Response {
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A 200 JSON response from a serialisable value.
pub fn json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => json_response(body),
        Err(e) => ApiError::Internal(format!("could not encode the response: {e}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)] // read only through Debug
    struct Named {
        name: String,
    }

    #[test]
    fn a_body_must_be_one_json_object() {
        let read = |body: &str| json_object::<Named>(body.as_bytes(), "a JSON object with \"name\"");
        assert_eq!(read(" {\"name\": \"x\"}").unwrap().name, "x");
        assert_eq!(
            read("  ").unwrap_err(),
            "request body is empty; expected a JSON object with \"name\""
        );
        // serde would take the array for the struct's fields in order
        assert_eq!(
            read("[\"x\"]").unwrap_err(),
            "request body must be a JSON object with \"name\""
        );
        assert!(read("{\"name\": 1}").unwrap_err().contains("invalid type"));
    }
}
