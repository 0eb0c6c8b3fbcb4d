//! The resources tug serves, in one table, as upstream's discovery shows them.

/// Verbs of an ordinary stored resource, in upstream's order.
pub const STANDARD_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// The API group; "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The plural name used in paths, e.g. `deployments`.
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources served, e.g. `status`.
    pub subresources: &'static [&'static str],
    /// Kept in the store. A review (SelfSubjectReview, access reviews) is
    /// not: it is created, answered and forgotten.
    pub stored: bool,
}

impl Resource {
    /// The kind a subresource answers with: `autoscaling/v1` Scale for
    /// `scale`, the resource's own kind otherwise.
    pub fn subresource_kind(
        &self,
        subresource: &str,
    ) -> (&'static str, &'static str, &'static str) {
        match subresource {
            "scale" => ("autoscaling", "v1", "Scale"),
            "token" => ("authentication.k8s.io", "v1", "TokenRequest"),
            "binding" => ("", "v1", "Binding"),
            "eviction" => ("policy", "v1", "Eviction"),
            "exec" => ("", "v1", "PodExecOptions"),
            "attach" => ("", "v1", "PodAttachOptions"),
            "portforward" => ("", "v1", "PodPortForwardOptions"),
            _ => (self.group, self.version, self.kind),
        }
    }

    /// Subresources that open a stream (exec, attach, port-forward): no
    /// object is read or written.
    pub fn streaming(subresource: &str) -> bool {
        matches!(subresource, "exec" | "attach" | "portforward")
    }

    /// Subresources that are only created (POST): a token, a binding, an
    /// eviction.
    pub fn create_only(subresource: &str) -> bool {
        matches!(subresource, "token" | "binding" | "eviction")
    }

    /// `v1` for the core group, `apps/v1` for the others.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The store prefix under which this resource's objects live, ending in `/`.
    pub fn storage_prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/registry/{}/", self.plural)
        } else {
            format!("/registry/{}/{}/", self.group, self.plural)
        }
    }

    pub fn verbs(&self) -> &'static [&'static str] {
        if self.stored {
            STANDARD_VERBS
        } else {
            &["create"]
        }
    }
}

const ALL: &[&str] = &["all"];
const STATUS: &[&str] = &["status"];
const STATUS_SCALE: &[&str] = &["status", "scale"];
const NONE: &[&str] = &[];

macro_rules! resource {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, $namespaced:expr,
     $short:expr, $categories:expr, $sub:expr) => {
        Resource {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $namespaced,
            short_names: $short,
            categories: $categories,
            subresources: $sub,
            stored: true,
        }
    };
}

macro_rules! review {
    ($group:expr, $kind:expr, $plural:expr, $singular:expr) => {
        review!($group, $kind, $plural, $singular, false)
    };
    ($group:expr, $kind:expr, $plural:expr, $singular:expr, $namespaced:expr) => {
        Resource {
            group: $group,
            version: "v1",
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $namespaced,
            short_names: NONE,
            categories: NONE,
            subresources: NONE,
            stored: false,
        }
    };
}

/// Every resource tug serves. Groups appear in the order discovery lists them.
pub const RESOURCES: &[Resource] = &[
    resource!(
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        "configmap",
        true,
        &["cm"],
        NONE,
        NONE
    ),
    resource!(
        "",
        "v1",
        "Endpoints",
        "endpoints",
        "endpoints",
        true,
        &["ep"],
        NONE,
        NONE
    ),
    resource!(
        "",
        "v1",
        "Event",
        "events",
        "event",
        true,
        &["ev"],
        NONE,
        NONE
    ),
    resource!(
        "",
        "v1",
        "LimitRange",
        "limitranges",
        "limitrange",
        true,
        &["limits"],
        NONE,
        NONE
    ),
    resource!(
        "",
        "v1",
        "Namespace",
        "namespaces",
        "namespace",
        false,
        &["ns"],
        NONE,
        STATUS
    ),
    resource!(
        "",
        "v1",
        "Node",
        "nodes",
        "node",
        false,
        &["no"],
        NONE,
        STATUS
    ),
    resource!(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        true,
        &["pvc"],
        NONE,
        STATUS
    ),
    resource!(
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        "persistentvolume",
        false,
        &["pv"],
        NONE,
        STATUS
    ),
    resource!(
        "",
        "v1",
        "Pod",
        "pods",
        "pod",
        true,
        &["po"],
        ALL,
        &[
            "status",
            "binding",
            "eviction",
            "log",
            "exec",
            "attach",
            "portforward"
        ]
    ),
    resource!(
        "",
        "v1",
        "PodTemplate",
        "podtemplates",
        "podtemplate",
        true,
        NONE,
        NONE,
        NONE
    ),
    resource!(
        "",
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        "replicationcontroller",
        true,
        &["rc"],
        ALL,
        STATUS_SCALE
    ),
    resource!(
        "",
        "v1",
        "ResourceQuota",
        "resourcequotas",
        "resourcequota",
        true,
        &["quota"],
        NONE,
        STATUS
    ),
    resource!(
        "", "v1", "Secret", "secrets", "secret", true, NONE, NONE, NONE
    ),
    resource!(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        true,
        &["sa"],
        NONE,
        &["token"]
    ),
    resource!(
        "",
        "v1",
        "Service",
        "services",
        "service",
        true,
        &["svc"],
        ALL,
        STATUS
    ),
    resource!(
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        "controllerrevision",
        true,
        NONE,
        NONE,
        NONE
    ),
    resource!(
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        "daemonset",
        true,
        &["ds"],
        ALL,
        STATUS
    ),
    resource!(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        "deployment",
        true,
        &["deploy"],
        ALL,
        STATUS_SCALE
    ),
    resource!(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        true,
        &["rs"],
        ALL,
        STATUS_SCALE
    ),
    resource!(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        "statefulset",
        true,
        &["sts"],
        ALL,
        STATUS_SCALE
    ),
    review!(
        "authentication.k8s.io",
        "SelfSubjectReview",
        "selfsubjectreviews",
        "selfsubjectreview"
    ),
    review!(
        "authentication.k8s.io",
        "TokenReview",
        "tokenreviews",
        "tokenreview"
    ),
    review!(
        "authorization.k8s.io",
        "LocalSubjectAccessReview",
        "localsubjectaccessreviews",
        "localsubjectaccessreview",
        true
    ),
    review!(
        "authorization.k8s.io",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview"
    ),
    review!(
        "authorization.k8s.io",
        "SelfSubjectRulesReview",
        "selfsubjectrulesreviews",
        "selfsubjectrulesreview"
    ),
    review!(
        "authorization.k8s.io",
        "SubjectAccessReview",
        "subjectaccessreviews",
        "subjectaccessreview"
    ),
    resource!(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        true,
        &["hpa"],
        ALL,
        STATUS
    ),
    resource!(
        "autoscaling",
        "v1",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        true,
        &["hpa"],
        ALL,
        STATUS
    ),
    resource!(
        "batch",
        "v1",
        "CronJob",
        "cronjobs",
        "cronjob",
        true,
        &["cj"],
        ALL,
        STATUS
    ),
    resource!("batch", "v1", "Job", "jobs", "job", true, NONE, ALL, STATUS),
    resource!(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        "lease",
        true,
        NONE,
        NONE,
        NONE
    ),
    resource!(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        true,
        NONE,
        NONE,
        NONE
    ),
    resource!(
        "events.k8s.io",
        "v1",
        "Event",
        "events",
        "event",
        true,
        &["ev"],
        NONE,
        NONE
    ),
    resource!(
        "networking.k8s.io",
        "v1",
        "IngressClass",
        "ingressclasses",
        "ingressclass",
        false,
        NONE,
        NONE,
        NONE
    ),
    resource!(
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        "ingress",
        true,
        &["ing"],
        NONE,
        STATUS
    ),
    resource!(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        "networkpolicy",
        true,
        &["netpol"],
        NONE,
        NONE
    ),
    resource!(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        true,
        &["pdb"],
        NONE,
        STATUS
    ),
    resource!(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        "clusterrolebinding",
        false,
        NONE,
        NONE,
        NONE
    ),
    resource!(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        "clusterrole",
        false,
        NONE,
        NONE,
        NONE
    ),
    resource!(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        "rolebinding",
        true,
        NONE,
        NONE,
        NONE
    ),
    resource!(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        "role",
        true,
        NONE,
        NONE,
        NONE
    ),
    resource!(
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        "priorityclasses",
        "priorityclass",
        false,
        &["pc"],
        NONE,
        NONE
    ),
    resource!(
        "storage.k8s.io",
        "v1",
        "CSIDriver",
        "csidrivers",
        "csidriver",
        false,
        NONE,
        NONE,
        NONE
    ),
    resource!(
        "storage.k8s.io",
        "v1",
        "CSINode",
        "csinodes",
        "csinode",
        false,
        NONE,
        NONE,
        NONE
    ),
    resource!(
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        "storageclass",
        false,
        &["sc"],
        NONE,
        NONE
    ),
    resource!(
        "storage.k8s.io",
        "v1",
        "VolumeAttachment",
        "volumeattachments",
        "volumeattachment",
        false,
        NONE,
        NONE,
        STATUS
    ),
    resource!(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        "customresourcedefinition",
        false,
        &["crd", "crds"],
        &["api-extensions"],
        STATUS
    ),
];

/// Resources defined at run time (custom resources), served after the
/// built-in ones.
static CUSTOM: std::sync::RwLock<Vec<&'static Resource>> = std::sync::RwLock::new(Vec::new());

/// Every resource served now: the built-in table, then custom resources.
pub fn all() -> Vec<&'static Resource> {
    let custom = CUSTOM.read().expect("custom resources lock");
    RESOURCES.iter().chain(custom.iter().copied()).collect()
}

/// Whether a resource was defined at run time.
pub fn is_custom(resource: &Resource) -> bool {
    !RESOURCES.iter().any(|r| std::ptr::eq(r, resource))
}

/// Replaces the custom resources served.
pub fn set_custom(resources: Vec<&'static Resource>) {
    *CUSTOM.write().expect("custom resources lock") = resources;
}

/// A custom resource as its definition states it, in owned strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Definition {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub subresources: Vec<String>,
}

/// A `'static` resource for a definition. Each distinct definition is
/// made once and kept: redefining the same resource costs nothing more.
pub fn intern(definition: &Definition) -> &'static Resource {
    static MADE: std::sync::Mutex<Vec<(Definition, &'static Resource)>> =
        std::sync::Mutex::new(Vec::new());
    let mut made = MADE.lock().expect("interned resources lock");
    if let Some((_, resource)) = made.iter().find(|(d, _)| d == definition) {
        return resource;
    }
    let text = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
    let list = |items: &[String]| -> &'static [&'static str] {
        Box::leak(
            items
                .iter()
                .map(|s| text(s))
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        )
    };
    let resource: &'static Resource = Box::leak(Box::new(Resource {
        group: text(&definition.group),
        version: text(&definition.version),
        kind: text(&definition.kind),
        plural: text(&definition.plural),
        singular: text(&definition.singular),
        namespaced: definition.namespaced,
        short_names: list(&definition.short_names),
        categories: list(&definition.categories),
        subresources: list(&definition.subresources),
        stored: true,
    }));
    made.push((definition.clone(), resource));
    resource
}

/// The group-versions served, in discovery order.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for resource in all() {
        if !groups.contains(&(resource.group, resource.version)) {
            groups.push((resource.group, resource.version));
        }
    }
    groups
}

/// The API groups in discovery's order, each with its versions, the
/// preferred first.
pub fn group_versions() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut by_group: Vec<(&str, Vec<&str>)> = Vec::new();
    for (group, version) in groups() {
        match by_group.iter_mut().find(|(g, _)| *g == group) {
            Some((_, versions)) => versions.push(version),
            None => by_group.push((group, vec![version])),
        }
    }
    by_group
}

/// The resource served at `group`/`version` under the plural `plural`.
/// Runs on every request: the built-in table first, without allocating.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    let wanted = |r: &&Resource| r.group == group && r.version == version && r.plural == plural;
    RESOURCES.iter().find(wanted).or_else(|| {
        CUSTOM
            .read()
            .expect("custom resources lock")
            .iter()
            .copied()
            .find(wanted)
    })
}

/// The resources of one group-version, in table order.
pub fn in_group_version<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static Resource> + 'a {
    all()
        .into_iter()
        .filter(move |r| r.group == group && r.version == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_is_listed_once_and_named_consistently() {
        for (i, a) in RESOURCES.iter().enumerate() {
            assert_eq!(a.plural.to_lowercase(), a.plural, "{}", a.kind);
            assert_eq!(a.singular, a.kind.to_lowercase(), "{}", a.kind);
            for b in &RESOURCES[i + 1..] {
                assert!(
                    !(a.group == b.group && a.version == b.version && a.plural == b.plural),
                    "{} listed twice",
                    a.plural
                );
                // Upstream repeats a short name only for the same resource
                // in another group (events and events.events.k8s.io: ev).
                for short in a.short_names {
                    assert!(
                        a.plural == b.plural || !b.short_names.contains(short),
                        "short name {short} twice"
                    );
                }
            }
        }
    }

    #[test]
    fn api_versions_and_storage_prefixes_follow_upstream() {
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(pods.api_version(), "v1");
        assert_eq!(pods.storage_prefix(), "/registry/pods/");
        let deployments = find("apps", "v1", "deployments").unwrap();
        assert_eq!(deployments.api_version(), "apps/v1");
        assert_eq!(deployments.storage_prefix(), "/registry/apps/deployments/");
        assert!(find("apps", "v1", "pods").is_none());
        assert_eq!(groups()[0], ("", "v1"));
        assert_eq!(groups()[1], ("apps", "v1"));
        let autoscaling = group_versions()
            .into_iter()
            .find(|(g, _)| *g == "autoscaling")
            .unwrap();
        assert_eq!(autoscaling.1, ["v2", "v1"]);
    }
}
