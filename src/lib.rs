//! switchyard serves ONNX models over HTTP and rolls new model versions out
//! inside the process.
//!
//! Requests flow api → traffic → runtime; the control plane (repository,
//! and later rollout) only swaps immutable snapshots that the data plane reads.

pub mod api;
pub mod cli;
pub mod config;
pub mod error;
pub mod grpc;
pub mod guard;
pub mod repository;
pub mod rollout;
pub mod runtime;
pub mod shutdown;
pub mod telemetry;
pub mod tensor;
pub mod traffic;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::Config;

use api::AppState;
use repository::Repository;

/// A running server: its bound addresses and a way to stop it.
pub struct Server {
    /// The data listener's address (V1, V2, probes).
    pub addr: SocketAddr,
    /// The admin listener's address.
    pub admin_addr: SocketAddr,
    /// Shared state (repository, config, shutdown flag).
    pub state: Arc<AppState>,
    shutdown: shutdown::Trigger,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Begins a graceful shutdown: readiness fails at once, serving goes on
    /// for the drain period, then in-flight requests finish.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.fire();
        self.wait().await
    }

    /// Waits until both listeners have stopped.
    pub async fn wait(self) -> anyhow::Result<()> {
        for task in self.tasks {
            task.await.context("server task panicked")??;
        }
        Ok(())
    }
}

/// Loads ONNX Runtime, binds both listeners and starts loading the
/// repository in the background (readiness reports 503 until it is done).
pub async fn start(config: Config) -> anyhow::Result<Server> {
    config.validate().map_err(anyhow::Error::msg)?;
    let library = config.onnxruntime_library();
    runtime::onnx::init(&library).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        config.model_repository.is_dir(),
        "the model repository {} is not a directory (set --model-repository or SWITCHYARD_MODEL_REPOSITORY)",
        config.model_repository.display()
    );
    telemetry::install_metrics();
    let config = Arc::new(config);
    let repo = Arc::new(Repository::new(config.model_repository.clone()));
    let state = Arc::new(AppState::new(repo.clone(), config.clone()).map_err(anyhow::Error::msg)?);
    guard::spawn_sweeper(Arc::downgrade(&state), std::time::Duration::from_secs(10));

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", config.admin_listen))?;
    let addr = listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let loader = repo.clone();
    let poll = config.repository_poll_secs;
    let window = config.rollback_window;
    let restorer = state.clone();
    tokio::spawn(async move {
        let initial = loader.clone();
        let _ = tokio::task::spawn_blocking(move || initial.load_all()).await;
        // active rollouts get their weights back before readiness turns 200
        restorer.rollouts.restore();
        restorer.mark_restored();
        let ticker = restorer.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
            loop {
                tick.tick().await;
                ticker.rollouts.tick().await;
            }
        });
        if poll == 0 {
            return;
        }
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(poll));
        tick.tick().await;
        loop {
            tick.tick().await;
            let repo = loader.clone();
            let _ = tokio::task::spawn_blocking(move || repo.poll(window)).await;
        }
    });

    let trigger = shutdown::Trigger::default();
    let drain = shutdown::Drain {
        state: state.clone(),
        trigger: trigger.clone(),
        drain: std::time::Duration::from_secs(config.drain_secs),
    };
    let data = serve(listener, api::app(state.clone()), drain.clone());
    let admin = serve(admin_listener, api::admin_app(state.clone()), drain);
    Ok(Server {
        addr,
        admin_addr,
        state,
        shutdown: trigger,
        tasks: vec![tokio::spawn(data), tokio::spawn(admin)],
    })
}

async fn serve(listener: TcpListener, app: axum::Router, drain: shutdown::Drain) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Small JSON answers must not wait for Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(drain.finished())
        .await
}

/// `switchyard serve`: start, log where to send requests, stop gracefully
/// on SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let timeout = std::time::Duration::from_secs(config.shutdown_timeout_secs + config.drain_secs);
    let server = start(config).await?;
    tracing::info!(
        data = %server.addr,
        admin = %server.admin_addr,
        "switchyard listening; try: curl -s http://{}/v2/models/digits",
        server.addr
    );
    shutdown::signal().await;
    // readiness turns 503 before anything else happens
    server.state.begin_shutdown();
    tracing::info!("shutdown signal received; readiness is now 503, draining");
    match tokio::time::timeout(timeout, server.shutdown()).await {
        Ok(result) => {
            // Nothing is buffered in memory that must reach disk: metrics
            // are scraped, logs are written line by line.
            tracing::info!("drained; in-flight requests finished; exiting");
            result
        }
        Err(_) => anyhow::bail!("in-flight requests did not finish within {timeout:?}"),
    }
}
