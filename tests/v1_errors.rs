//! V1 (TF Serving REST) errors: every fault has its status and a JSON
//! error naming what is at fault, and the server keeps serving after it.

mod common;

use common::{digits_samples, post_v1, TestRepo, TestServer};
use serde_json::{json, Value};

const PREDICT: &str = "/v1/models/digits:predict";

/// A server over digits and the two-input fixture, with a 64 KiB body limit.
async fn server() -> (TestRepo, TestServer) {
    let repo = TestRepo::bundled(&["digits"]);
    repo.add_fixture("two_inputs", "two_inputs");
    let s = TestServer::start_with(repo.path(), |c| c.body_limit = 64 * 1024).await;
    (repo, s)
}

/// A good request still gets its answer after a fault.
async fn still_works(s: &TestServer, label: &str) {
    let good = json!({"instances": [digits_samples()[0].0.clone()]});
    let (st, _, _, resp) = post_v1(s, PREDICT, &good).await;
    assert_eq!(st, 200, "after {label}: {resp}");
    assert_eq!(resp["predictions"][0]["label"], json!(2), "after {label}");
}

/// Asserts `status` and a JSON `error` that mentions every one of `needles`.
fn assert_error(got: (u16, Value), status: u16, needles: &[&str], what: &str) {
    let (st, body) = got;
    assert_eq!(st, status, "{what}: {body}");
    let msg = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no JSON error: {body}"));
    for n in needles {
        assert!(msg.contains(n), "{what}: error {msg:?} does not mention {n:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_models_versions_labels_and_verbs_name_what_is_unknown() {
    let (_repo, s) = server().await;
    let pixels = digits_samples()[0].0.clone();
    let good = json!({"instances": [pixels]});
    let predict = PREDICT;
    still_works(&s, "start").await;

    // unknown model → 404
    for path in ["/v1/models/nope:predict"] {
        assert_error(s.post(path, &good).await, 404, &["'nope'"], path);
    }
    for path in [
        "/v1/models/nope",
        "/v1/models/nope/metadata",
        "/v1/models/nope/versions/1",
    ] {
        assert_error(s.get(path).await, 404, &["'nope'"], path);
    }
    // unknown version → 404
    assert_error(
        s.post("/v1/models/digits/versions/9:predict", &good).await,
        404,
        &["9", "'digits'"],
        "unknown version",
    );
    for path in [
        "/v1/models/digits/versions/9",
        "/v1/models/digits/versions/9/metadata",
    ] {
        assert_error(s.get(path).await, 404, &["9", "'digits'"], path);
    }
    // unknown label → 400 (TF Serving), not 404
    assert_error(
        s.post("/v1/models/digits/labels/gold:predict", &good).await,
        400,
        &["'gold'", "'digits'"],
        "unknown label",
    );
    for path in [
        "/v1/models/digits/labels/gold",
        "/v1/models/digits/labels/gold/metadata",
    ] {
        assert_error(s.get(path).await, 400, &["'gold'"], path);
    }
    // non-numeric version → 400
    assert_error(
        s.post("/v1/models/digits/versions/stable:predict", &good).await,
        400,
        &["'stable'", "/labels/"],
        "non-numeric version",
    );
    for path in [
        "/v1/models/digits/versions/abc",
        "/v1/models/digits/versions/abc/metadata",
    ] {
        assert_error(s.get(path).await, 400, &["'abc'"], path);
    }
    still_works(&s, "routing errors").await;

    // classify / regress → 501, in every URL form
    for path in [
        "/v1/models/digits:classify",
        "/v1/models/digits:regress",
        "/v1/models/digits/versions/1:classify",
        "/v1/models/digits/labels/stable:regress",
    ] {
        let verb = path.rsplit_once(':').unwrap().1;
        let body = json!({"examples": [{"x": 1.0}]});
        assert_error(s.post(path, &body).await, 501, &[verb, ":predict"], path);
    }
    // unknown verb, POST without a verb, GET with a verb
    assert_error(
        s.post("/v1/models/digits:explain", &good).await,
        404,
        &["explain"],
        "verb",
    );
    assert_error(
        s.post("/v1/models/digits", &good).await,
        405,
        &[":predict"],
        "no verb",
    );
    assert_error(s.get(predict).await, 405, &["POST"], "GET predict");

    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_name_the_field_at_fault() {
    let (_repo, s) = server().await;
    let pixels = digits_samples()[0].0.clone();
    let good = json!({"instances": [pixels]});
    let predict = PREDICT;
    still_works(&s, "start").await;

    // bad signature_name → 400
    let mut body = good.clone();
    body["signature_name"] = json!("classify_objects");
    assert_error(
        s.post(predict, &body).await,
        400,
        &["signature_name", "classify_objects"],
        "sig",
    );
    body["signature_name"] = json!(7);
    assert_error(s.post(predict, &body).await, 400, &["signature_name"], "sig type");

    // malformed JSON and non-objects → 400
    assert_error(
        s.post_raw(predict, r#"{"instances": [[1, 2"#).await,
        400,
        &["malformed JSON"],
        "truncated",
    );
    assert_error(s.post_raw(predict, "").await, 400, &["empty"], "empty body");
    assert_error(
        s.post_raw(predict, "[1, 2]").await,
        400,
        &["JSON object"],
        "array body",
    );
    assert_error(
        s.post_raw(predict, vec![0xffu8, 0xfe]).await,
        400,
        &["UTF-8"],
        "binary",
    );

    // missing instances / inputs, or both → 400 naming them
    assert_error(
        s.post(predict, &json!({"instance": [pixels]})).await,
        400,
        &["\"instances\"", "\"inputs\"", "instance"],
        "missing",
    );
    assert_error(
        s.post(predict, &json!({"instances": [pixels], "inputs": [pixels]}))
            .await,
        400,
        &["both"],
        "both",
    );
    assert_error(
        s.post(predict, &json!({"instances": []})).await,
        400,
        &["empty"],
        "no instances",
    );
    assert_error(
        s.post(predict, &json!({"instances": 3})).await,
        400,
        &["list"],
        "scalar instances",
    );
    still_works(&s, "body errors").await;

    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tensors_that_do_not_fit_the_model_name_the_input_and_shape() {
    let (_repo, s) = server().await;
    let pixels = digits_samples()[0].0.clone();
    let predict = PREDICT;
    still_works(&s, "start").await;

    // instances of mismatched shapes → 400 naming the instance and shapes
    let short = pixels[..63].to_vec();
    assert_error(
        s.post(predict, &json!({"instances": [pixels, short]})).await,
        400,
        &["'input'", "instance 1", "[63]", "[64]"],
        "mismatched shapes",
    );
    assert_error(
        s.post(predict, &json!({"instances": [{"input": pixels}, pixels]}))
            .await,
        400,
        &["\"instances\"[1]", "object"],
        "mixed forms",
    );
    // a shape the model does not take → 400
    assert_error(
        s.post(predict, &json!({"instances": [short]})).await,
        400,
        &["'input'", "[1, 63]", "[-1, 64]"],
        "wrong shape",
    );
    // a wrong dtype → 400
    assert_error(
        s.post(predict, &json!({"instances": [vec!["a"; 64]]})).await,
        400,
        &["'input'", "FP32"],
        "wrong dtype",
    );

    // wrong input key → 400 naming it, in both formats
    assert_error(
        s.post(predict, &json!({"instances": [{"inputz": pixels}]})).await,
        400,
        &["'inputz'", "input"],
        "wrong key (row)",
    );
    assert_error(
        s.post(predict, &json!({"inputs": {"inputz": [pixels]}})).await,
        400,
        &["'inputz'"],
        "wrong key (columnar)",
    );
    // multi-input models need named inputs; instances must agree on them
    let two = "/v1/models/two_inputs:predict";
    assert_error(
        s.post(two, &json!({"instances": [[1, 2, 3, 4]]})).await,
        400,
        &["2 inputs", "a, b"],
        "bare list for two inputs",
    );
    assert_error(
        s.post(
            two,
            &json!({"instances": [{"a": [1, 2, 3, 4], "b": [1, 2, 3, 4]}, {"a": [1, 2, 3, 4]}]}),
        )
        .await,
        400,
        &["\"instances\"[1]", "'b'"],
        "instance lacks an input",
    );
    assert_error(
        s.post(two, &json!({"inputs": {"a": [[1, 2, 3, 4]]}})).await,
        400,
        &["missing input 'b'"],
        "columnar lacks an input",
    );
    still_works(&s, "tensor errors").await;

    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_a_413_and_a_4xx_names_no_version() {
    let (_repo, s) = server().await;
    let pixels = digits_samples()[0].0.clone();
    let predict = PREDICT;
    still_works(&s, "start").await;

    // body over the limit → 413
    let big = json!({"instances": vec![pixels.clone(); 400]});
    assert!(big.to_string().len() > 64 * 1024);
    assert_error(s.post(predict, &big).await, 413, &["limit"], "body over limit");
    still_works(&s, "413").await;

    // a 4xx names no version: the request never reached one
    let (st, version, route, _) = post_v1(&s, predict, &json!({"instances": []})).await;
    assert_eq!((st, version.as_str(), route.as_str()), (400, "", ""));
    s.stop().await;
}
