//! The model repository: a Triton-layout directory on disk ([`store`]), the
//! immutable *snapshot* of what is loaded from it ([`snapshot`]), loading
//! and warming versions up ([`load`]), and the control-plane edits that
//! depend on routing ([`policies`]): traffic policies, rollback, unloading.

pub mod config;
pub mod error;
mod external;
pub mod load;
pub mod pbtxt;
pub mod policies;
pub mod samples;
pub mod snapshot;
pub mod store;

pub use config::ModelConfig;
pub use error::{FileError, LoadError, NameError};
pub use load::warmup_inputs;
pub use policies::PolicyError;
pub use samples::Samples;
pub use snapshot::{ModelEntry, PreviousStable, Snapshot, VersionEntry, VersionState};
pub use store::{check_model_name, parse_version_dir, Repository};
