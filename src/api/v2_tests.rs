//! Reading an inference request in one pass ([`FastInput`]) gives what the
//! two-pass read ([`InputTensor`], then [`decode`]) gives, for every body.

use super::*;

/// The inputs of `body` as the server decodes them: through
/// [`parse_request`], and through the two-pass read alone.
fn both_ways(body: &str) -> (Result<Vec<Tensor>, ApiError>, Result<Vec<Tensor>, ApiError>) {
    let decoded = |request: Result<InferRequest<InputTensor<'_>>, ApiError>| {
        request.and_then(|r| decode_inputs(r.inputs, None))
    };
    (
        decoded(parse_request(body.as_bytes())),
        decoded(parse_request_in_two_passes(body.as_bytes())),
    )
}

/// Whether the one-pass read took `body` (its data decoded as read).
fn read_in_one_pass(body: &str) -> bool {
    serde_json::from_str::<InferRequest<FastInput<'_>>>(body).is_ok_and(|r| {
        r.inputs
            .iter()
            .all(|i| matches!(i.0.data, Some(Data::Decoded(_))))
    })
}

#[test]
fn datatype_and_shape_before_data_are_read_in_one_pass() {
    let body = r#"{"id": "a", "inputs": [
        {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2.5], [3, 4]]},
        {"name": "y", "datatype": "BYTES", "shape": [1], "data": ["h\u00e9"], "parameters": null}
    ], "outputs": [{"name": "z"}]}"#;
    assert!(read_in_one_pass(body));
    let (fast, slow) = both_ways(body);
    assert_eq!(fast, slow);
    let tensors = fast.unwrap();
    assert_eq!(tensors[0].data, TensorData::Fp32(vec![1.0, 2.5, 3.0, 4.0]));
    assert_eq!(tensors[1].data, TensorData::Bytes(vec!["hé".as_bytes().to_vec()]));
}

#[test]
fn data_before_its_datatype_or_shape_is_read_raw_and_decoded_the_same() {
    for body in [
        r#"{"inputs": [{"data": [1, 2], "name": "x", "shape": [2], "datatype": "INT64"}]}"#,
        r#"{"inputs": [{"name": "x", "datatype": "INT64", "data": [1, 2], "shape": [2]}]}"#,
        r#"{"inputs": [{"name": "x", "shape": [2], "data": [1, 2], "datatype": "INT64"}]}"#,
    ] {
        assert!(!read_in_one_pass(body), "{body}");
        let (fast, slow) = both_ways(body);
        assert_eq!(fast, slow, "{body}");
        assert_eq!(fast.unwrap()[0].data, TensorData::Int64(vec![1, 2]));
    }
}

#[test]
fn every_refused_body_gets_the_two_pass_error() {
    // each is refused by the two-pass read; the one-pass read must refuse
    // it too (or accept it only to fail the same way later), so the error
    // a client sees is unchanged
    let input = |fields: &str| format!(r#"{{"inputs": [{{{fields}}}]}}"#);
    let bodies = [
        input(r#""name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2, 3]"#),
        input(r#""name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3]]"#),
        input(r#""name": "x", "shape": [2], "datatype": "FP32", "data": null"#),
        input(r#""name": "x", "shape": [], "datatype": "FP32", "data": null"#),
        input(r#""name": "x", "shape": [2], "datatype": "FP32", "data": 5"#),
        input(r#""name": "x", "shape": [2], "datatype": "FP32", "data": ["a", 1]"#),
        input(r#""name": "x", "shape": [1], "datatype": "UINT8", "data": [300]"#),
        input(r#""name": "x", "shape": [-1], "datatype": "FP32", "data": [1]"#),
        input(r#""name": "x", "shape": [1], "datatype": "FP99", "data": [1]"#),
        input(r#""name": "x", "shape": [1], "datatype": "FP32""#),
        input(r#""name": "x", "shape": [1], "datatype": "FP32", "data": [1], "data": [2]"#),
        input(r#""name": "x", "name": "y", "shape": [1], "datatype": "FP32", "data": [1]"#),
        input(r#""shape": [1], "datatype": "FP32", "data": [1]"#),
        input(r#""name": "x", "datatype": "FP32", "data": [1]"#),
        input(r#""name": "x", "shape": [1], "data": [1]"#),
        input(r#""name": "x", "shape": [1], "datatype": "FP32", "data": [1], "extra": 1"#),
        input(r#""name": 5, "shape": [1], "datatype": "FP32", "data": [1]"#),
        input(r#""name": "x", "shape": [1], "datatype": "FP32", "data": [1], "parameters": 3"#),
        input(
            r#""name": "x", "shape": [1], "datatype": "FP32", "data": [1], "parameters": {"binary_data_size": 4}"#,
        ),
        r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "bogus": 1}"#.into(),
        r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]"#.into(),
        r#"{"inputs": {"name": "x"}}"#.into(),
        r#"[]"#.into(),
        "  ".into(),
    ];
    for body in &bodies {
        let (fast, slow) = both_ways(body);
        assert!(slow.is_err(), "{body}");
        assert_eq!(fast, slow, "{body}");
    }
}
