//! A running *server*: its listeners (data, admin, and gRPC unless turned
//! off), the background tasks (initial load, rollout restore and then the
//! rollout ticks or the fleet's tasks, repository polling, the history
//! sampler, guard sweeping, breaker probes) and graceful shutdown.
//!
//! A *drain* is the period after a stop was asked for in which readiness
//! already answers 503 (and gRPC health NOT_SERVING, so load balancers stop
//! sending) but every listener keeps serving; after it they stop accepting
//! and in-flight requests finish.
//! Every background task ends with the server: they all watch one
//! cancellation token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::listener::{self, ListenerSettings};
use crate::config::Config;
use crate::fleet::Fleet;
use crate::repository::Repository;
use crate::serving::{AppState, Control};

/// A running server: its bound addresses and a way to stop it.
pub struct Server {
    /// The data listener's address (V1, V2, probes).
    pub addr: SocketAddr,
    /// The admin listener's address.
    pub admin_addr: SocketAddr,
    /// The gRPC listener's address, unless `--grpc-listen off`.
    pub grpc_addr: Option<SocketAddr>,
    /// Shared state (repository, guard, rollouts, lifecycle).
    pub state: Arc<AppState>,
    /// Cancelled to stop the background tasks once the listeners closed.
    tasks_stop: CancellationToken,
    listeners: Vec<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Begins a graceful shutdown: readiness fails at once, serving goes on
    /// for the drain period, then in-flight requests finish.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.state.begin_shutdown();
        // a leader hands the Lease over now, not when it expires
        if let Some(fleet) = self.state.fleet() {
            fleet.resign().await;
        }
        self.wait().await
    }

    /// Waits until every listener has stopped, then stops the background
    /// tasks.
    pub async fn wait(self) -> anyhow::Result<()> {
        let result = async {
            for task in self.listeners {
                task.await.context("server task panicked")??;
            }
            Ok(())
        }
        .await;
        self.tasks_stop.cancel();
        result
    }
}

/// Loads ONNX Runtime, binds the listeners and starts loading the
/// repository in the background (readiness reports 503 until it is done).
pub async fn start(config: Config) -> anyhow::Result<Server> {
    config.validate().map_err(anyhow::Error::msg)?;
    crate::runtime::onnx::init(&config.onnxruntime_library())?;
    anyhow::ensure!(
        config.model_repository.is_dir(),
        "the model repository {} is not a directory (set --model-repository or SWITCHYARD_MODEL_REPOSITORY)",
        config.model_repository.display()
    );
    crate::telemetry::install_metrics();
    crate::telemetry::init_panic_counters();
    let repo = Arc::new(Repository::new(config.model_repository.clone()));
    let state = match config.fleet_settings() {
        None => Arc::new(AppState::new(repo.clone(), config.settings())?),
        Some(fleet) => {
            let fleet = Arc::new(Fleet::connect(repo.clone(), &fleet).await?);
            Arc::new(AppState::with_fleet(repo.clone(), config.settings(), fleet))
        }
    };

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", config.admin_listen))?;
    let grpc_listener = match config.grpc_listen.addr() {
        Some(at) => Some(
            TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on {at} (gRPC)"))?,
        ),
        None => None,
    };
    let addr = listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let grpc_addr = grpc_listener.as_ref().map(TcpListener::local_addr).transpose()?;

    let tasks_stop = CancellationToken::new();
    spawn_background(&state, &config, tasks_stop.clone());
    let drain = Duration::from_secs(config.drain_secs);
    let bounds = |name| ListenerSettings {
        name,
        header_read_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
        max_connections: config.max_connections,
    };
    let stopping = state.shutdown_token().clone();
    let mut listeners = vec![
        tokio::spawn(listener::serve_on_threads(
            listener,
            config.http_threads(),
            Duration::from_micros(config.http_busy_poll_us),
            crate::api::app(state.clone()),
            bounds("data"),
            stopping.clone(),
            drain,
        )),
        tokio::spawn(listener::serve(
            admin_listener,
            crate::api::admin_app(state.clone()),
            bounds("admin"),
            stopping.clone(),
            drain,
        )),
    ];
    if let Some(grpc_listener) = grpc_listener {
        let drained = listener::after_drain(state.shutdown_token().clone(), drain);
        let app = crate::grpc::app(state.clone(), drained, tasks_stop.clone()).await?;
        listeners.push(tokio::spawn(listener::serve(
            grpc_listener,
            app,
            bounds("grpc"),
            stopping,
            drain,
        )));
    }
    Ok(Server {
        addr,
        admin_addr,
        grpc_addr,
        state,
        tasks_stop,
        listeners,
    })
}

/// The initial load (then rollout restore and ticks), repository polling,
/// the history sampler and the guard's sweeper, all until `stop` is
/// cancelled. They hold the state weakly where they loop, so a stopped
/// server's threads end.
fn spawn_background(state: &Arc<AppState>, config: &Config, stop: CancellationToken) {
    let loader = state.clone();
    let poll = config.repository_poll_secs;
    let window = config.rollback_window;
    let until_ticks = stop.clone();
    tokio::spawn(stop.clone().run_until_cancelled_owned(async move {
        let repo = loader.repo.clone();
        let _ = tokio::task::spawn_blocking(move || repo.load_all()).await;
        match &loader.control {
            // active rollouts get their weights back before readiness turns 200
            // (restoring may load versions and writes the state database)
            Control::Local { store, controller } => {
                let restoring = store.clone();
                let _ = tokio::task::spawn_blocking(move || restoring.restore()).await;
                let controller = Arc::downgrade(controller);
                every(
                    Duration::from_millis(250),
                    &until_ticks,
                    Arc::downgrade(&loader),
                    move |_| {
                        let controller = controller.clone();
                        async move {
                            if let Some(c) = controller.upgrade() {
                                c.tick().await;
                            }
                        }
                    },
                );
            }
            // readiness waits until the fleet's policies are applied
            Control::Fleet(fleet) => fleet.spawn(until_ticks.clone()),
        }
        loader.mark_restored();
        let weak = Arc::downgrade(&loader);
        drop(loader);
        if poll > 0 {
            every(
                Duration::from_secs(poll),
                &until_ticks,
                weak,
                move |state| async move {
                    let (repo, held) = (state.repo.clone(), state.clone());
                    // an active rollout's versions stay, whatever the disk says
                    let keep = move |m: &str, v: u64| held.rollout_holds(m, v);
                    let _ = tokio::task::spawn_blocking(move || repo.poll_keeping(window, keep)).await;
                },
            );
        }
    }));
    // Open breakers are probed once their open period is over, so they
    // close again even when no user traffic reaches their version.
    every(
        Duration::from_secs(1),
        &stop,
        Arc::downgrade(state),
        |state| async move { crate::serving::probe::probe_breakers(&state).await },
    );
    // The live page's charts: one sample a second of what every version did.
    every(
        Duration::from_secs(1),
        &stop,
        Arc::downgrade(state),
        |state| async move {
            state.history.sample(&state.repo.snapshot(), &state.shadow);
        },
    );
    // Rate-limit keys with full buckets are dropped and breakers of versions
    // that left the repository pruned, so the guard's memory stays bounded.
    every(
        Duration::from_secs(10),
        &stop,
        Arc::downgrade(state),
        |state| async move {
            let snapshot = state.repo.snapshot();
            state.guard.limits.sweep(|m| snapshot.models.contains_key(m));
            state.guard.breakers.retain(|m, v| {
                snapshot
                    .models
                    .get(m)
                    .is_some_and(|e| e.versions.contains_key(&v))
            });
        },
    );
}

/// Runs `f` every `period` (the first time after one period) until `stop`
/// is cancelled or the state is gone.
fn every<F, Fut>(period: Duration, stop: &CancellationToken, state: std::sync::Weak<AppState>, f: F)
where
    F: Fn(Arc<AppState>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(stop.clone().run_until_cancelled_owned(async move {
        let mut tick = tokio::time::interval(period);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(state) = state.upgrade() else { return };
            f(state).await;
        }
    }));
}

/// `switchyard serve`: start, log where to send requests, stop gracefully
/// on SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(config.shutdown_timeout_secs + config.drain_secs);
    let server = start(config).await?;
    tracing::info!(
        data = %server.addr,
        admin = %server.admin_addr,
        grpc = %server.grpc_addr.map_or_else(|| "off".to_string(), |a| a.to_string()),
        "switchyard listening; try: curl -s http://{}/v2/models/digits",
        server.addr
    );
    signal().await;
    // readiness turns 503 before anything else happens
    server.state.begin_shutdown();
    tracing::info!("shutdown signal received; readiness is now 503, draining");
    match tokio::time::timeout(timeout, server.shutdown()).await {
        Ok(result) => {
            tracing::info!("drained; in-flight requests finished; exiting");
            result
        }
        Err(_) => anyhow::bail!("in-flight requests did not finish within {timeout:?}"),
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
