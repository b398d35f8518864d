//! What the gRPC front end reads from a call's metadata (client address,
//! user key, version pin, deadline, admin token, request id) and writes on
//! its answer (`x-model-version`, `x-route`): the counterparts of HTTP's
//! headers, under the same names.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::extract::ConnectInfo;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::Extensions;

use super::status::GrpcError;
use crate::serving::AppState;
use crate::traffic::{Caller, Target, VersionSelector};

/// The deadline a gRPC client sends (`grpc-timeout`).
pub(super) const GRPC_TIMEOUT: &str = "grpc-timeout";
/// The request id a client may send, as over HTTP.
const REQUEST_ID: &str = "x-request-id";

/// The address of the client (the listener's connect info; the unspecified
/// address without one).
pub(super) fn peer(extensions: &Extensions) -> IpAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// What routing may use from the metadata: the user key (the configured
/// user header, `x-user-id` by default) and a version pin (`x-model-version`).
pub(super) fn caller<'m>(state: &AppState, metadata: &'m MetadataMap) -> Caller<'m> {
    Caller {
        user: text(metadata, state.settings.user_header.as_str()).filter(|v| !v.is_empty()),
        pin: text(metadata, "x-model-version").and_then(|v| v.trim().parse().ok()),
    }
}

/// An ASCII metadata value.
pub(super) fn text<'m>(metadata: &'m MetadataMap, key: &str) -> Option<&'m str> {
    metadata.get(key).and_then(|v| v.to_str().ok())
}

/// The client's request id, if any.
pub(super) fn request_id(metadata: &MetadataMap) -> Option<String> {
    text(metadata, REQUEST_ID).map(str::to_string)
}

/// What a versionless OIP field means: empty = traffic decides, else a
/// number or a label.
pub(super) fn selector(version: &str) -> VersionSelector<'_> {
    if version.is_empty() {
        VersionSelector::Default
    } else {
        VersionSelector::from_path(version)
    }
}

/// The client's deadline of one call (`grpc-timeout`), if it sent one; it
/// lowers (never raises) the model's `timeout_ms`, and a miss of it is the
/// client's, never the version's failure.
pub(super) fn client_timeout(metadata: &MetadataMap) -> Result<Option<Duration>, GrpcError> {
    let Some(value) = metadata.get(GRPC_TIMEOUT) else {
        return Ok(None);
    };
    let client = value.to_str().ok().and_then(parse_grpc_timeout).ok_or_else(|| {
        GrpcError::InvalidArgument(format!(
            "grpc-timeout must be up to 8 digits and a unit (H, M, S, m, u, n), got {:?}",
            String::from_utf8_lossy(value.as_bytes())
        ))
    })?;
    Ok(Some(client))
}

/// Parses gRPC's `TimeoutValue TimeoutUnit` (PROTOCOL-HTTP2.md): 1 to 8
/// ASCII digits, then one of `H M S m u n`.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Adds `x-model-version` and `x-route` to an answer's metadata.
pub(super) fn route_metadata(metadata: &mut MetadataMap, target: &Target) {
    metadata.insert("x-model-version", MetadataValue::from(target.version));
    metadata.insert("x-route", MetadataValue::from_static(target.route.name()));
}

/// Checks the `authorization: Bearer <token>` metadata against the admin
/// token (open when none is configured).
pub(super) fn check_token(state: &AppState, metadata: &MetadataMap) -> Result<(), GrpcError> {
    if state.authorized(text(metadata, "authorization")) {
        Ok(())
    } else {
        Err(GrpcError::Unauthenticated(
            "missing or wrong admin token (send metadata authorization: Bearer <SWITCHYARD_ADMIN_TOKEN>)"
                .into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_values() {
        assert_eq!(parse_grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "S", "100", "123456789S", "1s", "-1S", "1.5S", "1 S", "é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_client_deadline_is_read_from_grpc_timeout() {
        let mut m = MetadataMap::new();
        assert_eq!(client_timeout(&m).unwrap(), None);
        m.insert(GRPC_TIMEOUT, MetadataValue::from_static("50m"));
        assert_eq!(client_timeout(&m).unwrap(), Some(Duration::from_millis(50)));
        m.insert(GRPC_TIMEOUT, MetadataValue::from_static("60S"));
        assert_eq!(client_timeout(&m).unwrap(), Some(Duration::from_secs(60)));
        m.insert(GRPC_TIMEOUT, MetadataValue::from_static("soon"));
        assert_eq!(
            client_timeout(&m).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
