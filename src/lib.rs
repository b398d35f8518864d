//! switchyard serves ONNX models over HTTP (TF Serving REST "V1", the Open
//! Inference Protocol "V2") and gRPC (the Open Inference Protocol's
//! `inference.GRPCInferenceService`) and rolls new model versions out safely
//! inside the process.
//!
//! Requests flow api/grpc → serving → traffic → runtime; the control plane
//! (repository, rollout, fleet) only swaps immutable snapshots that the data plane
//! reads. Each top-level module is a layer and imports only the layers
//! listed before it (checked by `layers.py src --order` in CI):
//!
//! 1. [`tensor`]: tensors, data types, shapes; the JSON and binary codecs (plain data).
//! 2. [`telemetry`]: metric names, the Prometheus registry, logging.
//! 3. [`runtime`]: ONNX Runtime sessions on worker threads, batching, per-version stats and windows.
//! 4. [`policy`]: the traffic policy value: validated, pure, hashed per user.
//! 5. [`guard`]: rate limits and circuit breakers (pure state, no HTTP types).
//! 6. [`repository`]: the model repository on disk, `config.toml`, loading, snapshots, policy edits.
//! 7. [`traffic`]: the routing decision for one request; shadow mirroring.
//! 8. [`rollout`]: rollout specs, the pure state machine, analysis, statistics, validation, the store and the controller.
//! 9. [`fleet`]: fleet mode: the `ModelRollout` resource, the Lease, the watch and apply, the Prometheus metrics source.
//! 10. [`serving`]: what every front end shares: the state, the predict pipeline, readiness, metrics refresh, statistics, model metadata, the repository catalog, the live page's history.
//! 11. [`api`]: HTTP: V1, V2, probes, feedback, the admin API, the live page, middleware, the status table.
//! 12. [`grpc`]: gRPC: the Open Inference Protocol service over the same pipeline, health, reflection, the code table.
//! 13. [`config`]: the `serve` flags, read once and handed down as plain settings.
//! 14. [`server`]: listeners, background tasks, graceful shutdown.
//! 15. [`cli`]: the command line and the client subcommands.

pub mod api;
pub mod cli;
pub mod config;
pub mod fleet;
pub mod grpc;
pub mod guard;
pub mod policy;
pub mod repository;
pub mod rollout;
pub mod runtime;
pub mod server;
pub mod serving;
pub mod telemetry;
pub mod tensor;
pub mod traffic;

pub use config::Config;
pub use server::{run, start, Server};

/// The layer order, bottom-up, as `layers.py src --order` checks it.
pub const LAYERS: &str =
    "tensor,telemetry,runtime,policy,guard,repository,traffic,rollout,fleet,serving,api,grpc,config,server,cli";
