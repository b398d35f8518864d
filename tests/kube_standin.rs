//! The Kubernetes API stand-in (`examples/kube_standin`) driven by the real
//! kube-rs client: CRUD and compare-and-swap on a `ModelRollout` custom
//! resource and its `/status` subresource, merge patches with a
//! resourceVersion precondition, `kube::runtime::watcher` through a
//! compaction (410, re-list) and an injected outage (503, dropped watch),
//! and, in `pods`, a Lease race, Events, and the request log in RBAC terms;
//! `wire` checks the stand-in's answers on the wire, without kube-rs.
//!
//! Each test starts its own stand-in process (`harness::StandIn`), built
//! from the example if `cargo test --test kube_standin` did not build it.

#[path = "kube_standin/harness.rs"]
mod harness;
#[path = "kube_standin/pods.rs"]
mod pods;
#[path = "kube_standin/wire.rs"]
mod wire;

use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, CustomResource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use harness::{http, spawn_watch, until, watch_lines, CappedBackoff, StandIn};

/// The test's view of the `switchyard.dev/v1alpha1` `ModelRollout`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "switchyard.dev",
    version = "v1alpha1",
    kind = "ModelRollout",
    namespaced,
    status = "ModelRolloutStatus",
    derive = "PartialEq"
)]
pub struct ModelRolloutSpec {
    pub model: String,
    pub version: String,
    #[serde(default)]
    pub weight: u32,
}

/// Status written through the `/status` subresource.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ModelRolloutStatus {
    pub phase: String,
}

type WatchItem = Result<watcher::Event<ModelRollout>, watcher::Error>;

/// A watcher on ModelRollouts in `default`, with the capped backoff.
fn rollout_watcher(client: Client, config: watcher::Config) -> impl Stream<Item = WatchItem> + Unpin + Send {
    let api: Api<ModelRollout> = Api::namespaced(client, "default");
    Box::pin(watcher(api, config).backoff(CappedBackoff::new()))
}

/// Whether a watcher item is an Apply of `name` with spec version `version`.
fn is_apply(item: &WatchItem, name: &str, version: &str) -> bool {
    matches!(item, Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o))
        if o.name_any() == name && o.spec.version == version)
}

/// The code of a `kube::Error::Api`, panicking on any other result.
fn api_code<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> (u16, String, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn rollout(name: &str, version: &str) -> ModelRollout {
    ModelRollout::new(
        name,
        ModelRolloutSpec {
            model: "resnet".into(),
            version: version.into(),
            weight: 0,
        },
    )
}

fn generation(o: &ModelRollout) -> i64 {
    o.metadata.generation.expect("generation is set")
}

fn rv(o: &impl ResourceExt) -> u64 {
    o.resource_version()
        .expect("resourceVersion is set")
        .parse()
        .expect("decimal resourceVersion")
}

const CONFLICT_MESSAGE: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn create_get_replace_and_a_stale_replace_conflicts() {
    let s = StandIn::start();
    let api: Api<ModelRollout> = Api::namespaced(s.client(false), "default");
    let pp = PostParams::default();

    let created = api.create(&pp, &rollout("a", "v1")).await.unwrap();
    assert_eq!(generation(&created), 1);
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    let (code, reason, _) = api_code(api.create(&pp, &rollout("a", "v1")).await);
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));

    let got = api.get("a").await.unwrap();
    assert_eq!(got, created);
    let mut next = got.clone();
    next.spec.version = "v2".into();
    let replaced = api.replace("a", &pp, &next).await.unwrap();
    assert_eq!(replaced.spec.version, "v2");
    assert!(rv(&replaced) > rv(&got));
    assert_eq!(generation(&replaced), 2);

    // `got` still carries the old resourceVersion.
    let mut stale = got.clone();
    stale.spec.version = "v3".into();
    let (code, reason, message) = api_code(api.replace("a", &pp, &stale).await);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert_eq!(
        message,
        format!("Operation cannot be fulfilled on modelrollouts.switchyard.dev \"a\": {CONFLICT_MESSAGE}")
    );
    assert_eq!(api.get("a").await.unwrap().spec.version, "v2");

    let (code, reason, _) = api_code(api.get("missing").await);
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    assert!(api.get_opt("missing").await.unwrap().is_none());
    assert_eq!(api.list(&ListParams::default()).await.unwrap().items.len(), 1);

    api.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt("a").await.unwrap().is_none());
}

#[tokio::test]
async fn status_writes_keep_generation_and_spec_writes_keep_status() {
    let s = StandIn::start();
    let api: Api<ModelRollout> = Api::namespaced(s.client(false), "default");
    let pp = PostParams::default();

    let mut with_status = rollout("a", "v1");
    with_status.status = Some(ModelRolloutStatus {
        phase: "Ignored".into(),
    });
    let created = api.create(&pp, &with_status).await.unwrap();
    assert_eq!(
        created.status, None,
        "create drops .status when it is a subresource"
    );

    // /status: the status changes, the spec in the body is ignored, and
    // generation stays.
    let mut body = created.clone();
    body.status = Some(ModelRolloutStatus {
        phase: "Progressing".into(),
    });
    body.spec.version = "ignored".into();
    let after_status = api.replace_status("a", &pp, &body).await.unwrap();
    assert_eq!(after_status.status.as_ref().unwrap().phase, "Progressing");
    assert_eq!(after_status.spec.version, "v1");
    assert_eq!(generation(&after_status), 1);
    assert!(rv(&after_status) > rv(&created));
    assert_eq!(api.get_status("a").await.unwrap(), after_status);

    // Main resource: the spec change bumps generation, the status in the
    // body is ignored.
    let mut body = after_status.clone();
    body.spec.version = "v2".into();
    body.status = Some(ModelRolloutStatus {
        phase: "Overwritten?".into(),
    });
    let after_spec = api.replace("a", &pp, &body).await.unwrap();
    assert_eq!(generation(&after_spec), 2);
    assert_eq!(after_spec.status.as_ref().unwrap().phase, "Progressing");

    // A metadata-only change: new resourceVersion, same generation.
    let mut body = after_spec.clone();
    body.labels_mut().insert("team".into(), "ml".into());
    let after_label = api.replace("a", &pp, &body).await.unwrap();
    assert_eq!(generation(&after_label), 2);
    assert!(rv(&after_label) > rv(&after_spec));

    // A write that changes nothing is not a write: same resourceVersion.
    let same = api.replace("a", &pp, &after_label).await.unwrap();
    assert_eq!(rv(&same), rv(&after_label));

    // A status write with a stale resourceVersion conflicts too.
    let (code, _, _) = api_code(api.replace_status("a", &pp, &after_status).await);
    assert_eq!(code, 409);
}

#[tokio::test]
async fn merge_patch_with_a_resource_version_precondition() {
    let s = StandIn::start();
    let api: Api<ModelRollout> = Api::namespaced(s.client(false), "default");
    let pp = PatchParams::default();
    let created = api
        .create(&PostParams::default(), &rollout("a", "v1"))
        .await
        .unwrap();

    let p = api
        .patch("a", &pp, &Patch::Merge(json!({ "spec": { "weight": 10 } })))
        .await
        .unwrap();
    assert_eq!(
        (p.spec.weight, p.spec.version.as_str(), generation(&p)),
        (10, "v1", 2)
    );

    let fresh = json!({ "metadata": { "resourceVersion": p.resource_version() }, "spec": { "weight": 20 } });
    let p2 = api.patch("a", &pp, &Patch::Merge(fresh)).await.unwrap();
    assert_eq!(p2.spec.weight, 20);

    let stale =
        json!({ "metadata": { "resourceVersion": created.resource_version() }, "spec": { "weight": 30 } });
    let (code, reason, message) = api_code(api.patch("a", &pp, &Patch::Merge(stale)).await);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(message.ends_with(CONFLICT_MESSAGE), "{message}");
    assert_eq!(api.get("a").await.unwrap().spec.weight, 20);

    let st = api
        .patch_status("a", &pp, &Patch::Merge(json!({ "status": { "phase": "Done" } })))
        .await
        .unwrap();
    assert_eq!(
        (st.status.as_ref().unwrap().phase.as_str(), generation(&st)),
        ("Done", 3)
    );

    let (code, _, _) = api_code(api.patch("missing", &pp, &Patch::Merge(json!({}))).await);
    assert_eq!(code, 404);
}

#[tokio::test]
async fn a_watcher_sees_added_modified_and_deleted() {
    let s = StandIn::start();
    let client = s.client(false);
    let api: Api<ModelRollout> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    let mut w = rollout_watcher(client, watcher::Config::default());
    until(&mut w, Duration::from_secs(10), "InitDone", |e| {
        matches!(e, Ok(watcher::Event::InitDone))
    })
    .await;

    // The raw watch shows the wire event types the watcher folds into Apply.
    let mut raw = api
        .watch(&WatchParams::default().timeout(30), "0")
        .await
        .unwrap()
        .boxed();
    let created = api.create(&pp, &rollout("a", "v1")).await.unwrap();
    until(&mut w, Duration::from_secs(10), "Apply a v1", |e| {
        is_apply(e, "a", "v1")
    })
    .await;
    let mut next = created.clone();
    next.spec.version = "v2".into();
    api.replace("a", &pp, &next).await.unwrap();
    until(&mut w, Duration::from_secs(10), "Apply a v2", |e| {
        is_apply(e, "a", "v2")
    })
    .await;
    api.delete("a", &DeleteParams::default()).await.unwrap();
    until(
        &mut w,
        Duration::from_secs(10),
        "Delete a",
        |e| matches!(e, Ok(watcher::Event::Delete(o)) if o.name_any() == "a"),
    )
    .await;

    let mut kinds = Vec::new();
    let seen = until(&mut raw, Duration::from_secs(10), "DELETED", |e| {
        matches!(e, Ok(WatchEvent::Deleted(_)))
    })
    .await;
    for e in seen {
        match e.unwrap() {
            WatchEvent::Added(_) => kinds.push("ADDED"),
            WatchEvent::Modified(_) => kinds.push("MODIFIED"),
            WatchEvent::Deleted(_) => kinds.push("DELETED"),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        }
    }
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);
    // Bookmarks come about once a second on a watch that allows them.
    until(&mut raw, Duration::from_secs(5), "BOOKMARK", |e| {
        matches!(e, Ok(WatchEvent::Bookmark(_)))
    })
    .await;
}

#[tokio::test]
async fn after_a_compaction_the_watcher_relists_and_goes_on() {
    let s = StandIn::start();
    let client = s.client(false);
    let api: Api<ModelRollout> = Api::namespaced(client.clone(), "default");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    let a = api.create(&pp, &rollout("a", "v1")).await.unwrap();

    // Server-side watch timeout of 1 s: the watcher reconnects every second
    // from the resourceVersion it holds. Without bookmarks that stays the
    // one from its list, which the compaction below makes too old.
    let config = watcher::Config::default().timeout(1).disable_bookmarks();
    let mut w = rollout_watcher(client.clone(), config);
    until(&mut w, Duration::from_secs(10), "InitDone", |e| {
        matches!(e, Ok(watcher::Event::InitDone))
    })
    .await;

    leases
        .create(&pp, &lease("unrelated", "x", Timestamp::now()))
        .await
        .unwrap();
    s.compact().await;

    // A raw watch from before the compaction: one ERROR event, 410 Expired.
    let mut raw = api
        .watch(&WatchParams::default(), &a.resource_version().unwrap())
        .await
        .unwrap()
        .boxed();
    match raw.next().await {
        Some(Ok(WatchEvent::Error(e))) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    assert!(
        raw.next().await.is_none(),
        "the stream ends after the ERROR event"
    );

    // The watcher hits the same 410 on its next reconnect, re-lists, and
    // then keeps following changes.
    let seen = until(&mut w, Duration::from_secs(15), "re-list", |e| {
        matches!(e, Ok(watcher::Event::InitDone))
    })
    .await;
    assert!(
        seen.iter()
            .any(|e| matches!(e, Err(watcher::Error::WatchError(s)) if s.code == 410)),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|e| is_apply(e, "a", "v1")),
        "the re-list brings a back: {seen:?}"
    );
    let mut next = api.get("a").await.unwrap();
    next.spec.version = "v2".into();
    api.replace("a", &pp, &next).await.unwrap();
    until(&mut w, Duration::from_secs(10), "Apply a v2", |e| {
        is_apply(e, "a", "v2")
    })
    .await;

    let lists = s
        .requests()
        .await
        .iter()
        .filter(|r| r["verb"] == "list" && r["resource"] == "modelrollouts")
        .count();
    assert!(lists >= 2, "the watcher listed again ({lists} lists)");
}

#[tokio::test]
async fn an_outage_fails_fast_without_retry_and_the_watcher_recovers() {
    let s = StandIn::start();
    let fast = s.client(false);
    let api: Api<ModelRollout> = Api::namespaced(fast.clone(), "default");
    let patient_api: Api<ModelRollout> = Api::namespaced(s.client(true), "default");
    api.create(&PostParams::default(), &rollout("a", "v1"))
        .await
        .unwrap();
    let mut events = spawn_watch(rollout_watcher(fast.clone(), watcher::Config::default()));
    until(&mut events, Duration::from_secs(10), "InitDone", |(_, e)| {
        matches!(e, Ok(watcher::Event::InitDone))
    })
    .await;
    let mut raw = api.watch(&WatchParams::default(), "0").await.unwrap().boxed();
    until(&mut raw, Duration::from_secs(5), "ADDED a", |e| {
        matches!(e, Ok(WatchEvent::Added(_)))
    })
    .await;

    let outage = Duration::from_secs(2);
    let started = Instant::now();
    s.down(outage.as_secs_f64()).await;

    // Open watches drop at once.
    let dropped = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(_)) = raw.next().await {}
    })
    .await;
    assert!(dropped.is_ok(), "the raw watch did not drop");

    // Without kube's default retry a request fails at once with 503...
    let t = Instant::now();
    let (code, reason, _) = api_code(api.get("a").await);
    assert_eq!((code, reason.as_str()), (503, "ServiceUnavailable"));
    assert!(t.elapsed() < Duration::from_millis(500), "took {:?}", t.elapsed());
    // ...with it, the same request is retried until the outage is over.
    let got = patient_api.get("a").await.expect("retried through the outage");
    assert_eq!(got.spec.version, "v1");
    let ended = started + outage;
    assert!(
        Instant::now() >= ended,
        "the retrying get returned during the outage"
    );

    // Once the stand-in is back, a change reaches the watcher by itself.
    let mut next = api.get("a").await.expect("the outage is over");
    next.spec.version = "v2".into();
    api.replace("a", &PostParams::default(), &next).await.unwrap();
    let seen = until(&mut events, Duration::from_secs(5), "Apply a v2", |(_, e)| {
        is_apply(e, "a", "v2")
    })
    .await;

    // The watcher met the outage as errors (its re-watch got 503) and
    // retried at most ~1 s apart (the capped backoff).
    let errors: Vec<Instant> = seen.iter().filter(|(_, e)| e.is_err()).map(|(t, _)| *t).collect();
    assert!(!errors.is_empty(), "no watcher error during the outage: {seen:?}");
    let gaps = errors.windows(2).map(|w| w[1] - w[0]);
    assert!(
        gaps.clone().all(|g| g < Duration::from_millis(1500)),
        "{:?}",
        gaps.collect::<Vec<_>>()
    );

    // By the stand-in's clock: the first watch that got through came at
    // most ~1 s after the last one refused.
    let log = s.requests().await;
    let watches: Vec<&Value> = log.iter().filter(|r| r["verb"] == "watch").collect();
    let last_refused = watches
        .iter()
        .rposition(|r| r["code"] == 503)
        .expect("a refused watch");
    let back = watches[last_refused + 1..]
        .iter()
        .find(|r| r["code"] == 200)
        .expect("a watch after the outage");
    let gap = back["ms"].as_u64().unwrap() - watches[last_refused]["ms"].as_u64().unwrap();
    assert!(
        gap <= 1500,
        "the watcher came back {gap} ms after its last refused watch"
    );
    let gets_503 = log
        .iter()
        .filter(|r| r["verb"] == "get" && r["name"] == "a" && r["code"] == 503)
        .count();
    assert!(
        gets_503 >= 2,
        "the default retry re-sent the get ({gets_503} 503s)"
    );
}

/// A Lease held by `holder`, renewed at `renewed`, for one second.
fn lease(name: &str, holder: &str, renewed: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(1),
            acquire_time: Some(MicroTime(renewed)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }),
    }
}
