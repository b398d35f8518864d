//! Property tests of the tensor codecs (issue 12): any bytes decode to a
//! value or an error, never a panic; what is encoded decodes back to the
//! same tensor; and over a real server, any body is answered 200 or a 4xx
//! JSON error, never a 5xx.

mod common;

use half::f16;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use switchyard::tensor::json::{decode, tensor_from_value, write_nested, DecodeOptions, FlatJson, NonFinite};
use switchyard::tensor::{binary, DataType, TensorData};

fn dtype() -> impl Strategy<Value = DataType> {
    prop::sample::select(DataType::ALL.to_vec())
}

fn shape() -> impl Strategy<Value = Vec<i64>> {
    prop::collection::vec(-2i64..6, 0..4)
}

/// A buffer of `n` elements of any type, with values JSON and binary both
/// carry exactly (finite floats; UTF-8 strings).
fn data(n: usize) -> impl Strategy<Value = TensorData> {
    prop_oneof![
        prop::collection::vec(any::<bool>(), n).prop_map(TensorData::Bool),
        prop::collection::vec(any::<u8>(), n).prop_map(TensorData::Uint8),
        prop::collection::vec(any::<u16>(), n).prop_map(TensorData::Uint16),
        prop::collection::vec(any::<u32>(), n).prop_map(TensorData::Uint32),
        prop::collection::vec(any::<u64>(), n).prop_map(TensorData::Uint64),
        prop::collection::vec(any::<i8>(), n).prop_map(TensorData::Int8),
        prop::collection::vec(any::<i16>(), n).prop_map(TensorData::Int16),
        prop::collection::vec(any::<i32>(), n).prop_map(TensorData::Int32),
        prop::collection::vec(any::<i64>(), n).prop_map(TensorData::Int64),
        prop::collection::vec(-60000.0f32..60000.0, n)
            .prop_map(|v| TensorData::Fp16(v.into_iter().map(f16::from_f32).collect())),
        prop::collection::vec(prop::num::f32::NORMAL | prop::num::f32::ZERO, n).prop_map(TensorData::Fp32),
        prop::collection::vec(prop::num::f64::NORMAL | prop::num::f64::ZERO, n).prop_map(TensorData::Fp64),
        prop::collection::vec(".{0,8}", n)
            .prop_map(|v| TensorData::Bytes(v.into_iter().map(String::into_bytes).collect())),
    ]
}

/// A shape and a buffer that fits it.
fn tensor() -> impl Strategy<Value = (Vec<i64>, TensorData)> {
    prop::collection::vec(1i64..4, 0..4).prop_flat_map(|shape| {
        let n = shape.iter().product::<i64>() as usize;
        (Just(shape), data(n))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_json_text_decodes_or_errs(text in "\\PC{0,64}", dtype in dtype(), shape in shape()) {
        let _ = decode(&text, dtype, &shape);
    }

    #[test]
    fn json_like_text_decodes_or_errs(text in "[\\[\\]0-9eE.,+\\- \"a-zNI]{0,48}", dtype in dtype(), shape in shape()) {
        let _ = decode(&text, dtype, &shape);
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
            let _ = tensor_from_value("x", &value, dtype);
        }
    }

    #[test]
    fn any_bytes_decode_as_binary_or_err(bytes in prop::collection::vec(any::<u8>(), 0..64), dtype in dtype(), shape in shape(), header in 0usize..80) {
        let _ = binary::decode(&bytes, dtype, &shape);
        if let Ok((json, rest)) = binary::split(&bytes, header) {
            prop_assert_eq!(json.len() + rest.len(), bytes.len());
        }
    }

    #[test]
    fn binary_round_trips((shape, data) in tensor()) {
        let mut bytes = Vec::new();
        binary::encode(&data, &mut bytes);
        prop_assert_eq!(bytes.len(), binary::encoded_len(&data));
        let back = binary::decode(&bytes, data.dtype(), &shape).unwrap();
        prop_assert_eq!(back, data);
    }

    #[test]
    fn flat_json_round_trips((shape, data) in tensor()) {
        let text = serde_json::to_string(&FlatJson(&data)).unwrap();
        let back = decode(&text, data.dtype(), &shape).unwrap();
        match (&back, &data) {
            // FP16 travels as its f32 value: the same half again
            (TensorData::Fp16(a), TensorData::Fp16(b)) => prop_assert_eq!(a, b),
            _ => prop_assert_eq!(&back, &data),
        }
    }

    #[test]
    fn nested_json_round_trips_with_its_shape((shape, data) in tensor()) {
        let mut text = Vec::new();
        write_nested(&mut text, &data, &shape, 0, NonFinite::Null).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&text).unwrap();
        let t = switchyard::tensor::json::tensor_from_value_with("x", &value, data.dtype(), DecodeOptions::default()).unwrap();
        if !data.is_empty() {
            prop_assert_eq!(t.shape, shape);
        }
        prop_assert_eq!(t.data, data);
    }
}

/// Any body to V1 and V2 (and to V2 with a binary section) is answered 200
/// or with a 4xx JSON error by a real server, never a 5xx or a dropped
/// connection.
#[test]
fn any_body_gets_an_answer_not_a_server_error() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let repo = common::TestRepo::bundled(&["digits"]);
        repo.add_fixture("two_inputs", "two_inputs");
        let s = common::TestServer::start(repo.path()).await;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let bodies = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            "[\\[\\]{}0-9eE.,:+\\- \"a-zNI]{0,96}".prop_map(String::into_bytes),
            (
                "(instances|inputs|signature_name|data|shape|name|datatype|parameters|id)",
                "[\\[\\]{}0-9.,:\" a-zA-Z]{0,64}"
            )
                .prop_map(|(k, v)| format!("{{\"{k}\": {v}}}").into_bytes()),
        ];
        let paths = prop::sample::select(vec![
            ("/v1/models/digits:predict", None),
            ("/v1/models/two_inputs:predict", None),
            ("/v2/models/digits/infer", None),
            ("/v2/models/two_inputs/infer", None),
            ("/v2/models/digits/infer", Some(8usize)),
        ]);
        let strategy = (bodies, paths);
        for _ in 0..192 {
            let (body, (path, binary_header)) = strategy.new_tree(&mut runner).unwrap().current();
            let mut req = s.client.post(s.url(path)).body(body.clone());
            if let Some(n) = binary_header {
                req = req.header("inference-header-content-length", n.to_string());
            }
            let resp = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("{path} {body:?}: no answer: {e}"));
            let status = resp.status().as_u16();
            let ct = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string());
            let text = resp.text().await.unwrap();
            assert!(
                status == 200 || (400..500).contains(&status),
                "{path} {:?}: {status} {text}",
                String::from_utf8_lossy(&body)
            );
            if status != 200 {
                assert_eq!(ct.as_deref(), Some("application/json"), "{text}");
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert!(v["error"].is_string(), "{text}");
            }
        }
        s.stop().await;
    });
}
