//! The TensorFlow Serving REST API (V1) end to end: real models, real ONNX
//! Runtime, a real listener on 127.0.0.1:0. Answers are checked against V2
//! answers for the same rows, so both protocols must agree.

mod common;

use common::{digits_samples, post_v1, TestRepo, TestServer};
use serde_json::{json, Value};

/// V2's answer for `inputs` (name → rows) on `model` version `version`:
/// output name → (shape, flat data).
async fn v2_outputs(
    s: &TestServer,
    model: &str,
    version: u64,
    inputs: &[(&str, &Vec<Vec<f64>>)],
) -> Vec<(String, Vec<i64>, Vec<Value>)> {
    let body = json!({
        "inputs": inputs.iter().map(|(name, rows)| json!({
            "name": name, "datatype": "FP32", "shape": [rows.len(), rows[0].len()], "data": rows,
        })).collect::<Vec<_>>()
    });
    let (st, resp) = s
        .post(&format!("/v2/models/{model}/versions/{version}/infer"), &body)
        .await;
    assert_eq!(st, 200, "{resp}");
    resp["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let shape = o["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_i64().unwrap())
                .collect();
            (
                o["name"].as_str().unwrap().to_string(),
                shape,
                o["data"].as_array().unwrap().clone(),
            )
        })
        .collect()
}

/// Nests flat row-major `data` in `shape` (rank 1 or 2).
fn nest(shape: &[i64], data: &[Value]) -> Value {
    match shape {
        [_] => Value::Array(data.to_vec()),
        [rows, cols] => Value::Array(
            (0..*rows as usize)
                .map(|r| Value::Array(data[r * *cols as usize..(r + 1) * *cols as usize].to_vec()))
                .collect(),
        ),
        other => panic!("unexpected shape {other:?}"),
    }
}

/// Row `i` of a nested output.
fn row(shape: &[i64], data: &[Value], i: usize) -> Value {
    nest(shape, data).as_array().unwrap()[i].clone()
}

/// The URL forms of one target and the version and route each must report.
fn url_forms(model: &str, versioned: u64, stable: u64) -> Vec<(String, u64, &'static str)> {
    vec![
        (format!("/v1/models/{model}"), stable, "stable"),
        (
            format!("/v1/models/{model}/versions/{versioned}"),
            versioned,
            "explicit",
        ),
        (format!("/v1/models/{model}/labels/stable"), stable, "label"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digits_answers_like_v2_in_every_url_form_and_both_formats() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start(repo.path()).await;
    let samples = digits_samples();
    let rows: Vec<Vec<f64>> = samples.iter().take(3).map(|(r, _)| r.clone()).collect();

    for (base, version, route) in url_forms("digits", 2, 1) {
        let path = format!("{base}:predict");
        let v2 = v2_outputs(&s, "digits", version, &[("input", &rows)]).await;
        assert_eq!(v2[0].0, "label");
        assert_eq!(v2[1].0, "probabilities");

        // row format, bare lists and objects naming the input
        let expected_rows: Vec<Value> = (0..rows.len())
            .map(|i| {
                json!({
                    "label": row(&v2[0].1, &v2[0].2, i),
                    "probabilities": row(&v2[1].1, &v2[1].2, i),
                })
            })
            .collect();
        let named: Vec<Value> = rows.iter().map(|r| json!({"input": r})).collect();
        for body in [
            json!({"instances": rows}),
            json!({"signature_name": "serving_default", "instances": named}),
        ] {
            let (st, v, r, resp) = post_v1(&s, &path, &body).await;
            assert_eq!(st, 200, "{path}: {resp}");
            assert_eq!(
                (v.as_str(), r.as_str()),
                (version.to_string().as_str(), route),
                "{path}"
            );
            assert_eq!(resp, json!({"predictions": expected_rows}), "{path}");
        }
        // the first held-out digit is a 2 (README), whichever version answers
        assert_eq!(expected_rows[0]["label"], json!(samples[0].1));

        // columnar format, a bare tensor and an object of name → tensor
        let expected = json!({"outputs": {
            "label": nest(&v2[0].1, &v2[0].2),
            "probabilities": nest(&v2[1].1, &v2[1].2),
        }});
        for body in [json!({"inputs": rows}), json!({"inputs": {"input": rows}})] {
            let (st, v, r, resp) = post_v1(&s, &path, &body).await;
            assert_eq!(st, 200, "{path}: {resp}");
            assert_eq!(
                (v.as_str(), r.as_str()),
                (version.to_string().as_str(), route),
                "{path}"
            );
            assert_eq!(resp, expected, "{path}");
        }
    }

    // a single instance is a batch of one
    let (st, _, _, resp) = post_v1(&s, "/v1/models/digits:predict", &json!({"instances": [rows[0]]})).await;
    assert_eq!(st, 200);
    assert_eq!(resp["predictions"].as_array().unwrap().len(), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_inputs_answers_like_v2_in_every_url_form_and_both_formats() {
    let repo = TestRepo::empty();
    repo.add_fixture("two_inputs", "two_inputs");
    repo.config("two_inputs", "[labels]\nstable = 1\n");
    let s = TestServer::start(repo.path()).await;
    let a = vec![vec![1.0, 2.0, 3.0, 4.0], vec![-1.5, 0.0, 0.25, 8.0]];
    let b = vec![vec![10.0, 20.0, 30.0, 40.0], vec![2.0, 3.0, 4.0, -0.5]];
    let v2 = v2_outputs(&s, "two_inputs", 1, &[("a", &a), ("b", &b)]).await;
    assert_eq!((v2[0].0.as_str(), v2[1].0.as_str()), ("sum", "prod"));
    // the fixture computes what its README says
    assert_eq!(nest(&v2[0].1, &v2[0].2)[1], json!([0.5, 3.0, 4.25, 7.5]));
    assert_eq!(nest(&v2[1].1, &v2[1].2)[0], json!([10.0, 40.0, 90.0, 160.0]));

    for (base, version, route) in url_forms("two_inputs", 1, 1) {
        let path = format!("{base}:predict");
        let instances: Vec<Value> = (0..2).map(|i| json!({"a": a[i], "b": b[i]})).collect();
        let (st, v, r, resp) = post_v1(&s, &path, &json!({"instances": instances})).await;
        assert_eq!(st, 200, "{path}: {resp}");
        assert_eq!(
            (v.as_str(), r.as_str()),
            (version.to_string().as_str(), route),
            "{path}"
        );
        let expected: Vec<Value> = (0..2)
            .map(|i| json!({"sum": row(&v2[0].1, &v2[0].2, i), "prod": row(&v2[1].1, &v2[1].2, i)}))
            .collect();
        assert_eq!(resp, json!({"predictions": expected}), "{path}");

        let (st, _, _, resp) = post_v1(&s, &path, &json!({"inputs": {"b": b, "a": a}})).await;
        assert_eq!(st, 200, "{path}: {resp}");
        assert_eq!(
            resp,
            json!({"outputs": {"sum": nest(&v2[0].1, &v2[0].2), "prod": nest(&v2[1].1, &v2[1].2)}}),
            "{path}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_status_metadata_and_the_model_list() {
    let repo = TestRepo::bundled(&["digits"]);
    repo.add_version("models/digits/2", "digits", 3);
    std::fs::write(
        repo.path().join("digits/3/model.onnx"),
        b"this is not an ONNX model",
    )
    .unwrap();
    repo.config("digits", "[versions]\npolicy = \"all\"\n\n[labels]\nstable = 1\n");
    repo.add_fixture("two_inputs", "two_inputs");
    let s = TestServer::start(repo.path()).await;

    // every version, including the one that failed to load
    let (st, body) = s.get("/v1/models/digits").await;
    assert_eq!(st, 200, "{body}");
    let list = body["model_version_status"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{body}");
    for (entry, version) in list[..2].iter().zip(["1", "2"]) {
        assert_eq!(entry["version"], json!(version), "version is a string: {body}");
        assert_eq!(entry["state"], json!("AVAILABLE"));
        assert_eq!(entry["status"]["error_code"], json!("OK"));
        assert_eq!(entry["status"]["error_message"], json!(""));
        assert_eq!(entry.as_object().unwrap().len(), 3, "{entry}");
        assert_eq!(entry["status"].as_object().unwrap().len(), 2, "{entry}");
    }
    let broken = &list[2];
    assert_eq!(broken["version"], json!("3"));
    assert_eq!(broken["state"], json!("END"));
    assert_eq!(broken["status"]["error_code"], json!("UNKNOWN"));
    let reason = broken["status"]["error_message"].as_str().unwrap();
    assert!(reason.contains("model.onnx"), "{reason}");
    assert!(
        !reason.contains(repo.path().to_str().unwrap()),
        "no local paths: {reason}"
    );

    // one version, by number or label
    assert_eq!(
        s.get("/v1/models/digits/versions/2").await,
        (
            200,
            json!({"model_version_status": [
                {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            ]})
        )
    );
    let (st, body) = s.get("/v1/models/digits/versions/3").await;
    assert_eq!(st, 200);
    assert_eq!(body["model_version_status"][0]["state"], json!("END"));
    let (st, body) = s.get("/v1/models/digits/labels/stable").await;
    assert_eq!(st, 200);
    assert_eq!(body["model_version_status"][0]["version"], json!("1"));
    // the broken version never disturbs the others
    let (st, _) = s
        .post(
            "/v1/models/digits/versions/2:predict",
            &json!({"instances": [digits_samples()[0].0]}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, body) = s
        .post(
            "/v1/models/digits/versions/3:predict",
            &json!({"instances": [digits_samples()[0].0]}),
        )
        .await;
    assert_eq!(st, 503, "{body}");

    // metadata: TF Serving's GetModelMetadataResponse shape
    let dims = |sizes: &[&str]| -> Value {
        json!({"dim": sizes.iter().map(|s| json!({"size": s, "name": ""})).collect::<Vec<_>>(),
               "unknown_rank": false})
    };
    let expected = |version: &str| {
        json!({
            "model_spec": {"name": "digits", "signature_name": "", "version": version},
            "metadata": {"signature_def": {"signature_def": {"serving_default": {
                "inputs": {
                    "input": {"dtype": "DT_FLOAT", "tensor_shape": dims(&["-1", "64"]), "name": "input"}
                },
                "outputs": {
                    "label": {"dtype": "DT_INT64", "tensor_shape": dims(&["-1"]), "name": "label"},
                    "probabilities": {
                        "dtype": "DT_FLOAT", "tensor_shape": dims(&["-1", "10"]), "name": "probabilities"
                    }
                },
                "method_name": "tensorflow/serving/predict"
            }}}}
        })
    };
    assert_eq!(s.get("/v1/models/digits/metadata").await, (200, expected("1")));
    assert_eq!(
        s.get("/v1/models/digits/versions/2/metadata").await,
        (200, expected("2"))
    );
    assert_eq!(
        s.get("/v1/models/digits/labels/stable/metadata").await,
        (200, expected("1"))
    );
    let (st, body) = s.get("/v1/models/digits/versions/3/metadata").await;
    assert_eq!(st, 503, "not READY: {body}");
    let (st, body) = s.get("/v1/models/two_inputs/metadata").await;
    assert_eq!(st, 200);
    let sig = &body["metadata"]["signature_def"]["signature_def"]["serving_default"];
    let names = |k: &str| sig[k].as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        (names("inputs"), names("outputs")),
        (
            vec!["a".to_string(), "b".into()],
            vec!["prod".to_string(), "sum".into()]
        )
    );

    // the model list (a switchyard addition): names, sorted
    assert_eq!(
        s.get("/v1/models").await,
        (200, json!({"models": ["digits", "two_inputs"]}))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nan_and_infinities_reach_the_model_and_come_back_as_tf_serving_tokens() {
    let repo = TestRepo::empty();
    repo.add_fixture("identity_fp32", "id32");
    repo.add_fixture("identity_fp64", "id64");
    repo.add_fixture("identity_string", "idstr");
    let s = TestServer::start(repo.path()).await;

    // identity: y = x, so what comes back is what the model received
    let raw = |s: &TestServer, path: &'static str, body: &'static str| {
        let req = s
            .client
            .post(s.url(path))
            .header("content-type", "application/json")
            .body(body);
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    assert_eq!(
        raw(
            &s,
            "/v1/models/id32:predict",
            r#"{"instances": [[NaN, Infinity, -Infinity, 1.5]]}"#
        )
        .await,
        (
            200,
            "{\"predictions\":[[NaN,Infinity,-Infinity,1.5]]}".to_string()
        )
    );
    assert_eq!(
        raw(
            &s,
            "/v1/models/id64:predict",
            "{\"inputs\":[[-Infinity,NaN],\n[0.25,Infinity]]}"
        )
        .await,
        (200, "{\"outputs\":[[-Infinity,NaN],[0.25,Infinity]]}".to_string())
    );
    // the tokens inside strings are left alone
    assert_eq!(
        raw(
            &s,
            "/v1/models/idstr:predict",
            r#"{"instances": [["NaN", "say \"Infinity\""]]}"#
        )
        .await,
        (200, r#"{"predictions":[["NaN","say \"Infinity\""]]}"#.to_string())
    );
    // tokens are for floats only, and only the TF Serving spellings
    let (st, text) = raw(&s, "/v1/models/id32:predict", r#"{"instances": [[nan]]}"#).await;
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("malformed JSON"), "{text}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_curl_request_gets_a_tf_serving_answer() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start(repo.path()).await;
    let pixels = digits_samples()[0].0.clone();
    let body = format!(
        "{{\"signature_name\": \"serving_default\", \"instances\": [{}]}}",
        serde_json::to_string(&pixels).unwrap()
    );
    let url = s.url("/v1/models/digits:predict");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "-X", "POST", "-d", &body, "-w", "\n%{http_code}", &url])
            .output()
            .expect("curl runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (json_text, code) = text.rsplit_once('\n').unwrap();
    assert_eq!(code, "200", "{json_text}");
    let resp: Value = serde_json::from_str(json_text).unwrap();
    let predictions = resp["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 1, "{resp}");
    assert_eq!(
        predictions[0]["label"],
        json!(2),
        "the first held-out digit is a 2"
    );
    let probs = predictions[0]["probabilities"].as_array().unwrap();
    assert_eq!(probs.len(), 10);
    let total: f64 = probs.iter().map(|p| p.as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-4, "{total}");
    s.stop().await;
}
