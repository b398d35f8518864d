//! The object store: every object by kind, namespace and name, one global
//! etcd-revision-like resourceVersion counter, and the bounded history of
//! changes that watches replay from. Every write goes through here, under
//! one lock, so a write, its history entry and its live broadcast are one
//! atomic step and a watch that starts in between misses nothing.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::kinds::KindInfo;
use crate::status::{self, ApiError};

/// The store key: kind (by group and plural), namespace, name.
type Key = (&'static str, &'static str, String, String);

/// What a change did, as a watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    /// The watch event `type`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One write, as watches see it.
#[derive(Debug)]
pub(crate) struct Change {
    /// The resourceVersion this write produced.
    pub(crate) rv: u64,
    pub(crate) kind: &'static KindInfo,
    pub(crate) namespace: String,
    pub(crate) change: ChangeType,
    /// The object after the write (for a delete: the last state, stamped
    /// with the delete's resourceVersion).
    pub(crate) object: Value,
    /// The object before a modification, so a selector watch can turn an
    /// object leaving its selection into DELETED and one entering it into
    /// ADDED, as the real watch cache does.
    pub(crate) prev: Option<Value>,
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WatchFrom {
    /// resourceVersion unset or "0": the current objects as ADDED, then live.
    Now,
    /// Every change after this resourceVersion, then live.
    After(u64),
}

/// What a new watch gets: the events to send first, the live feed, and the
/// resourceVersion the replay brings it up to.
pub(crate) struct WatchStart {
    pub(crate) backlog: Vec<Arc<Change>>,
    pub(crate) live: broadcast::Receiver<Arc<Change>>,
    pub(crate) rv: u64,
}

/// The store itself.
pub(crate) struct Store {
    inner: Mutex<Inner>,
    live: broadcast::Sender<Arc<Change>>,
}

struct Inner {
    /// The last resourceVersion handed out.
    rv: u64,
    objects: BTreeMap<Key, Value>,
    /// Changes with resourceVersion > `floor`, oldest first.
    history: VecDeque<Arc<Change>>,
    floor: u64,
    cap: usize,
    namespaces: BTreeSet<String>,
}

fn key(kind: &'static KindInfo, ns: &str, name: &str) -> Key {
    (kind.group, kind.plural, ns.to_string(), name.to_string())
}

/// The `metadata.resourceVersion` of an object, "" when unset.
pub(crate) fn rv_of(obj: &Value) -> &str {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Everything but `metadata` (and `status` when it is a subresource): what a
/// change of bumps `metadata.generation`.
fn spec_part(kind: &KindInfo, obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("kind");
        m.remove("apiVersion");
        if kind.status_subresource {
            m.remove("status");
        }
    }
    v
}

/// Sets `obj[field]` to `value`, or removes it when `value` is `None`.
fn set_or_remove(obj: &mut Value, field: &str, value: Option<&Value>) {
    if let Some(m) = obj.as_object_mut() {
        match value {
            Some(v) => {
                m.insert(field.to_string(), v.clone());
            }
            None => {
                m.remove(field);
            }
        }
    }
}

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn new_uid() -> String {
    let hex = |n: usize| (0..n).map(|_| fastrand::digit(16)).collect::<String>();
    format!("{}-{}-{}-{}-{}", hex(8), hex(4), hex(4), hex(4), hex(12))
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl Store {
    /// An empty store holding at most `cap` changes of history, in which
    /// the given namespaces exist.
    pub(crate) fn new(cap: usize, namespaces: impl IntoIterator<Item = String>) -> Store {
        let (live, _) = broadcast::channel(4096);
        Store {
            inner: Mutex::new(Inner {
                rv: 0,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                floor: 0,
                cap: cap.max(1),
                namespaces: namespaces.into_iter().collect(),
            }),
            live,
        }
    }

    /// One object.
    pub(crate) fn get(&self, kind: &'static KindInfo, ns: &str, name: &str) -> Result<Value, ApiError> {
        let inner = self.inner.lock();
        inner
            .objects
            .get(&key(kind, ns, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind, name))
    }

    /// The objects of a kind in one namespace (or all), that `keep` accepts,
    /// ordered by namespace and name, with the current resourceVersion.
    pub(crate) fn list(
        &self,
        kind: &'static KindInfo,
        ns: Option<&str>,
        keep: impl Fn(&Value) -> bool,
    ) -> (Vec<Value>, u64) {
        let inner = self.inner.lock();
        let items = inner
            .objects
            .iter()
            .filter(|((g, p, n, _), _)| {
                *g == kind.group && *p == kind.plural && ns.is_none_or(|ns| ns == n.as_str())
            })
            .map(|(_, v)| v)
            .filter(|v| keep(v))
            .cloned()
            .collect();
        (items, inner.rv)
    }

    /// POST: a new object; 409 AlreadyExists when the name is taken.
    pub(crate) fn create(&self, kind: &'static KindInfo, ns: &str, body: Value) -> Result<Value, ApiError> {
        let mut inner = self.inner.lock();
        if !inner.namespaces.contains(ns) {
            return Err(ApiError::namespace_not_found(ns));
        }
        self.create_locked(&mut inner, kind, ns, body)
    }

    fn create_locked(
        &self,
        inner: &mut Inner,
        kind: &'static KindInfo,
        ns: &str,
        mut body: Value,
    ) -> Result<Value, ApiError> {
        check_body(&body, ns)?;
        if !rv_of(&body).is_empty() {
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let meta = body.pointer("/metadata").cloned().unwrap_or(json!({}));
        let name = match (meta["name"].as_str(), meta["generateName"].as_str()) {
            (Some(n), _) if !n.is_empty() => n.to_string(),
            (_, Some(prefix)) if !prefix.is_empty() => {
                let suffix: String = (0..5)
                    .map(|_| {
                        fastrand::choice(b"bcdfghjklmnpqrstvwxz2456789")
                            .map(|c| *c as char)
                            .unwrap_or('x')
                    })
                    .collect();
                format!("{prefix}{suffix}")
            }
            _ => {
                return Err(ApiError::invalid(
                    kind,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
        };
        let k = key(kind, ns, &name);
        if inner.objects.contains_key(&k) {
            return Err(ApiError::already_exists(kind, &name));
        }
        if kind.status_subresource {
            set_or_remove(&mut body, "status", None);
        }
        inner.rv += 1;
        let rv = inner.rv;
        body["kind"] = json!(kind.kind);
        body["apiVersion"] = json!(kind.api_version());
        let m = &mut body["metadata"];
        if !m.is_object() {
            *m = json!({});
        }
        m["name"] = json!(name);
        m["namespace"] = json!(ns);
        m["uid"] = json!(new_uid());
        m["creationTimestamp"] = json!(now_rfc3339());
        m["resourceVersion"] = json!(rv.to_string());
        if kind.tracks_generation {
            m["generation"] = json!(1);
        }
        if let Some(m) = m.as_object_mut() {
            m.remove("deletionTimestamp");
        }
        inner.objects.insert(k, body.clone());
        self.record(inner, kind, ns, ChangeType::Added, body.clone(), None);
        Ok(body)
    }

    /// PUT (main resource or `/status`): compare-and-swap on
    /// `metadata.resourceVersion`. Returns the HTTP code (201 when a kind
    /// that allows it was created by the PUT) and the stored object.
    pub(crate) fn replace(
        &self,
        kind: &'static KindInfo,
        ns: &str,
        name: &str,
        body: Value,
        status_only: bool,
    ) -> Result<(u16, Value), ApiError> {
        check_body(&body, ns)?;
        let body_name = body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let mut inner = self.inner.lock();
        let Some(old) = inner.objects.get(&key(kind, ns, name)).cloned() else {
            if kind.create_on_update && !status_only {
                if !inner.namespaces.contains(ns) {
                    return Err(ApiError::namespace_not_found(ns));
                }
                let mut body = body;
                set_or_remove(&mut body["metadata"], "resourceVersion", None);
                return self.create_locked(&mut inner, kind, ns, body).map(|v| (201, v));
            }
            return Err(ApiError::not_found(kind, name));
        };
        let want = rv_of(&body);
        if want.is_empty() && !kind.unconditional_update {
            return Err(ApiError::invalid(
                kind,
                name,
                "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
            ));
        }
        if !want.is_empty() && want != rv_of(&old) {
            return Err(ApiError::conflict(kind, name));
        }
        Ok((
            200,
            self.commit_update(&mut inner, kind, ns, &old, body, status_only),
        ))
    }

    /// PATCH with a JSON merge patch; a `metadata.resourceVersion` in the
    /// patch is a precondition (409 when stale).
    pub(crate) fn patch(
        &self,
        kind: &'static KindInfo,
        ns: &str,
        name: &str,
        patch: &Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        if !patch.is_object() {
            return Err(ApiError::bad_request("a merge patch must be a JSON object"));
        }
        let mut inner = self.inner.lock();
        let old = inner
            .objects
            .get(&key(kind, ns, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind, name))?;
        let want = rv_of(patch);
        if !want.is_empty() && want != rv_of(&old) {
            return Err(ApiError::conflict(kind, name));
        }
        let mut merged = old.clone();
        merge_patch(&mut merged, patch);
        if merged.pointer("/metadata/name") != old.pointer("/metadata/name") {
            return Err(ApiError::bad_request(
                "metadata.name cannot be changed by a patch",
            ));
        }
        Ok(self.commit_update(&mut inner, kind, ns, &old, merged, status_only))
    }

    /// Stores `new` over `old` with the real server's rules: `/status`
    /// writes take only `.status`; main writes of a kind with a status
    /// subresource keep the old `.status`; server-set metadata is kept;
    /// `generation` goes up when the spec part changed; a write that changes
    /// nothing is not stored and gets no new resourceVersion.
    fn commit_update(
        &self,
        inner: &mut Inner,
        kind: &'static KindInfo,
        ns: &str,
        old: &Value,
        new: Value,
        status_only: bool,
    ) -> Value {
        let mut next = if status_only {
            let mut o = old.clone();
            set_or_remove(&mut o, "status", new.get("status"));
            o
        } else {
            let mut n = new;
            if kind.status_subresource {
                set_or_remove(&mut n, "status", old.get("status"));
            }
            if !n["metadata"].is_object() {
                n["metadata"] = json!({});
            }
            for f in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "generation",
                "resourceVersion",
                "deletionTimestamp",
            ] {
                set_or_remove(&mut n["metadata"], f, old["metadata"].get(f));
            }
            n["kind"] = json!(kind.kind);
            n["apiVersion"] = json!(kind.api_version());
            n
        };
        if kind.tracks_generation && spec_part(kind, &next) != spec_part(kind, old) {
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            next["metadata"]["generation"] = json!(generation + 1);
        }
        if &next == old {
            return next;
        }
        inner.rv += 1;
        next["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        let name = next["metadata"]["name"].as_str().unwrap_or_default().to_string();
        inner.objects.insert(key(kind, ns, &name), next.clone());
        self.record(
            inner,
            kind,
            ns,
            ChangeType::Modified,
            next.clone(),
            Some(old.clone()),
        );
        next
    }

    /// DELETE, with optional `DeleteOptions.preconditions` (resourceVersion,
    /// uid). Answers with the object or a `Status` of `Success`, per kind.
    pub(crate) fn delete(
        &self,
        kind: &'static KindInfo,
        ns: &str,
        name: &str,
        options: &Value,
    ) -> Result<Value, ApiError> {
        let mut inner = self.inner.lock();
        let k = key(kind, ns, name);
        let old = inner
            .objects
            .get(&k)
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind, name))?;
        let pre = &options["preconditions"];
        if let Some(want) = pre["resourceVersion"].as_str() {
            if want != rv_of(&old) {
                let what = format!(
                    "ResourceVersion in precondition: {want}, ResourceVersion in object meta: {}",
                    rv_of(&old)
                );
                return Err(ApiError::precondition_failed(kind, name, what));
            }
        }
        if let Some(want) = pre["uid"].as_str() {
            let have = old.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("");
            if want != have {
                let what = format!("UID in precondition: {want}, UID in object meta: {have}");
                return Err(ApiError::precondition_failed(kind, name, what));
            }
        }
        inner.objects.remove(&k);
        inner.rv += 1;
        let mut gone = old.clone();
        gone["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        self.record(
            &mut inner,
            kind,
            ns,
            ChangeType::Deleted,
            gone.clone(),
            Some(old.clone()),
        );
        if kind.return_deleted_object {
            Ok(gone)
        } else {
            Ok(status::success(kind, name, &old["metadata"]["uid"]))
        }
    }

    /// Forgets the change history: a watch from any resourceVersion before
    /// now gets 410 Expired.
    pub(crate) fn compact(&self) -> u64 {
        let mut inner = self.inner.lock();
        inner.history.clear();
        inner.floor = inner.rv;
        inner.rv
    }

    /// Starts a watch of one kind: the backlog to replay and the live feed,
    /// taken under the lock so nothing falls between them. 410 when the
    /// history no longer reaches back to `from`.
    pub(crate) fn watch(&self, kind: &'static KindInfo, from: WatchFrom) -> Result<WatchStart, ApiError> {
        let inner = self.inner.lock();
        let live = self.live.subscribe();
        let same_kind = |g: &str, p: &str| g == kind.group && p == kind.plural;
        let backlog = match from {
            WatchFrom::Now => inner
                .objects
                .iter()
                .filter(|((g, p, _, _), _)| same_kind(g, p))
                .map(|((_, _, ns, _), obj)| {
                    Arc::new(Change {
                        rv: rv_of(obj).parse().unwrap_or(0),
                        kind,
                        namespace: ns.clone(),
                        change: ChangeType::Added,
                        object: obj.clone(),
                        prev: None,
                    })
                })
                .collect(),
            WatchFrom::After(rv) if rv < inner.floor => return Err(ApiError::expired(rv, inner.floor)),
            WatchFrom::After(rv) => inner
                .history
                .iter()
                .filter(|c| c.rv > rv && same_kind(c.kind.group, c.kind.plural))
                .cloned()
                .collect(),
        };
        Ok(WatchStart {
            backlog,
            live,
            rv: inner.rv,
        })
    }

    /// Appends a change to the history (dropping the oldest past the cap)
    /// and sends it to the live watches.
    fn record(
        &self,
        inner: &mut Inner,
        kind: &'static KindInfo,
        ns: &str,
        change: ChangeType,
        object: Value,
        prev: Option<Value>,
    ) {
        let c = Arc::new(Change {
            rv: inner.rv,
            kind,
            namespace: ns.to_string(),
            change,
            object,
            prev,
        });
        inner.history.push_back(c.clone());
        while inner.history.len() > inner.cap {
            if let Some(dropped) = inner.history.pop_front() {
                inner.floor = dropped.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.live.send(c);
    }
}

/// The body must be an object whose namespace, if set, is the URL's.
fn check_body(body: &Value, ns: &str) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    match body.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(n) if !n.is_empty() && n != ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => Ok(()),
    }
}
