//! A stopped server leaves nothing running: its ONNX Runtime worker threads
//! end and its background tasks stop, so tests (and embedders) that start
//! many servers do not pile threads up.

mod common;

use std::time::{Duration, Instant};

use common::{digits_request, digits_samples, TestRepo, TestServer};

/// Threads of this process whose name starts with `prefix`.
fn threads(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_servers_leave_no_worker_threads() {
    let repo = TestRepo::bundled(&["digits"]);
    let row = &digits_samples()[0].0;
    for round in 0..3 {
        let s = TestServer::start(repo.path()).await;
        let (st, body) = s
            .post(
                "/v2/models/digits/infer",
                &digits_request(std::slice::from_ref(row)),
            )
            .await;
        assert_eq!(st, 200, "{body}");
        assert!(
            threads("ort-digits") > 0,
            "round {round}: the server runs workers"
        );
        s.stop().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while threads("ort-digits") > 0 {
            assert!(
                Instant::now() < deadline,
                "round {round}: {} worker threads outlived the server",
                threads("ort-digits")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
