//! Triton's binary tensor data extension end to end: every datatype through
//! the identity fixtures, JSON and binary inputs mixed, framing errors.
//!
//! Request bytes are built here by hand (little-endian, length-prefixed
//! BYTES), not with the server's codec, so the test checks the wire format.

mod common;

use common::{TestRepo, TestServer};
use half::f16;
use serde_json::{json, Value};

const HEADER: &str = "inference-header-content-length";

/// A response split into its parts.
struct Answer {
    status: u16,
    content_type: String,
    /// `Inference-Header-Content-Length`, when present.
    header_len: Option<usize>,
    json: Value,
    binary: Vec<u8>,
}

/// POSTs a JSON header followed by `binary` (with the framing header unless
/// `header_len` overrides it) and splits the answer.
async fn post_binary(
    s: &TestServer,
    path: &str,
    json: &Value,
    binary: &[u8],
    header_len: Option<&str>,
) -> Answer {
    let header = json.to_string().into_bytes();
    let len = header_len.map_or_else(|| header.len().to_string(), str::to_string);
    let mut body = header;
    body.extend_from_slice(binary);
    let resp = s
        .client
        .post(s.url(path))
        .header("content-type", "application/octet-stream")
        .header(HEADER, len)
        .body(body)
        .send()
        .await
        .unwrap();
    split_answer(resp).await
}

async fn split_answer(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let header_len = resp
        .headers()
        .get(HEADER)
        .map(|v| v.to_str().unwrap().parse::<usize>().unwrap());
    let body = resp.bytes().await.unwrap().to_vec();
    let n = header_len.unwrap_or(body.len());
    assert!(n <= body.len(), "header length {n} > body {}", body.len());
    let json = serde_json::from_slice(&body[..n])
        .unwrap_or_else(|e| panic!("JSON header: {e}: {}", String::from_utf8_lossy(&body[..n])));
    Answer {
        status,
        content_type,
        header_len,
        json,
        binary: body[n..].to_vec(),
    }
}

/// Six values of `dtype` for a [2, 3] tensor: as JSON and as binary bytes.
fn sample(dtype: &str) -> (Value, Vec<u8>) {
    macro_rules! le {
        ($($x:expr),*) => {{
            let values = [$($x),*];
            let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
            (json!(values), bytes)
        }};
    }
    match dtype {
        "BOOL" => (
            json!([true, false, true, true, false, false]),
            vec![1, 0, 1, 1, 0, 0],
        ),
        "UINT8" => le!(0u8, 1, 2, 127, 128, 255),
        "UINT16" => le!(0u16, 1, 256, 4096, 65534, u16::MAX),
        "UINT32" => le!(0u32, 1, 1 << 16, 1 << 24, 7, u32::MAX),
        "UINT64" => le!(0u64, 1, 1 << 40, 1 << 62, 9, 1 << 53),
        "INT8" => le!(i8::MIN, -1, 0, 1, 100, i8::MAX),
        "INT16" => le!(i16::MIN, -300, 0, 1, 300, i16::MAX),
        "INT32" => le!(i32::MIN, -70000, 0, 1, 70000, i32::MAX),
        "INT64" => le!(-(1i64 << 53), -(1 << 40), 0, 1, 1 << 40, 1 << 53),
        "FP16" => {
            let values = [-2.5f32, 0.0, 1.0, 0.5, 65504.0, 0.25];
            let bytes = values
                .iter()
                .flat_map(|&x| f16::from_f32(x).to_bits().to_le_bytes())
                .collect();
            (json!(values), bytes)
        }
        "FP32" => le!(-1.5f32, 0.0, 0.5, 3.25, 1024.0, 7.0),
        "FP64" => le!(-1.5f64, 0.0, 1e-300, 3.25, f64::MAX, 7.0),
        "BYTES" => {
            let strings = ["", "a", "héllo", "two words", &"x".repeat(300), "end"];
            let mut bytes = Vec::new();
            for s in strings {
                bytes.extend_from_slice(&(s.len() as u32).to_le_bytes());
                bytes.extend_from_slice(s.as_bytes());
            }
            (json!(strings), bytes)
        }
        other => panic!("no sample for {other}"),
    }
}

const IDENTITIES: [(&str, &str); 13] = [
    ("bool", "BOOL"),
    ("uint8", "UINT8"),
    ("uint16", "UINT16"),
    ("uint32", "UINT32"),
    ("uint64", "UINT64"),
    ("int8", "INT8"),
    ("int16", "INT16"),
    ("int32", "INT32"),
    ("int64", "INT64"),
    ("fp16", "FP16"),
    ("fp32", "FP32"),
    ("fp64", "FP64"),
    ("string", "BYTES"),
];

fn identity_repo() -> TestRepo {
    let repo = TestRepo::empty();
    for (suffix, _) in IDENTITIES {
        let name = format!("identity_{suffix}");
        repo.add_fixture(&name, &name);
    }
    repo.add_fixture("two_inputs", "two_inputs");
    repo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_datatype_round_trips_in_binary() {
    let repo = identity_repo();
    let s = TestServer::start(repo.path()).await;
    let (st, meta) = s.get("/v2").await;
    assert_eq!(st, 200);
    assert!(
        meta["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("binary_tensor_data")),
        "{meta}"
    );

    for (suffix, dtype) in IDENTITIES {
        let path = format!("/v2/models/identity_{suffix}/infer");
        let (values, bytes) = sample(dtype);
        let input = json!({"name": "x", "shape": [2, 3], "datatype": dtype,
                           "parameters": {"binary_data_size": bytes.len()}});

        // binary in, binary out (request-level binary_data_output)
        let req = json!({"id": "rt", "inputs": [input], "parameters": {"binary_data_output": true}});
        let a = post_binary(&s, &path, &req, &bytes, None).await;
        assert_eq!(a.status, 200, "{dtype}: {}", a.json);
        assert_eq!(a.content_type, "application/octet-stream", "{dtype}");
        assert!(a.header_len.is_some(), "{dtype}: binary answer without {HEADER}");
        assert_eq!(a.json["id"], "rt");
        let out = &a.json["outputs"][0];
        assert_eq!(out["name"], "y", "{dtype}");
        assert_eq!(out["datatype"], dtype);
        assert_eq!(out["shape"], json!([2, 3]));
        assert!(
            out.get("data").is_none(),
            "{dtype}: binary output also has data: {out}"
        );
        assert_eq!(out["parameters"]["binary_data_size"], bytes.len(), "{dtype}");
        assert_eq!(a.binary, bytes, "{dtype}: identity must give back the same bytes");

        // binary in, JSON out: the values are the JSON sample
        let req = json!({"inputs": [input], "outputs": [{"name": "y"}]});
        let a = post_binary(&s, &path, &req, &bytes, None).await;
        assert_eq!(a.status, 200, "{dtype}: {}", a.json);
        assert_eq!(a.content_type, "application/json", "{dtype}");
        assert_eq!(a.header_len, None, "{dtype}: JSON-only answer with {HEADER}");
        assert_eq!(a.json["outputs"][0]["data"], values, "{dtype}");
        assert!(a.json["outputs"][0].get("parameters").is_none(), "{dtype}");

        // JSON in, binary out (per-output binary_data)
        let req = json!({"inputs": [{"name": "x", "shape": [2, 3], "datatype": dtype, "data": values}],
                         "outputs": [{"name": "y", "parameters": {"binary_data": true}}]});
        let resp = s.client.post(s.url(&path)).json(&req).send().await.unwrap();
        let a = split_answer(resp).await;
        assert_eq!(a.status, 200, "{dtype}: {}", a.json);
        assert_eq!(a.binary, bytes, "{dtype}: JSON in, binary out");
        assert_eq!(
            a.json["outputs"][0]["parameters"]["binary_data_size"],
            bytes.len()
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_binary_inputs_mix_and_outputs_choose_their_encoding() {
    let repo = identity_repo();
    let s = TestServer::start(repo.path()).await;
    let a: Vec<f32> = (0..8).map(|i| i as f32).collect();
    let b_bytes: Vec<u8> = [2.0f32; 8].iter().flat_map(|x| x.to_le_bytes()).collect();
    let sum: Vec<f32> = a.iter().map(|x| x + 2.0).collect();
    let prod: Vec<f32> = a.iter().map(|x| x * 2.0).collect();

    // a as JSON, b as binary; sum in binary (per output), prod as JSON
    // although the request asks for binary outputs: binary_data wins
    let req = json!({
        "inputs": [
            {"name": "a", "shape": [2, 4], "datatype": "FP32", "data": [[0, 1, 2, 3], [4, 5, 6, 7]]},
            {"name": "b", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}}
        ],
        "parameters": {"binary_data_output": true},
        "outputs": [{"name": "prod", "parameters": {"binary_data": false}}, {"name": "sum"}]
    });
    let ans = post_binary(&s, "/v2/models/two_inputs/infer", &req, &b_bytes, None).await;
    assert_eq!(ans.status, 200, "{}", ans.json);
    let outs = ans.json["outputs"].as_array().unwrap();
    assert_eq!(outs[0]["name"], "prod");
    assert_eq!(outs[0]["data"], json!(prod));
    assert_eq!(outs[1]["name"], "sum");
    assert_eq!(outs[1]["parameters"]["binary_data_size"], 32);
    let got: Vec<f32> = ans
        .binary
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(got, sum);

    // both binary, in the order the JSON lists them (b first, then a)
    let a_bytes: Vec<u8> = a.iter().flat_map(|x| x.to_le_bytes()).collect();
    let req = json!({
        "inputs": [
            {"name": "b", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}},
            {"name": "a", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}}
        ],
        "outputs": [{"name": "sum", "parameters": {"binary_data": true}},
                    {"name": "prod", "parameters": {"binary_data": true}}]
    });
    let mut both = b_bytes.clone();
    both.extend_from_slice(&a_bytes);
    let ans = post_binary(&s, "/v2/models/two_inputs/infer", &req, &both, None).await;
    assert_eq!(ans.status, 200, "{}", ans.json);
    let got: Vec<f32> = ans
        .binary
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(got, [sum.clone(), prod.clone()].concat());
    // JSON-only requests still answer plain JSON with the header covering nothing
    let (st, body) = s
        .post(
            "/v2/models/two_inputs/infer",
            &json!({"inputs": [
                {"name": "a", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]},
                {"name": "b", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["outputs"][0]["data"], json!([2.0, 3.0, 4.0, 5.0]));
    s.stop().await;
}

/// A malformed request and the text its 400 must contain.
struct Case {
    what: &'static str,
    path: &'static str,
    header: Value,
    binary: Vec<u8>,
    /// Overrides `Inference-Header-Content-Length` (else the JSON's length).
    header_len: Option<&'static str>,
    needle: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_framing_is_a_400_and_the_server_keeps_serving() {
    let repo = identity_repo();
    let s = TestServer::start(repo.path()).await;
    let fp32 = "/v2/models/identity_fp32/infer";
    let four: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let input = |size: usize| {
        json!({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32",
                           "parameters": {"binary_data_size": size}}]})
    };

    let fp32_case = |what, header, binary: &[u8], needle| Case {
        what,
        path: fp32,
        header,
        binary: binary.to_vec(),
        header_len: None,
        needle,
    };
    let cases = [
        Case {
            header_len: Some("100000"),
            ..fp32_case(
                "header longer than the body",
                input(16),
                &four,
                "exceeds the body length",
            )
        },
        Case {
            header_len: Some("abc"),
            ..fp32_case(
                "non-numeric header",
                input(16),
                &four,
                "Inference-Header-Content-Length",
            )
        },
        Case {
            header_len: Some("-5"),
            ..fp32_case(
                "negative header",
                input(16),
                &four,
                "Inference-Header-Content-Length",
            )
        },
        fp32_case(
            "sizes exceed the binary section",
            input(20),
            &four,
            "add up to 20 bytes but 16",
        ),
        fp32_case("bytes left over", input(12), &four, "add up to 12 bytes but 16"),
        fp32_case(
            "binary data without binary inputs",
            json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}),
            &four,
            "add up to 0 bytes",
        ),
        fp32_case(
            "size not a multiple of the element size",
            input(6),
            &four[..6],
            "not a multiple",
        ),
        fp32_case(
            "size does not match the shape",
            json!({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
                               "parameters": {"binary_data_size": 16}}]}),
            &four,
            "needs 3",
        ),
        Case {
            path: "/v2/models/identity_string/infer",
            ..fp32_case(
                "BYTES prefix past its buffer",
                json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": 6}}]}),
                &[9, 0, 0, 0, b'h', b'i'],
                "runs past the end",
            )
        },
        fp32_case(
            "binary_data_size and data",
            json!({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4],
                               "parameters": {"binary_data_size": 16}}]}),
            &four,
            "both",
        ),
        fp32_case(
            "binary_data_size not an integer",
            json!({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32",
                               "parameters": {"binary_data_size": "16"}}]}),
            &four,
            "non-negative integer",
        ),
        fp32_case(
            "binary_data not a boolean",
            json!({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}],
                   "outputs": [{"name": "y", "parameters": {"binary_data": 1}}]}),
            &[],
            "must be a boolean",
        ),
        Case {
            path: "/v2/models/identity_bool/infer",
            ..fp32_case(
                "BOOL byte other than 0 or 1",
                json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "BOOL",
                                   "parameters": {"binary_data_size": 2}}]}),
                &[1, 7],
                "expected 0 or 1",
            )
        },
    ];
    for c in cases {
        let what = c.what;
        let a = post_binary(&s, c.path, &c.header, &c.binary, c.header_len).await;
        assert_eq!(a.status, 400, "{what}: {}", a.json);
        assert_eq!(a.content_type, "application/json", "{what}");
        let msg = a.json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {}", a.json));
        assert!(msg.contains(c.needle), "{what}: {msg:?} lacks {:?}", c.needle);
    }

    // binary bytes without the framing header: the JSON parser sees garbage
    let mut body = input(16).to_string().into_bytes();
    body.extend_from_slice(&four);
    let (st, err) = s.post_raw(fp32, body).await;
    assert_eq!(st, 400, "{err}");
    // binary_data_size but no header and no bytes
    let (st, err) = s.post(fp32, &input(16)).await;
    assert_eq!(st, 400, "{err}");
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("no Inference-Header-Content-Length"),
        "{err}"
    );
    // raw binary requests (header length 0) are not supported
    let a = post_binary(&s, fp32, &json!({}), &four, Some("0")).await;
    assert_eq!(a.status, 501, "{}", a.json);
    // a header that covers the whole (JSON) body is fine
    let req = json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [5, 6]}]});
    let a = post_binary(&s, fp32, &req, &[], None).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["outputs"][0]["data"], json!([5.0, 6.0]));

    // and a valid binary request still succeeds afterwards
    let a = post_binary(&s, fp32, &input(16), &four, None).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["outputs"][0]["data"], json!([1.0, 2.0, 3.0, 4.0]));
    s.stop().await;
}
