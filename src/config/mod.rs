//! The `serve` flags (each also a `SWITCHYARD_*` environment variable) as one
//! validated [`Config`], read once at the top and handed down to each layer
//! as plain settings ([`Config::settings`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use std::time::Duration;

use clap::{Args, Parser, ValueEnum};

use crate::fleet::{FleetSettings, Timings};
use crate::guard::{BreakerConfig, GuardSettings, RateSpec};
use crate::serving::{BodySettings, FeedbackSettings, Settings};
use crate::telemetry::LogFormat;

/// Where rollouts run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FleetMode {
    /// In this server alone (state in --state-dir).
    Local,
    /// Across every replica of the namespace, through the Kubernetes API
    /// (ModelRollout objects, a Lease) and Prometheus.
    Kubernetes,
}

/// Everything `serve` needs.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// The model repository (Triton layout).
    #[arg(long, env = "SWITCHYARD_MODEL_REPOSITORY", default_value = "models")]
    pub model_repository: PathBuf,

    /// Address of the data listener (V1, V2, probes).
    #[arg(long, env = "SWITCHYARD_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Address of the admin listener (admin API, metrics, the live page at /).
    #[arg(long, env = "SWITCHYARD_ADMIN_LISTEN", default_value = "127.0.0.1:8081")]
    pub admin_listen: SocketAddr,

    /// Address of the gRPC listener (Open Inference Protocol, grpc.health.v1,
    /// reflection), or `off`.
    #[arg(long, env = "SWITCHYARD_GRPC_LISTEN", default_value = "0.0.0.0:8001")]
    pub grpc_listen: Listen,

    /// Serve Triton's model-repository API: /v2/repository/... on the data
    /// listener and the Repository* RPCs on gRPC. It needs the admin token
    /// (required when either listener is off loopback).
    #[arg(
        long,
        env = "SWITCHYARD_REPOSITORY_API",
        num_args = 0..=1,
        require_equals = true,
        default_value_t = false,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub repository_api: bool,

    /// The ONNX Runtime shared library (defaults to $ORT_DYLIB_PATH, else
    /// .onnxruntime/libonnxruntime.so.1.31.1).
    #[arg(long, env = "SWITCHYARD_ONNXRUNTIME_LIB")]
    pub onnxruntime_lib: Option<PathBuf>,

    /// Largest request body accepted, e.g. 8MiB, 512KiB, 1000000.
    #[arg(long, env = "SWITCHYARD_BODY_LIMIT", default_value = "8MiB", value_parser = parse_size)]
    pub body_limit: usize,

    /// Seconds to keep serving after SIGTERM while readiness reports 503.
    #[arg(long, env = "SWITCHYARD_DRAIN_SECS", default_value_t = 5)]
    pub drain_secs: u64,

    /// Seconds in-flight requests get to finish once the drain is over.
    #[arg(long, env = "SWITCHYARD_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30)]
    pub shutdown_timeout_secs: u64,

    /// Log format.
    #[arg(long, env = "SWITCHYARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Bearer token for the admin API (and the repository API); required
    /// when the admin listener is not on loopback.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Bearer token that may post feedback on the data listener (the admin
    /// token may too); without any token, feedback is open on a loopback
    /// data listener only.
    #[arg(long, env = "SWITCHYARD_FEEDBACK_TOKEN", hide_env_values = true)]
    pub feedback_token: Option<String>,

    /// Feedback values accepted, MIN..MAX inclusive (others get 422).
    #[arg(long, env = "SWITCHYARD_FEEDBACK_RANGE", default_value = "0..1", value_parser = parse_range)]
    pub feedback_range: (f64, f64),

    /// Peers (CIDRs or addresses, comma-separated) whose user header is
    /// trusted for rate limits; from any other peer the limit counts per
    /// client address.
    #[arg(long, env = "SWITCHYARD_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Time a client has to send a request's headers (from the connection
    /// or its first byte); then the connection is closed.
    #[arg(long, env = "SWITCHYARD_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,

    /// Time an idle keep-alive connection is kept open waiting for its next
    /// request (longer than the idle timeout of a load balancer in front).
    #[arg(long, env = "SWITCHYARD_IDLE_TIMEOUT", default_value = "75s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Time a request body has to arrive in full; beyond: 408.
    #[arg(long, env = "SWITCHYARD_BODY_READ_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub body_read_timeout: Duration,

    /// Bytes per second a request body must average after its first 2
    /// seconds (0 = no minimum); slower: 408.
    #[arg(long, env = "SWITCHYARD_BODY_MIN_RATE", default_value = "16KiB", value_parser = parse_size)]
    pub body_min_rate: usize,

    /// Open connections per listener; at the cap, a new connection replaces
    /// the connection that made the least recent progress without a request
    /// being handled (else it gets 503).
    #[arg(long, env = "SWITCHYARD_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// Threads that serve the data listener's connections, each reading and
    /// answering its connections' requests on its own event loop; a new
    /// connection goes to the thread with the fewest (0 = one thread per
    /// core the process may use, after its CPU quota).
    #[arg(long, env = "SWITCHYARD_HTTP_THREADS", default_value_t = 0)]
    pub http_threads: usize,

    /// Microseconds an HTTP thread keeps polling its connections after it
    /// writes an answer, before it sleeps (0 = never): the next request of
    /// a busy client is then read without waking a sleeping thread. While
    /// polling it yields the core to any other runnable thread, and it
    /// stops while its requests wait for inference workers; the cost is up
    /// to this much CPU per answer under light load.
    #[arg(long, env = "SWITCHYARD_HTTP_BUSY_POLL_US", default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub http_busy_poll_us: u64,

    /// Bytes of request bodies held at once over all requests; beyond: 503
    /// with Retry-After (default: an eighth of the container's memory
    /// limit, else of the machine's memory).
    #[arg(long, env = "SWITCHYARD_BODY_BYTES_IN_FLIGHT", value_parser = parse_size)]
    pub body_bytes_in_flight: Option<usize>,

    /// Header that carries the user key for sticky routing and rate limits.
    #[arg(long, env = "SWITCHYARD_USER_HEADER", default_value = "x-user-id")]
    pub user_header: String,

    /// Poll the repository every N seconds for new or removed versions (0 = off).
    #[arg(long, env = "SWITCHYARD_REPOSITORY_POLL_SECS", default_value_t = 0)]
    pub repository_poll_secs: u64,

    /// Where rollouts and their audit log are stored (SQLite).
    #[arg(long, env = "SWITCHYARD_STATE_DIR", default_value = "state")]
    pub state_dir: PathBuf,

    /// Mirrored requests that may wait for a shadow version; beyond: dropped.
    #[arg(long, env = "SWITCHYARD_SHADOW_QUEUE", default_value_t = 256)]
    pub shadow_queue: usize,

    /// Per-user rate limit for every model without its own `[limits]`,
    /// e.g. 100/60s (requests without a user key share a bucket per client
    /// IP); unset = no limit.
    #[arg(long, env = "SWITCHYARD_RATE_LIMIT", value_parser = parse_rate)]
    pub rate_limit: Option<RateSpec>,

    /// Requests a user may send at once under --rate-limit (default: its count).
    #[arg(long, env = "SWITCHYARD_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<u32>,

    /// Rate-limit keys (users, client IPs) remembered per limiter; beyond
    /// it new callers share one bucket until idle keys are swept.
    #[arg(long, env = "SWITCHYARD_RATE_LIMIT_KEYS", default_value_t = 100_000)]
    pub rate_limit_keys: usize,

    /// Data-plane requests served at once; beyond: 503 with Retry-After.
    #[arg(long, env = "SWITCHYARD_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,

    /// Consecutive failures (500/504) of a version that open its circuit breaker (0 = off).
    #[arg(long, env = "SWITCHYARD_BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,

    /// Failure share over 30 s (at least 20 requests) that opens a version's breaker (1 = off).
    #[arg(long, env = "SWITCHYARD_BREAKER_FAILURE_RATE", default_value_t = 0.5)]
    pub breaker_failure_rate: f64,

    /// Seconds an open breaker sends the version's traffic to stable before probing.
    #[arg(long, env = "SWITCHYARD_BREAKER_OPEN_SECS", default_value_t = 10)]
    pub breaker_open_secs: u64,

    /// How long a replaced stable version stays loaded for instant rollback.
    #[arg(long, env = "SWITCHYARD_ROLLBACK_WINDOW", default_value = "10m", value_parser = humantime::parse_duration)]
    pub rollback_window: std::time::Duration,

    /// Where rollouts run: in this server alone, or across every replica
    /// of the namespace as one fleet (docs/kubernetes.md).
    #[arg(long, env = "SWITCHYARD_FLEET", value_enum, default_value_t = FleetMode::Local)]
    pub fleet: FleetMode,

    /// Fleet mode: a kubeconfig file (default: $KUBECONFIG, ~/.kube/config,
    /// else the pod's service account).
    #[arg(long, env = "SWITCHYARD_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Fleet mode: the namespace of the ModelRollout objects and the Lease
    /// (default: the client configuration's; in a pod, its own).
    #[arg(long, env = "SWITCHYARD_NAMESPACE")]
    pub namespace: Option<String>,

    /// This server's name in the fleet (default: $POD_NAME, else the host name).
    #[arg(long, env = "SWITCHYARD_POD_NAME")]
    pub pod_name: Option<String>,

    /// Fleet mode: the Prometheus that scrapes every replica, e.g.
    /// http://prometheus.monitoring:9090 (rollouts are analysed on it).
    #[arg(long, env = "SWITCHYARD_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,

    /// Fleet mode: label matchers added to every Prometheus query, so
    /// other deployments' series do not mix in, e.g. namespace="ml".
    #[arg(long, env = "SWITCHYARD_PROMETHEUS_MATCHERS", default_value = "")]
    pub prometheus_matchers: String,

    /// Fleet mode: the name of the leader-election Lease.
    #[arg(long, env = "SWITCHYARD_LEASE_NAME", default_value = "switchyard")]
    pub lease_name: String,

    /// Fleet mode: how long a leader's Lease stays valid without a renew.
    #[arg(long, env = "SWITCHYARD_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,

    /// Fleet mode: how long a leader keeps acting without a successful renew.
    #[arg(long, env = "SWITCHYARD_LEASE_RENEW_DEADLINE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub lease_renew_deadline: Duration,

    /// Fleet mode: how often candidates try for the Lease and the leader renews it.
    #[arg(long, env = "SWITCHYARD_LEASE_RETRY_PERIOD", default_value = "2s", value_parser = humantime::parse_duration)]
    pub lease_retry_period: Duration,
}

impl Config {
    /// A config for `repository` with listeners on ephemeral loopback ports
    /// (tests, benches).
    pub fn for_repository(repository: impl Into<PathBuf>) -> Config {
        let mut config = Config::defaults();
        config.model_repository = repository.into();
        config.state_dir = config.model_repository.join(".state");
        config.listen = "127.0.0.1:0".parse().expect("loopback address");
        config.admin_listen = "127.0.0.1:0".parse().expect("loopback address");
        config.grpc_listen = Listen::At("127.0.0.1:0".parse().expect("loopback address"));
        config
    }

    /// Every flag from its `SWITCHYARD_*` environment variable, else its default.
    pub fn defaults() -> Config {
        ServeFlags::parse_from(["serve"]).config
    }

    /// Checks what the flags cannot check alone.
    pub fn validate(&self) -> Result<(), String> {
        if !self.admin_listen.ip().is_loopback() && self.admin_token.as_deref().unwrap_or("").is_empty() {
            return Err(format!(
                "the admin listener {} is not on loopback: set SWITCHYARD_ADMIN_TOKEN (or --admin-token)",
                self.admin_listen
            ));
        }
        if self.user_header.parse::<axum::http::HeaderName>().is_err() {
            return Err(format!(
                "--user-header '{}' is not a valid header name",
                self.user_header
            ));
        }
        if !(0.0..=1.0).contains(&self.breaker_failure_rate) {
            return Err(format!(
                "--breaker-failure-rate must be within 0..=1, got {}",
                self.breaker_failure_rate
            ));
        }
        if self.rate_limit_burst == Some(0) {
            return Err("--rate-limit-burst must be at least 1".into());
        }
        let no_token = self.admin_token.as_deref().unwrap_or("").is_empty();
        if self.repository_api && no_token && !self.listen.ip().is_loopback() {
            return Err(format!(
                "--repository-api exposes model loading on the data listener {}, which is not on loopback: \
                 set SWITCHYARD_ADMIN_TOKEN (or --admin-token)",
                self.listen
            ));
        }
        if let Some(grpc) = self.grpc_listen.addr().filter(|a| !a.ip().is_loopback()) {
            if self.repository_api && no_token {
                return Err(format!(
                    "--repository-api exposes model loading on the gRPC listener {grpc}, which is not on \
                     loopback: set SWITCHYARD_ADMIN_TOKEN (or --admin-token), or --grpc-listen off"
                ));
            }
        }
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        if self.header_read_timeout.is_zero()
            || self.idle_timeout.is_zero()
            || self.body_read_timeout.is_zero()
        {
            return Err(
                "--header-read-timeout, --idle-timeout and --body-read-timeout must be positive".into(),
            );
        }
        if self.fleet == FleetMode::Kubernetes {
            if self.prometheus_url.as_deref().unwrap_or("").is_empty() {
                return Err(
                    "--fleet kubernetes analyses rollouts on Prometheus: set --prometheus-url (SWITCHYARD_PROMETHEUS_URL)"
                        .into(),
                );
            }
            self.timings().check()?;
        }
        Ok(())
    }

    fn timings(&self) -> Timings {
        Timings {
            lease_duration: self.lease_duration,
            renew_deadline: self.lease_renew_deadline,
            retry_period: self.lease_retry_period,
        }
    }

    /// This server's name: --pod-name, else $POD_NAME, else the host name.
    pub fn pod(&self) -> String {
        self.pod_name
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok())
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "switchyard".into())
    }

    /// Fleet mode's settings, when it is on.
    pub fn fleet_settings(&self) -> Option<FleetSettings> {
        (self.fleet == FleetMode::Kubernetes).then(|| FleetSettings {
            kubeconfig: self.kubeconfig.clone(),
            namespace: self.namespace.clone().filter(|n| !n.is_empty()),
            pod_name: self.pod(),
            prometheus_url: self.prometheus_url.clone().unwrap_or_default(),
            prometheus_matchers: self.prometheus_matchers.clone(),
            lease_name: self.lease_name.clone(),
            timings: self.timings(),
            state_dir: self.state_dir.clone(),
        })
    }

    /// What the shared state needs, as plain values.
    pub fn settings(&self) -> Settings {
        Settings {
            user_header: self
                .user_header
                .parse()
                .unwrap_or(axum::http::HeaderName::from_static("x-user-id")),
            admin_token: self.admin_token.clone().filter(|t| !t.is_empty()),
            data_loopback: self.listen.ip().is_loopback(),
            repository_api: self.repository_api,
            feedback: FeedbackSettings {
                token: self.feedback_token.clone().filter(|t| !t.is_empty()),
                min: self.feedback_range.0,
                max: self.feedback_range.1,
            },
            bodies: BodySettings {
                read_timeout: self.body_read_timeout,
                min_rate: self.body_min_rate,
                budget: self
                    .body_bytes_in_flight
                    .unwrap_or_else(|| crate::serving::limits::default_body_budget(self.body_limit)),
            },
            body_limit: self.body_limit,
            rollback_window: self.rollback_window,
            shadow_queue: self.shadow_queue,
            max_in_flight: self.max_in_flight.max(1),
            state_dir: self.state_dir.clone(),
            pod_name: self.pod(),
            guard: GuardSettings {
                trusted_proxies: self.trusted_proxies.clone(),
                rate_limit: self.rate_limit,
                rate_limit_burst: self.rate_limit_burst,
                rate_limit_keys: self.rate_limit_keys,
                breaker: BreakerConfig {
                    consecutive_failures: self.breaker_failures,
                    failure_rate: self.breaker_failure_rate,
                    open_for: Duration::from_secs(self.breaker_open_secs.max(1)),
                },
            },
        }
    }

    /// Threads for the data listener: as set, else one per core the process
    /// may use (the standard library reads the CPU affinity and the cgroup's
    /// CPU quota).
    pub fn http_threads(&self) -> usize {
        match self.http_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }

    /// The ONNX Runtime library to load.
    pub fn onnxruntime_library(&self) -> PathBuf {
        self.onnxruntime_lib
            .clone()
            .unwrap_or_else(crate::runtime::onnx::default_library_path)
    }
}

/// Where an optional listener listens: an address, or nowhere (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Off,
    At(SocketAddr),
}

impl Listen {
    /// The address, unless the listener is off.
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            Listen::Off => None,
            Listen::At(addr) => Some(addr),
        }
    }
}

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Listen, String> {
        if s.trim().eq_ignore_ascii_case("off") {
            return Ok(Listen::Off);
        }
        s.trim()
            .parse()
            .map(Listen::At)
            .map_err(|_| format!("'{s}' is neither an address like 0.0.0.0:8001 nor 'off'"))
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Off => f.write_str("off"),
            Listen::At(addr) => addr.fmt(f),
        }
    }
}

/// The `serve` flags alone, for [`Config::defaults`] and tests.
#[derive(Debug, Parser)]
struct ServeFlags {
    #[command(flatten)]
    config: Config,
}

/// Parses rates like `100/60s`.
pub fn parse_rate(s: &str) -> Result<RateSpec, String> {
    s.parse()
}

/// Parses a feedback range like `0..1` or `-5..5` (finite, MIN < MAX).
pub fn parse_range(s: &str) -> Result<(f64, f64), String> {
    let bad = || format!("'{s}' is not a range; write it as MIN..MAX, e.g. 0..1");
    let (lo, hi) = s.trim().split_once("..").ok_or_else(bad)?;
    let lo: f64 = lo.trim().parse().map_err(|_| bad())?;
    let hi: f64 = hi.trim().parse().map_err(|_| bad())?;
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(format!("range '{s}' must be finite with MIN < MAX"));
    }
    Ok((lo, hi))
}

/// Parses a network (`10.0.0.0/8`, `fd00::/8`) or one address (`10.1.2.3`).
pub fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("'{s}' is not an address or a CIDR network (e.g. 10.0.0.0/8)"))
}

/// Parses sizes like `8MiB`, `512KiB`, `2MB`, `1000`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let size: bytesize::ByteSize = s
        .trim()
        .parse()
        .map_err(|e| format!("'{s}' is not a size (try 8MiB, 512KiB or a byte count): {e}"))?;
    usize::try_from(size.as_u64()).map_err(|_| format!("size '{s}' is too large"))
}

#[cfg(test)]
mod tests;
