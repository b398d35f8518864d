//! HTTP: the data router (V1, V2, probes, feedback, the repository API) and
//! the admin router (admin API, metrics, the live page), their middleware
//! and the one status table ([`error`]).
//!
//! Handlers parse the protocol and call the shared predict pipeline in
//! `serving`; they never touch ONNX Runtime directly.

pub mod admin;
pub mod connection;
pub mod error;
pub mod feedback;
pub mod health;
pub mod middleware;
pub mod repository;
pub mod request;
pub mod respond;
pub mod router;
pub mod stats;
pub mod ui;
pub mod v1;
pub mod v2;

pub use error::ApiError;
pub use router::{admin_app, app};
