//! Tests of the version runtime: workers, batching, inline runs and turns,
//! supervision.

use std::sync::atomic::AtomicUsize;

use super::*;
use crate::runtime::{BackendError, TensorSpec};
use crate::tensor::{DataType, TensorData};

/// Echoes its input; panics on a negative first element.
struct Fragile;

impl Backend for Fragile {
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        if let TensorData::Fp32(v) = &inputs[0].data {
            assert!(v[0] >= 0.0, "a negative input");
        }
        Ok(inputs)
    }
}

fn signature() -> Signature {
    let spec = TensorSpec {
        name: "x".into(),
        datatype: DataType::Fp32,
        shape: vec![1],
    };
    Signature {
        inputs: vec![spec.clone()],
        outputs: vec![spec],
    }
}

fn input(v: f32) -> Vec<Tensor> {
    vec![Tensor {
        name: "x".into(),
        shape: vec![1],
        data: TensorData::Fp32(vec![v]),
    }]
}

fn wait_healthy(rt: &VersionRuntime) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rt.is_healthy() {
        assert!(Instant::now() < deadline, "the worker was not replaced");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A runtime over one [`Fragile`] backend whose reopen function counts
/// its calls (and fails the first when `first_reopen_fails`).
fn fragile(config: ExecutionConfig, first_reopen_fails: bool) -> (VersionRuntime, Arc<AtomicUsize>) {
    let opens = Arc::new(AtomicUsize::new(0));
    let counter = opens.clone();
    let reopen: Reopen = Arc::new(move || {
        if counter.fetch_add(1, Ordering::SeqCst) == 0 && first_reopen_fails {
            Err("not yet".into())
        } else {
            Ok(Box::new(Fragile) as Box<dyn Backend>)
        }
    });
    let rt =
        VersionRuntime::start_with_reopen("m-1", signature(), config, vec![Box::new(Fragile)], Some(reopen))
            .unwrap();
    (rt, opens)
}

#[test]
fn a_panicking_worker_fails_its_job_and_gets_a_fresh_backend() {
    // the first reopen fails: the version stays unhealthy until one works
    let (rt, opens) = fragile(ExecutionConfig::default(), true);
    assert!(rt.is_healthy());
    let err = rt.infer_blocking(input(-1.0)).unwrap_err();
    assert!(matches!(err, RuntimeError::Inference(_)), "{err:?}");
    wait_healthy(&rt);
    assert_eq!(
        opens.load(Ordering::SeqCst),
        2,
        "one failed reopen, then a good one"
    );
    assert_eq!(rt.infer_blocking(input(2.0)).unwrap(), input(2.0));
}

#[test]
fn without_a_reopen_function_the_worker_keeps_its_backend() {
    let rt = VersionRuntime::start(
        "m-1",
        signature(),
        ExecutionConfig::default(),
        vec![Box::new(Fragile)],
    )
    .unwrap();
    assert!(rt.infer_blocking(input(-1.0)).is_err());
    assert_eq!(rt.infer_blocking(input(1.0)).unwrap(), input(1.0));
    assert!(rt.is_healthy());
}

/// Echoes its input after `pause`, recording the rows of every run.
struct Slow {
    pause: Duration,
    runs: Arc<parking_lot::Mutex<Vec<i64>>>,
}

impl Backend for Slow {
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        std::thread::sleep(self.pause);
        self.runs.lock().push(inputs[0].shape[0]);
        Ok(inputs)
    }
}

/// One input and one output `x`, of shape `[-1, 1]` (batchable).
fn rows_signature() -> Signature {
    let spec = TensorSpec {
        name: "x".into(),
        datatype: DataType::Fp32,
        shape: vec![-1, 1],
    };
    Signature {
        inputs: vec![spec.clone()],
        outputs: vec![spec],
    }
}

fn row(v: f32) -> Vec<Tensor> {
    vec![Tensor {
        name: "x".into(),
        shape: vec![1, 1],
        data: TensorData::Fp32(vec![v]),
    }]
}

#[test]
fn a_worker_waits_to_fill_a_batch_only_for_requests_on_their_way() {
    let runs = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let config = ExecutionConfig {
        max_batch_size: 8,
        max_queue_delay_us: 10_000_000, // far longer than any wait below
        ..ExecutionConfig::default()
    };
    let backend = Slow {
        pause: Duration::from_millis(200),
        runs: runs.clone(),
    };
    let rt =
        Arc::new(VersionRuntime::start("m-1", rows_signature(), config, vec![Box::new(backend)]).unwrap());
    rt.infer_blocking(row(0.0)).unwrap(); // a first run: the worker knows how long one takes
    let later = |rt: &Arc<VersionRuntime>, after: Duration, arrival: Option<Arrival>| {
        let rt = rt.clone();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            if let Some(a) = arrival {
                a.arrived();
            }
            rt.infer_blocking(row(2.0)).unwrap()
        })
    };

    // nobody on the way: the first request runs alone at once, the
    // second (20 ms later) in the next run
    let second = later(&rt, Duration::from_millis(20), None);
    rt.infer_blocking(row(1.0)).unwrap();
    second.join().unwrap();
    assert_eq!(runs.lock()[1..], [1, 1]);

    // a request on its way (being decoded): the worker waits for it
    let arrival = rt.arrival();
    let second = later(&rt, Duration::from_millis(20), Some(arrival));
    rt.infer_blocking(row(1.0)).unwrap();
    second.join().unwrap();
    assert_eq!(runs.lock()[3..], [2], "the two requests share one run");
    assert_eq!(rt.arrivals.pending(), 0);
}

/// The thread and the rows of every run.
type RunLog = Arc<parking_lot::Mutex<Vec<(std::thread::ThreadId, i64)>>>;

/// Echoes its input, recording the thread and the rows of every run;
/// each run takes at least the given time.
struct Runs(RunLog, Duration);

impl Backend for Runs {
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        std::thread::sleep(self.1);
        self.0
            .lock()
            .push((std::thread::current().id(), inputs[0].shape[0]));
        Ok(inputs)
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(f)
}

/// Waits for the workers to let go of their backends: a worker answers
/// before it does, and a request in between finds no free backend.
fn wait_backends_free(rt: &VersionRuntime) {
    let since = Instant::now();
    while rt.slots.iter().any(|slot| slot.is_locked()) {
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "a worker keeps its backend"
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_fast_version_runs_a_request_on_the_callers_thread() {
    let here = std::thread::current().id();
    // not alone, a request runs here too (in its turn's batch)
    for (inline_below_us, server_idle, inline) in [
        (200_000, true, true),
        (200_000, false, true),
        (0, true, false),
        (0, false, false),
    ] {
        let runs = RunLog::default();
        let config = ExecutionConfig {
            inline_below_us,
            ..ExecutionConfig::default()
        };
        let rt = VersionRuntime::start(
            "m-1",
            signature(),
            config,
            vec![Box::new(Runs(runs.clone(), Duration::ZERO))],
        )
        .unwrap();
        // before any run the version's speed is unknown: never inline
        block_on(rt.infer(input(1.0), None, server_idle)).unwrap();
        wait_backends_free(&rt);
        let out = block_on(rt.infer(input(2.0), None, server_idle)).unwrap();
        assert_eq!(out, input(2.0));
        let runs = runs.lock();
        assert_ne!(runs[0].0, here, "the first run is a worker's");
        assert_eq!(
            runs[1].0 == here,
            inline,
            "inline_below_us {inline_below_us}, server idle {server_idle}"
        );
    }
}

/// A fast, batching version over one [`Runs`] backend, after its first
/// run (by a worker: its speed is known from then on).
fn recorded() -> (VersionRuntime, RunLog) {
    recorded_taking(Duration::ZERO)
}

/// [`recorded`], with runs that take at least `run`.
fn recorded_taking(run: Duration) -> (VersionRuntime, RunLog) {
    let config = ExecutionConfig {
        max_batch_size: 4,
        inline_below_us: 200_000,
        ..ExecutionConfig::default()
    };
    let runs = RunLog::default();
    let rt = VersionRuntime::start(
        "m-1",
        rows_signature(),
        config,
        vec![Box::new(Runs(runs.clone(), run))],
    )
    .unwrap();
    rt.infer_blocking(row(0.0)).unwrap();
    wait_backends_free(&rt);
    runs.lock().clear();
    (rt, runs)
}

#[test]
fn concurrent_requests_of_one_turn_run_together_on_the_callers_thread() {
    let here = std::thread::current().id();
    let (rt, runs) = recorded();
    // six requests received in one turn of this thread's event loop: the
    // first leads, the others join; batches hold at most four rows
    let answers = block_on(futures::future::join_all(
        (1..=6).map(|i| rt.infer(row(i as f32), None, false)),
    ));
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(
            answer.unwrap(),
            row(i as f32 + 1.0),
            "each request gets its own rows back"
        );
    }
    assert_eq!(*runs.lock(), [(here, 4), (here, 2)]);
    // the next turn starts a new batch
    block_on(rt.infer(row(7.0), None, false)).unwrap();
    assert_eq!(runs.lock()[2..], [(here, 1)]);
}

#[test]
fn a_turn_past_its_time_budget_hands_the_rest_to_the_workers() {
    let here = std::thread::current().id();
    // every run takes longer than a turn may hold its thread
    let (rt, runs) = recorded_taking(TURN_BUDGET + Duration::from_millis(1));
    let answers = block_on(futures::future::join_all(
        (1..=6).map(|i| rt.infer(row(i as f32), None, false)),
    ));
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.unwrap(), row(i as f32 + 1.0));
    }
    let runs = runs.lock();
    assert_eq!(runs[0], (here, 4), "the first batch runs here: {runs:?}");
    assert_eq!(runs[1..].iter().map(|r| r.1).sum::<i64>(), 2, "{runs:?}");
    assert!(
        runs[1..].iter().all(|r| r.0 != here),
        "a worker ran the rest: {runs:?}"
    );
}

#[test]
fn a_turn_whose_backend_is_busy_goes_to_the_workers() {
    let here = std::thread::current().id();
    let (rt, runs) = recorded();
    let busy = rt.slots[0].lock(); // another thread is running it
    let answers = block_on(async {
        let pending = futures::future::join_all((1..=3).map(|i| rt.infer(row(i as f32), None, false)));
        tokio::pin!(pending);
        // the turn is handed to the worker, which waits for the backend
        assert!(futures::poll!(&mut pending).is_pending());
        assert!(futures::poll!(&mut pending).is_pending());
        drop(busy);
        pending.await
    });
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    let runs = runs.lock();
    assert_eq!(runs.iter().map(|r| r.1).sum::<i64>(), 3, "{runs:?}");
    assert!(runs.iter().all(|r| r.0 != here), "the worker ran them: {runs:?}");
}

#[test]
fn a_leader_dropped_before_its_turn_ran_hands_the_batch_to_the_workers() {
    let here = std::thread::current().id();
    let (rt, runs) = recorded();
    let answer = block_on(async {
        let mut leader = Box::pin(rt.infer(row(1.0), None, false));
        let mut joined = Box::pin(rt.infer(row(2.0), None, false));
        assert!(futures::poll!(&mut leader).is_pending(), "the leader yields");
        assert!(
            futures::poll!(&mut joined).is_pending(),
            "the second joins and waits"
        );
        drop(leader); // its client went away
        joined.await
    });
    assert_eq!(answer.unwrap(), row(2.0), "the request that joined is answered");
    let runs = runs.lock();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_ne!(runs[0].0, here, "a worker ran it");
    assert_eq!(
        runs[0].1, 1,
        "the dropped leader's own request is not run: {runs:?}"
    );
}

#[test]
fn a_backend_that_panics_inline_is_replaced_by_its_worker() {
    let config = ExecutionConfig {
        inline_below_us: 200_000,
        ..ExecutionConfig::default()
    };
    let (rt, opens) = fragile(config, false);
    rt.infer_blocking(input(1.0)).unwrap();
    wait_backends_free(&rt);
    let err = block_on(rt.infer(input(-1.0), None, true)).unwrap_err();
    assert!(matches!(err, RuntimeError::Inference(_)), "{err:?}");
    wait_healthy(&rt);
    assert_eq!(
        opens.load(Ordering::SeqCst),
        1,
        "the worker opened a fresh backend"
    );
    assert_eq!(block_on(rt.infer(input(3.0), None, true)).unwrap(), input(3.0));
    assert_eq!(rt.infer_blocking(input(4.0)).unwrap(), input(4.0));
}

#[test]
fn a_client_budget_is_only_the_clients_when_shorter() {
    let model = Duration::from_millis(100);
    let b = Budget::lowered(model, Some(Duration::from_millis(5)));
    assert_eq!(b.owner, crate::runtime::DeadlineOwner::Client);
    let b = Budget::lowered(model, Some(Duration::from_secs(60)));
    assert_eq!(b, Budget::model(model));
    assert_eq!(Budget::lowered(model, Some(model)), Budget::model(model));
    assert_eq!(Budget::lowered(model, None), Budget::model(model));
}
