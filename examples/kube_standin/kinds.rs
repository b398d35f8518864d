//! The resource kinds the stand-in serves, and the request target: which
//! kind, namespace, name and subresource a Kubernetes URL path names.

/// One resource kind the stand-in stores, with the per-kind behaviour of
/// the real API server's registry strategy that matters to clients.
#[derive(Debug)]
pub(crate) struct KindInfo {
    /// API group; "" for the core group.
    pub(crate) group: &'static str,
    pub(crate) version: &'static str,
    /// Lower-case plural, as in the URL and in RBAC rules.
    pub(crate) plural: &'static str,
    pub(crate) kind: &'static str,
    /// Served with a `/status` subresource: the main resource ignores
    /// `.status`, `/status` writes change only `.status`.
    pub(crate) status_subresource: bool,
    /// A PUT without `metadata.resourceVersion` is accepted (core Events);
    /// otherwise it is rejected with 422, as for custom resources and Leases.
    pub(crate) unconditional_update: bool,
    /// A PUT to an absent name creates the object (Leases, Events);
    /// otherwise it is a 404 (custom resources).
    pub(crate) create_on_update: bool,
    /// DELETE answers with the deleted object (custom resources) rather
    /// than a `Status` of `Success`.
    pub(crate) return_deleted_object: bool,
    /// `metadata.generation` is kept (custom resources); built-in Leases
    /// and Events have none.
    pub(crate) tracks_generation: bool,
}

impl KindInfo {
    /// `group/version`, or just `version` for the core group.
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The name the real server uses in error messages: `plural.group`,
    /// or just `plural` for the core group.
    pub(crate) fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// Every kind served. Core v1 Events and events.k8s.io/v1 Events are kept
/// apart (the real server shares one storage and converts between them).
pub(crate) static KINDS: &[KindInfo] = &[
    KindInfo {
        group: "switchyard.dev",
        version: "v1alpha1",
        plural: "modelrollouts",
        kind: "ModelRollout",
        status_subresource: true,
        unconditional_update: false,
        create_on_update: false,
        return_deleted_object: true,
        tracks_generation: true,
    },
    KindInfo {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        status_subresource: false,
        unconditional_update: false,
        create_on_update: true,
        return_deleted_object: false,
        tracks_generation: false,
    },
    KindInfo {
        group: "",
        version: "v1",
        plural: "events",
        kind: "Event",
        status_subresource: false,
        unconditional_update: true,
        create_on_update: true,
        return_deleted_object: false,
        tracks_generation: false,
    },
    KindInfo {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        kind: "Event",
        status_subresource: false,
        unconditional_update: true,
        create_on_update: true,
        return_deleted_object: false,
        tracks_generation: false,
    },
];

/// What a Kubernetes URL path names, before the kind is looked up.
#[derive(Debug, Default, Clone)]
pub(crate) struct Target {
    pub(crate) group: String,
    pub(crate) version: String,
    pub(crate) plural: String,
    /// `None` for a request across all namespaces.
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) subresource: Option<String>,
}

impl Target {
    /// Parses `/api/v1/...` or `/apis/{group}/{version}/...` followed by
    /// `[namespaces/{ns}/]{plural}[/{name}[/{subresource}]]`.
    /// `None` for any other path.
    pub(crate) fn parse(path: &str) -> Option<Target> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match segs.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
            _ => (None, rest),
        };
        let (plural, name, subresource) = match rest {
            [plural] => (*plural, None, None),
            [plural, name] => (*plural, Some(name.to_string()), None),
            [plural, name, sub] => (*plural, Some(name.to_string()), Some(sub.to_string())),
            _ => return None,
        };
        if plural.is_empty() || name.as_deref() == Some("") {
            return None;
        }
        Some(Target {
            group: group.to_string(),
            version: version.to_string(),
            plural: plural.to_string(),
            namespace,
            name,
            subresource,
        })
    }

    /// The kind served at this group, version and plural.
    pub(crate) fn kind(&self) -> Option<&'static KindInfo> {
        KINDS
            .iter()
            .find(|k| k.group == self.group && k.version == self.version && k.plural == self.plural)
    }
}
