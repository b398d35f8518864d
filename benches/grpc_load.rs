//! A gRPC load generator for `ModelInfer` (what ghz does, which is not
//! available here): fixed concurrency, fixed duration, one request body
//! sent over and over; prints one JSON line with req/s, p50, p99, errors
//! and its own CPU. `GRPC_LOADGEN=tonic benches/grpc_vs_http.sh` drives the
//! gRPC side with it (the default there is h2load, a lighter client).
//!
//! ```text
//! cargo build --release --example grpc_load
//! target/release/examples/grpc_load --addr 127.0.0.1:8001 --model digits --version 2 \
//!     --concurrency 64 --duration 10 [--typed] [--connections 1] [--warmup 1]
//! ```
//!
//! The request is the first held-out digits row (FP32 [1, 64]) as raw
//! little-endian contents, as tritonclient sends it (`--typed`:
//! `fp32_contents`). `--concurrency` calls are kept in flight, spread over
//! `--connections` HTTP/2 connections (gRPC clients multiplex on one by
//! default). Only calls that complete inside the measured window count.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use switchyard::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use switchyard::grpc::proto::model_infer_request::InferInputTensor;
use switchyard::grpc::proto::{InferTensorContents, ModelInferRequest};
use tonic::transport::{Channel, Endpoint};

struct Args {
    addr: String,
    model: String,
    version: String,
    concurrency: usize,
    duration: Duration,
    warmup: Duration,
    connections: usize,
    typed: bool,
    threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        addr: "127.0.0.1:8001".into(),
        model: "digits".into(),
        version: String::new(),
        concurrency: 1,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(1),
        connections: 1,
        typed: false,
        threads: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--typed" {
            a.typed = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let secs = |v: &str| {
            v.parse::<f64>()
                .map(Duration::from_secs_f64)
                .map_err(|e| format!("{flag}: {e}"))
        };
        let count = |v: &str| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--addr" => a.addr = value,
            "--model" => a.model = value,
            "--version" => a.version = value,
            "--concurrency" => a.concurrency = count(&value)?.max(1),
            "--duration" => a.duration = secs(&value)?,
            "--warmup" => a.warmup = secs(&value)?,
            "--connections" => a.connections = count(&value)?.max(1),
            "--threads" => a.threads = count(&value)?.max(1),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

/// The first held-out digits row as a 1-row request.
fn request(a: &Args) -> ModelInferRequest {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/digits/samples.json"))
        .expect("models/digits/samples.json");
    let samples: serde_json::Value = serde_json::from_str(&text).expect("samples.json is JSON");
    let row: Vec<f32> = samples["samples"][0]["inputs"]["input"][0]
        .as_array()
        .expect("a row of pixels")
        .iter()
        .map(|v| v.as_f64().expect("a number") as f32)
        .collect();
    let mut input = InferInputTensor {
        name: "input".into(),
        datatype: "FP32".into(),
        shape: vec![1, row.len() as i64],
        ..Default::default()
    };
    let mut req = ModelInferRequest {
        model_name: a.model.clone(),
        model_version: a.version.clone(),
        ..Default::default()
    };
    if a.typed {
        input.contents = Some(InferTensorContents {
            fp32_contents: row,
            ..Default::default()
        });
    } else {
        let bytes: Vec<u8> = row.iter().flat_map(|x| x.to_le_bytes()).collect();
        req.raw_input_contents = vec![bytes.into()];
    }
    req.inputs = vec![input];
    req
}

/// utime + stime of this process, from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, r)| r)
        .unwrap_or("")
        .split(' ')
        .collect();
    // fields after the command name: utime and stime are the 12th and 13th
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    // CLK_TCK is 100 on Linux
    Duration::from_millis(ticks * 10)
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    latency_us: Option<Histogram<u64>>,
}

/// One worker: calls back to back until `end`, counting those that began
/// after `start` and finished by `end`.
async fn worker(
    mut client: GrpcInferenceServiceClient<Channel>,
    req: ModelInferRequest,
    start: Instant,
    end: Instant,
) -> Tally {
    let mut t = Tally {
        latency_us: Some(Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")),
        ..Default::default()
    };
    loop {
        let sent = Instant::now();
        if sent >= end {
            return t;
        }
        let result = client.model_infer(req.clone()).await;
        let done = Instant::now();
        if sent < start || done > end {
            continue; // warm-up, or finished after the window
        }
        match result {
            Ok(_) => {
                t.ok += 1;
                let us = done.duration_since(sent).as_micros() as u64;
                let _ = t.latency_us.as_mut().expect("set above").record(us.max(1));
            }
            Err(status) => {
                t.errors += 1;
                t.first_error
                    .get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
            }
        }
    }
}

async fn run(a: Args) -> Result<(), String> {
    let req = request(&a);
    let mut channels = Vec::with_capacity(a.connections);
    for _ in 0..a.connections {
        let channel = Endpoint::from_shared(format!("http://{}", a.addr))
            .map_err(|e| e.to_string())?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", a.addr))?;
        channels.push(channel);
    }
    // one call first: a wrong model or address fails here, loudly
    GrpcInferenceServiceClient::new(channels[0].clone())
        .model_infer(req.clone())
        .await
        .map_err(|s| format!("the first call failed: {:?}: {}", s.code(), s.message()))?;
    let start = Instant::now() + a.warmup;
    let end = start + a.duration;
    let workers: Vec<_> = (0..a.concurrency)
        .map(|i| {
            let client = GrpcInferenceServiceClient::new(channels[i % channels.len()].clone());
            tokio::spawn(worker(client, req.clone(), start, end))
        })
        .collect();
    tokio::time::sleep_until(start.into()).await;
    let cpu0 = cpu_time();
    let mut total = Tally {
        latency_us: Some(Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")),
        ..Default::default()
    };
    for w in workers {
        let t = w.await.map_err(|e| e.to_string())?;
        total.ok += t.ok;
        total.errors += t.errors;
        if total.first_error.is_none() {
            total.first_error = t.first_error;
        }
        if let (Some(all), Some(h)) = (total.latency_us.as_mut(), t.latency_us.as_ref()) {
            all.add(h).map_err(|e| e.to_string())?;
        }
    }
    let cpu = cpu_time().saturating_sub(cpu0);
    let h = total.latency_us.expect("set above");
    let secs = a.duration.as_secs_f64();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "model": a.model,
            "concurrency": a.concurrency,
            "connections": a.connections,
            "contents": if a.typed { "typed" } else { "raw" },
            "ok": total.ok,
            "errors": total.errors,
            "first_error": total.first_error,
            "req_s": total.ok as f64 / secs,
            "p50_ms": ms(0.50),
            "p99_ms": ms(0.99),
            "cpu_pct": cpu.as_secs_f64() / secs * 100.0,
        })
    );
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("grpc_load: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if args.concurrency == 1 { 1 } else { args.threads })
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Err(e) = runtime.block_on(run(args)) {
        eprintln!("grpc_load: {e}");
        std::process::exit(1);
    }
}
