//! Writes one gRPC `ModelInfer` request as a length-prefixed gRPC message
//! (the body of an HTTP/2 POST to `/inference.GRPCInferenceService/ModelInfer`),
//! for load generators that send a prepared body: `benches/grpc_vs_http.sh`
//! hands it to h2load (`-d FILE`).
//!
//! ```text
//! cargo build --example grpc_frame
//! target/debug/examples/grpc_frame --model digits --version 2 --out digits.grpc
//! ```
//!
//! The frame is 1 byte compressed flag (0), the message length as 4 bytes
//! big-endian, then the serialized `inference.ModelInferRequest`: the first
//! held-out digits row (FP32 [1, 64]) as raw little-endian contents in
//! `raw_input_contents`, the request `examples/grpc_load` (benches/grpc_load.rs)
//! sends, built from the same generated types the server decodes with.

use prost::Message;
use switchyard::grpc::proto::model_infer_request::InferInputTensor;
use switchyard::grpc::proto::ModelInferRequest;

fn main() -> Result<(), String> {
    let (mut model, mut version, mut out) = ("digits".to_string(), String::new(), None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--model" => model = value,
            "--version" => version = value,
            "--out" => out = Some(value),
            other => return Err(format!("unknown flag {other} (--model M --version V --out FILE)")),
        }
    }
    let out = out.ok_or("--out FILE is required")?;

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/digits/samples.json");
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let samples: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    let row: Vec<f32> = samples["samples"][0]["inputs"]["input"][0]
        .as_array()
        .ok_or("samples.json: no first input row")?
        .iter()
        .map(|v| v.as_f64().map(|x| x as f32).ok_or("samples.json: not a number"))
        .collect::<Result<_, _>>()?;
    let request = ModelInferRequest {
        model_name: model,
        model_version: version,
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, row.len() as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![row
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<u8>>()
            .into()],
        ..Default::default()
    };

    let message = request.encode_to_vec();
    let len = u32::try_from(message.len()).map_err(|_| "message over 4 GiB")?;
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0); // not compressed
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&message);
    std::fs::write(&out, &frame).map_err(|e| format!("{out}: {e}"))?;
    Ok(())
}
