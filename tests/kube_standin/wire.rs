//! The stand-in on the wire, without kube-rs: status bodies, lists and
//! refusals as the API server writes them, raw watches (label selectors,
//! bookmarks, timeouts), the bounded history (410 for a watch from before
//! it), and a streaming-list watcher.

use super::*;

/// The ModelRollout collection path in `default`.
const BASE: &str = "/apis/switchyard.dev/v1alpha1/namespaces/default/modelrollouts";

/// A ModelRollout body, labelled `team`.
fn raw_rollout(name: &str, team: &str) -> Value {
    json!({ "apiVersion": "switchyard.dev/v1alpha1", "kind": "ModelRollout",
            "metadata": { "name": name, "labels": { "team": team } },
            "spec": { "model": "m", "version": "v1" } })
}

#[tokio::test]
async fn wire_format_of_statuses_lists_and_refusals() {
    let s = StandIn::start();
    let post = reqwest::Method::POST;
    assert_eq!(
        http(&s, post.clone(), BASE, Some(raw_rollout("a", "ml"))).await.0,
        201
    );
    assert_eq!(
        http(&s, post.clone(), BASE, Some(raw_rollout("b", "web")))
            .await
            .0,
        201
    );

    let (code, st) = http(&s, reqwest::Method::GET, &format!("{BASE}/nope"), None).await;
    assert_eq!(code, 404);
    let want = json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "modelrollouts.switchyard.dev \"nope\" not found", "reason": "NotFound",
        "details": { "name": "nope", "group": "switchyard.dev", "kind": "modelrollouts" }, "code": 404 });
    assert_eq!(st, want);
    let (code, list) = http(
        &s,
        reqwest::Method::GET,
        &format!("{BASE}?labelSelector=team%3Dml"),
        None,
    )
    .await;
    let n = list["items"].as_array().unwrap().len();
    assert_eq!(
        (code, list["kind"].as_str(), n),
        (200, Some("ModelRolloutList"), 1)
    );
    assert!(list["metadata"]["resourceVersion"]
        .as_str()
        .is_some_and(|rv| !rv.is_empty()));

    // PUT without a resourceVersion: 422; POST with one: 500; POST into a
    // namespace that does not exist: 404 -- as the real server answers.
    let put = http(
        &s,
        reqwest::Method::PUT,
        &format!("{BASE}/b"),
        Some(raw_rollout("b", "web")),
    )
    .await;
    assert_eq!(put.0, 422);
    let mut with_rv = raw_rollout("c", "ml");
    with_rv["metadata"]["resourceVersion"] = json!("1");
    assert_eq!(http(&s, post.clone(), BASE, Some(with_rv)).await.0, 500);
    let event = json!({ "metadata": { "name": "e" } });
    assert_eq!(
        http(&s, post, "/api/v1/namespaces/elsewhere/events", Some(event))
            .await
            .0,
        404
    );

    // During an outage every Kubernetes request gets a 503 Status; the
    // control endpoints still answer.
    s.down(30.0).await;
    let (code, st) = http(&s, reqwest::Method::GET, BASE, None).await;
    assert_eq!(
        (code, st["reason"].as_str(), st["code"].as_u64()),
        (503, Some("ServiceUnavailable"), Some(503))
    );
    assert_eq!(
        http(&s, reqwest::Method::GET, "/_standin/healthz", None).await.0,
        200
    );
    assert_eq!(http(&s, reqwest::Method::GET, "/version", None).await.0, 503);
}

#[tokio::test]
async fn raw_watches_follow_selectors_send_bookmarks_and_time_out() {
    let s = StandIn::start();
    let (_, a) = http(&s, reqwest::Method::POST, BASE, Some(raw_rollout("a", "ml"))).await;
    http(&s, reqwest::Method::POST, BASE, Some(raw_rollout("b", "web"))).await;

    // A label-selector watch from a's resourceVersion: moving a out of the
    // selection is a DELETED, moving it back an ADDED; the server closes
    // after timeoutSeconds.
    let from = a["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let relabel = |team: &str| {
        reqwest::Client::new()
            .patch(format!("{}{BASE}/a", s.url))
            .header("content-type", "application/merge-patch+json")
            .body(json!({ "metadata": { "labels": { "team": team } } }).to_string())
            .send()
    };
    assert_eq!(relabel("web").await.unwrap().status().as_u16(), 200);
    assert_eq!(relabel("ml").await.unwrap().status().as_u16(), 200);
    let t = Instant::now();
    let q = format!(
        "{BASE}?watch=1&resourceVersion={from}&labelSelector=team%3Dml&timeoutSeconds=1&allowWatchBookmarks=true"
    );
    let (lines, ended) = watch_lines(&s, &q, Duration::from_secs(5)).await;
    assert!(
        ended && t.elapsed() < Duration::from_secs(3),
        "closed after timeoutSeconds"
    );
    let types: Vec<&str> = lines
        .iter()
        .map(|l| l["type"].as_str().unwrap())
        .filter(|t| *t != "BOOKMARK")
        .collect();
    assert_eq!(types, ["DELETED", "ADDED"]);

    // From "now" (no resourceVersion): the current object as ADDED first;
    // bookmarks carry only a resourceVersion.
    let q = format!(
        "{BASE}?watch=true&allowWatchBookmarks=true&timeoutSeconds=2&fieldSelector=metadata.name%3Db"
    );
    let (lines, _) = watch_lines(&s, &q, Duration::from_secs(5)).await;
    assert_eq!(
        (&lines[0]["type"], &lines[0]["object"]["metadata"]["name"]),
        (&json!("ADDED"), &json!("b"))
    );
    let bm = lines
        .iter()
        .find(|l| l["type"] == "BOOKMARK")
        .expect("a bookmark");
    let mut keys: Vec<&String> = bm["object"]["metadata"].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["creationTimestamp", "resourceVersion"]);
}

#[tokio::test]
async fn the_history_is_bounded_and_a_watch_from_before_it_gets_410() {
    let s = StandIn::start_with(&["--history", "2"]);
    let api: Api<ModelRollout> = Api::namespaced(s.client(false), "default");
    let pp = PostParams::default();
    let first = api.create(&pp, &rollout("a", "v1")).await.unwrap();
    let from = first.resource_version().unwrap();
    // Two changes after `from` are still held: the watch replays them.
    api.create(&pp, &rollout("b", "v1")).await.unwrap();
    api.create(&pp, &rollout("c", "v1")).await.unwrap();
    let mut raw = api.watch(&WatchParams::default(), &from).await.unwrap().boxed();
    let seen = until(
        &mut raw,
        Duration::from_secs(5),
        "ADDED c",
        |e| matches!(e, Ok(WatchEvent::Added(o)) if o.name_any() == "c"),
    )
    .await;
    assert_eq!(seen.len(), 2, "b and c, nothing else: {seen:?}");
    // A third pushes the change after `from` out: 410.
    api.create(&pp, &rollout("d", "v1")).await.unwrap();
    let mut raw = api.watch(&WatchParams::default(), &from).await.unwrap().boxed();
    match raw.next().await {
        Some(Ok(WatchEvent::Error(e))) => assert_eq!(e.code, 410),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
}

#[tokio::test]
async fn a_streaming_list_watcher_gets_the_initial_events_then_live_ones() {
    let s = StandIn::start();
    let client = s.client(false);
    let api: Api<ModelRollout> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    api.create(&pp, &rollout("a", "v1")).await.unwrap();
    // sendInitialEvents=true: ADDED for what exists, then a BOOKMARK
    // annotated k8s.io/initial-events-end, which the watcher needs for
    // InitDone.
    let mut w = rollout_watcher(client, watcher::Config::default().streaming_lists());
    let seen = until(&mut w, Duration::from_secs(10), "InitDone", |e| {
        matches!(e, Ok(watcher::Event::InitDone))
    })
    .await;
    assert!(seen.iter().any(|e| is_apply(e, "a", "v1")), "{seen:?}");
    api.create(&pp, &rollout("b", "v2")).await.unwrap();
    until(&mut w, Duration::from_secs(10), "Apply b", |e| {
        is_apply(e, "b", "v2")
    })
    .await;
    let log = s.requests().await;
    assert!(
        log.iter().all(|r| r["verb"] != "list"),
        "no list in streaming mode"
    );
    assert!(log
        .iter()
        .any(|r| r["verb"] == "watch" && r["query"].as_str().unwrap().contains("sendInitialEvents=true")));
}
