//! The floor under any server: bare ONNX Runtime time for one row, with the
//! server's own backend (`OnnxBackend`, 1 intra-op thread) on this thread.
//!
//! `cargo run --release --example ort_floor -- [--secs S] [--gap-us G] MODEL_DIR...`
//! runs the first held-out row of each `MODEL_DIR/samples.json` (else zeros)
//! through `MODEL_DIR/<version>/model.onnx` at batch 1 and 32, for about S
//! seconds each (default 1), and prints one tab-separated line per case:
//! `model  version  batch  median_us_per_batch  median_us_per_row  runs`.
//! `benches/load.sh` prints it next to the HTTP figures. `--gap-us G` sleeps
//! G µs between timed runs, as a worker thread at low load does between
//! requests: the run then starts on a cold core (caches, idle state), which
//! is what a c=1 request pays.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use switchyard::repository::{warmup_inputs, Samples};
use switchyard::runtime::onnx::{self, OnnxBackend};
use switchyard::runtime::Backend;
use switchyard::tensor::{Tensor, TensorData};

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let mut secs = 1.0f64;
    let mut gap = Duration::ZERO;
    let mut dirs: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--secs" {
            secs = args
                .next()
                .and_then(|s| s.parse().ok())
                .context("--secs needs a number")?;
        } else if a == "--gap-us" {
            gap = args
                .next()
                .and_then(|s| s.parse().ok())
                .map(Duration::from_micros)
                .context("--gap-us needs a number")?;
        } else {
            dirs.push(a);
        }
    }
    if dirs.is_empty() {
        anyhow::bail!("usage: ort_floor [--secs S] [--gap-us G] MODEL_DIR[:VERSION]...");
    }
    onnx::init(&onnx::default_library_path())?;
    println!("model\tversion\tbatch\tmedian_us_per_batch\tmedian_us_per_row\truns");
    for arg in dirs {
        // MODEL_DIR or MODEL_DIR:VERSION (default: the highest version).
        let (dir, version) = match arg.rsplit_once(':') {
            Some((d, v)) => (
                PathBuf::from(d),
                v.parse::<u64>()
                    .with_context(|| format!("bad version in {arg}"))?,
            ),
            None => {
                let dir = PathBuf::from(&arg);
                let v = highest_version(&dir).with_context(|| format!("{arg}: no version directory"))?;
                (dir, v)
            }
        };
        let model = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (mut backend, signature) =
            OnnxBackend::open(&dir.join(version.to_string()).join("model.onnx"), 1)?;
        let samples = Samples::read(&dir.join("samples.json"))?;
        let row = warmup_inputs(&signature, samples.as_ref());
        for batch in [1usize, 32] {
            let inputs = repeat_rows(&row, batch);
            let mut times = Vec::new();
            let budget = Duration::from_secs_f64(secs);
            // Warm-up: a tenth of the budget, untimed.
            let warm_until = Instant::now() + budget / 10;
            while Instant::now() < warm_until {
                backend.run(inputs.clone())?;
            }
            let start = Instant::now();
            while start.elapsed() < budget || times.len() < 10 {
                let input = inputs.clone();
                if !gap.is_zero() {
                    std::thread::sleep(gap);
                }
                let t = Instant::now();
                backend.run(input)?;
                times.push(t.elapsed());
            }
            times.sort_unstable();
            let median = times[times.len() / 2].as_secs_f64() * 1e6;
            println!(
                "{model}\t{version}\t{batch}\t{median:.1}\t{:.1}\t{}",
                median / batch as f64,
                times.len()
            );
        }
    }
    Ok(())
}

fn highest_version(dir: &Path) -> Option<u64> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| switchyard::repository::parse_version_dir(&e.file_name().to_string_lossy()))
        .filter(|v| dir.join(v.to_string()).join("model.onnx").is_file())
        .max()
}

/// The one-row inputs repeated to `batch` rows.
fn repeat_rows(row: &[Tensor], batch: usize) -> Vec<Tensor> {
    row.iter()
        .map(|t| {
            let mut data = TensorData::with_capacity(t.dtype(), t.data.len() * batch);
            for _ in 0..batch {
                data.extend_from(&t.data);
            }
            let mut shape = t.shape.clone();
            shape[0] *= batch as i64;
            Tensor {
                name: t.name.clone(),
                shape,
                data,
            }
        })
        .collect()
}
