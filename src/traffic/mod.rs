//! Traffic decides which loaded version answers a request ([`route`]) and
//! mirrors sampled requests to a shadow version ([`shadow`]).

pub mod route;
pub mod shadow;

pub use crate::policy::Route;
pub use route::{
    model, resolve, route, route_with, version_number, Breakers, Caller, RouteError, Target, VersionSelector,
};
