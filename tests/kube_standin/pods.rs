//! What a pod does besides rollouts: two pods racing for an expired Lease
//! (exactly one wins), Events through both event APIs, and the request log
//! naming every verb and resource kube-rs used (the RBAC rules' source).

use super::*;

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
