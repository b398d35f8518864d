//! The Kubernetes API stand-in (`examples/kube_standin`) driven by the real
//! kube-rs client: CRUD and compare-and-swap on a `ModelRollout` custom
//! resource and its `/status` subresource, merge patches with a
//! resourceVersion precondition, `kube::runtime::watcher` through a
//! compaction (410, re-list) and an injected outage (503, dropped watch),
//! a Lease race, Events, and the request log in RBAC terms.
//!
//! Each test starts its own stand-in process (`harness::StandIn`), built
//! from the example if `cargo test --test kube_standin` did not build it.

#[path = "kube_standin/harness.rs"]
mod harness;

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

#[tokio::test]
async fn two_pods_race_for_an_expired_lease_and_exactly_one_wins() {
    let s = StandIn::start();
    let pod1: Api<Lease> = Api::namespaced(s.client(false), "default");
    let pod2: Api<Lease> = Api::namespaced(s.client(false), "default");
    let pp = PostParams::default();
    let long_ago = Timestamp::from_second(1_700_000_000).unwrap();
    pod1.create(&pp, &lease("switchyard-leader", "pod-0", long_ago))
        .await
        .unwrap();

    // client-go's protocol: GET, see the lease expired, PUT with the
    // resourceVersion read.
    let (seen1, seen2) = tokio::join!(pod1.get("switchyard-leader"), pod2.get("switchyard-leader"));
    let (seen1, seen2) = (seen1.unwrap(), seen2.unwrap());
    assert_eq!(seen1.resource_version(), seen2.resource_version());
    let take = |mut l: Lease, me: &str| {
        let spec = l.spec.as_mut().unwrap();
        spec.holder_identity = Some(me.into());
        spec.acquire_time = Some(MicroTime(Timestamp::now()));
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        l
    };
    let (l1, l2) = (take(seen1, "pod-1"), take(seen2, "pod-2"));
    let (r1, r2) = tokio::join!(
        pod1.replace("switchyard-leader", &pp, &l1),
        pod2.replace("switchyard-leader", &pp, &l2)
    );
    let winner = match (r1, r2) {
        (Ok(w), Err(kube::Error::Api(e))) | (Err(kube::Error::Api(e)), Ok(w)) => {
            assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
            w
        }
        other => panic!("expected exactly one winner, got {other:?}"),
    };
    let now = pod1.get("switchyard-leader").await.unwrap();
    let mut blind = now.clone();
    let holder = now.spec.as_ref().unwrap().holder_identity.clone();
    assert_eq!(holder, winner.spec.as_ref().unwrap().holder_identity);
    assert_eq!(now.spec.unwrap().lease_transitions, Some(1));

    // A Lease update must carry a resourceVersion (422 otherwise).
    blind.metadata.resource_version = None;
    let (code, reason, _) = api_code(pod2.replace("switchyard-leader", &pp, &blind).await);
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
}

#[tokio::test]
async fn events_are_created_through_both_event_apis() {
    let s = StandIn::start();
    let client = s.client(false);
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let ev = CoreEvent {
        metadata: ObjectMeta {
            generate_name: Some("rollout-a.".into()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("switchyard.dev/v1alpha1".into()),
            kind: Some("ModelRollout".into()),
            name: Some("a".into()),
            namespace: Some("default".into()),
            ..ObjectReference::default()
        },
        reason: Some("Promoted".into()),
        message: Some("v2 took all traffic".into()),
        type_: Some("Normal".into()),
        ..CoreEvent::default()
    };
    let created = core.create(&PostParams::default(), &ev).await.unwrap();
    assert!(
        created.name_any().starts_with("rollout-a."),
        "{}",
        created.name_any()
    );
    assert_eq!(
        core.get(&created.name_any()).await.unwrap().reason.as_deref(),
        Some("Promoted")
    );

    // kube-runtime's Recorder uses events.k8s.io/v1: a create, then a merge
    // patch for the repeat (an event series).
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let reporter = Reporter {
        controller: "switchyard".into(),
        instance: Some("pod-0".into()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let event = Event {
        type_: EventType::Normal,
        reason: "Promoted".into(),
        note: Some("v2 took all traffic".into()),
        action: "Promote".into(),
        secondary: None,
    };
    recorder.publish(&event, &created.involved_object).await.unwrap();
    recorder.publish(&event, &created.involved_object).await.unwrap();
    let modern: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client, "default");
    let list = modern.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].series.as_ref().map(|s| s.count), Some(2));

    let verbs: Vec<(String, String)> = s
        .requests()
        .await
        .iter()
        .filter(|r| r["group"] == "events.k8s.io")
        .map(|r| {
            (
                r["verb"].as_str().unwrap().to_string(),
                r["resource"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [("create", "events"), ("patch", "events")].map(|(v, r)| (v.to_string(), r.to_string()));
    assert_eq!(verbs[..2], want);
}

/// The (verb, group, resource[/subresource]) triples of the request log.
fn rbac_triples(log: &[Value]) -> std::collections::BTreeSet<(String, String, String)> {
    log.iter()
        .filter(|r| r["resource"] != "")
        .map(|r| {
            let mut resource = r["resource"].as_str().unwrap().to_string();
            if r["subresource"] != "" {
                resource = format!("{resource}/{}", r["subresource"].as_str().unwrap());
            }
            (
                r["verb"].as_str().unwrap().into(),
                r["group"].as_str().unwrap().into(),
                resource,
            )
        })
        .collect()
}

#[tokio::test]
async fn the_request_log_names_every_verb_and_resource_kube_used() {
    let s = StandIn::start();
    let client = s.client(false);
    let api: Api<ModelRollout> = Api::namespaced(client.clone(), "default");
    let all: Api<ModelRollout> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let (pp, patch) = (PostParams::default(), PatchParams::default());

    let a = api.create(&pp, &rollout("a", "v1")).await.unwrap();
    api.replace("a", &pp, &a).await.unwrap();
    api.patch("a", &patch, &Patch::Merge(json!({ "spec": { "weight": 1 } })))
        .await
        .unwrap();
    let a = api.get_status("a").await.unwrap();
    api.replace_status("a", &pp, &a).await.unwrap();
    api.patch_status("a", &patch, &Patch::Merge(json!({ "status": { "phase": "P" } })))
        .await
        .unwrap();
    all.list(&ListParams::default()).await.unwrap();
    let mut w = rollout_watcher(
        client.clone(),
        watcher::Config::default().fields("metadata.name=a"),
    );
    until(&mut w, Duration::from_secs(10), "InitDone", |e| {
        matches!(e, Ok(watcher::Event::InitDone))
    })
    .await;
    let l = leases
        .create(&pp, &lease("leader", "pod-0", Timestamp::now()))
        .await
        .unwrap();
    leases.replace("leader", &pp, &l).await.unwrap();
    leases.get("leader").await.unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();
    // The watcher's watch request is in the log once it has started.
    until(&mut w, Duration::from_secs(10), "Delete a", |e| {
        matches!(e, Ok(watcher::Event::Delete(_)))
    })
    .await;

    let log = s.requests().await;
    for r in &log {
        println!(
            "{} {} {}?{} -> {}",
            r["verb"],
            r["name"],
            r["path"],
            r["query"].as_str().unwrap(),
            r["code"]
        );
    }
    let triples = rbac_triples(&log);
    let want = [
        ("create", "switchyard.dev", "modelrollouts"),
        ("update", "switchyard.dev", "modelrollouts"),
        ("patch", "switchyard.dev", "modelrollouts"),
        ("get", "switchyard.dev", "modelrollouts/status"),
        ("update", "switchyard.dev", "modelrollouts/status"),
        ("patch", "switchyard.dev", "modelrollouts/status"),
        ("list", "switchyard.dev", "modelrollouts"),
        ("watch", "switchyard.dev", "modelrollouts"),
        ("delete", "switchyard.dev", "modelrollouts"),
        ("create", "coordination.k8s.io", "leases"),
        ("update", "coordination.k8s.io", "leases"),
        ("get", "coordination.k8s.io", "leases"),
    ];
    for (verb, group, resource) in want {
        assert!(
            triples.contains(&(verb.into(), group.into(), resource.into())),
            "{verb} {group} {resource} not in {triples:?}"
        );
    }
    // Api::all lists across namespaces: no namespace in the entry.
    assert!(log.iter().any(|r| r["verb"] == "list"
        && r["namespace"] == ""
        && r["path"] == "/apis/switchyard.dev/v1alpha1/modelrollouts"));
    // A watch pinned by a metadata.name field selector names the object, as
    // the RBAC authorizer sees it.
    assert!(log.iter().any(|r| r["verb"] == "watch" && r["name"] == "a"));
}

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
