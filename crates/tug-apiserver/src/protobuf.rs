//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`), which
//! kubectl 1.32+ sends for `create configmap|secret|namespace` and a few
//! other commands, decoded into the JSON the rest of the server handles.
//!
//! The envelope is the 4 bytes `k8s\0` and a `runtime.Unknown` message
//! (typeMeta, raw, contentEncoding, contentType); `raw` is the object. Each
//! kind is decoded through a table of its fields (numbers from upstream's
//! `generated.proto`); fields not in the table are skipped, as protobuf
//! readers do. Kinds without a table are refused with 415.

use base64::Engine;
use serde_json::{Map, Value, json};

const MAGIC: &[u8] = b"k8s\0";

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtobufError {
    #[error("invalid protobuf body: {0}")]
    Malformed(String),
    #[error("protobuf bodies of kind {0} are not supported yet; send JSON")]
    UnsupportedKind(String),
    #[error("protobuf field {0} is not supported yet; send JSON")]
    UnsupportedField(String),
}

fn malformed(what: &str) -> ProtobufError {
    ProtobufError::Malformed(what.to_string())
}

/// How one field is turned into JSON.
#[derive(Clone, Copy)]
enum Kind {
    String,
    /// A `*bool`: written only when set, so false is kept.
    Bool,
    /// A plain `bool`: always written; false is JSON's omitted default.
    Flag,
    /// A plain integer: always written; zero is omitted.
    Int64,
    /// A pointer integer: written only when set, so zero is kept.
    OptInt,
    /// A `*intstr.IntOrString`: {type, intVal, strVal}, written when set.
    IntOrString,
    /// A plain `intstr.IntOrString`: always written; the zero int is omitted.
    PlainIntOrString,
    /// An embedded struct whose fields JSON writes in the parent's.
    Inline(&'static [Field]),
    /// `map<string, Quantity>`.
    QuantityMap,
    /// A `*resource.Quantity`, as its string.
    Quantity,
    /// Read and dropped: what the server computes (status) or owns.
    Ignore,
    /// A field tug does not decode yet: refused (415) unless empty, so
    /// that nothing a client sent is silently lost.
    Unsupported,
    Time,
    Message(&'static [Field]),
    StringMap,
    BytesMap,
    RepeatedString,
    RepeatedMessage(&'static [Field]),
}

struct Field {
    number: u64,
    name: &'static str,
    kind: Kind,
}

const fn field(number: u64, name: &'static str, kind: Kind) -> Field {
    Field { number, name, kind }
}

const OWNER_REFERENCE: &[Field] = &[
    field(5, "apiVersion", Kind::String),
    field(1, "kind", Kind::String),
    field(3, "name", Kind::String),
    field(4, "uid", Kind::String),
    field(6, "controller", Kind::Bool),
    field(7, "blockOwnerDeletion", Kind::Bool),
];

const OBJECT_META: &[Field] = &[
    field(1, "name", Kind::String),
    field(2, "generateName", Kind::String),
    field(3, "namespace", Kind::String),
    field(4, "selfLink", Kind::Ignore),
    field(17, "managedFields", Kind::Ignore),
    field(5, "uid", Kind::String),
    field(6, "resourceVersion", Kind::String),
    field(7, "generation", Kind::Int64),
    field(8, "creationTimestamp", Kind::Time),
    field(9, "deletionTimestamp", Kind::Time),
    field(10, "deletionGracePeriodSeconds", Kind::Int64),
    field(11, "labels", Kind::StringMap),
    field(12, "annotations", Kind::StringMap),
    field(
        13,
        "ownerReferences",
        Kind::RepeatedMessage(OWNER_REFERENCE),
    ),
    field(14, "finalizers", Kind::RepeatedString),
];

const CONFIG_MAP: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(2, "data", Kind::StringMap),
    field(3, "binaryData", Kind::BytesMap),
    field(4, "immutable", Kind::Bool),
];

const SECRET: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(2, "data", Kind::BytesMap),
    field(3, "type", Kind::String),
    field(4, "stringData", Kind::StringMap),
    field(5, "immutable", Kind::Bool),
];

const NAMESPACE_SPEC: &[Field] = &[field(1, "finalizers", Kind::RepeatedString)];

const NAMESPACE: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(2, "spec", Kind::Message(NAMESPACE_SPEC)),
    field(3, "status", Kind::Ignore),
];

const INT_OR_STRING: &[Field] = &[
    field(1, "type", Kind::Int64),
    field(2, "intVal", Kind::Int64),
    field(3, "strVal", Kind::String),
];

const QUANTITY: &[Field] = &[field(1, "string", Kind::String)];

const LABEL_SELECTOR_REQUIREMENT: &[Field] = &[
    field(1, "key", Kind::String),
    field(2, "operator", Kind::String),
    field(3, "values", Kind::RepeatedString),
];

const LABEL_SELECTOR: &[Field] = &[
    field(1, "matchLabels", Kind::StringMap),
    field(
        2,
        "matchExpressions",
        Kind::RepeatedMessage(LABEL_SELECTOR_REQUIREMENT),
    ),
];

const CONTAINER_PORT: &[Field] = &[
    field(1, "name", Kind::String),
    field(2, "hostPort", Kind::Int64),
    field(3, "containerPort", Kind::Int64),
    field(4, "protocol", Kind::String),
    field(5, "hostIP", Kind::String),
];

const ENV_VAR: &[Field] = &[
    field(1, "name", Kind::String),
    field(2, "value", Kind::String),
    field(3, "valueFrom", Kind::Unsupported),
];

const RESOURCE_REQUIREMENTS: &[Field] = &[
    field(1, "limits", Kind::QuantityMap),
    field(2, "requests", Kind::QuantityMap),
    field(3, "claims", Kind::Unsupported),
];

const CONTAINER: &[Field] = &[
    field(1, "name", Kind::String),
    field(2, "image", Kind::String),
    field(3, "command", Kind::RepeatedString),
    field(4, "args", Kind::RepeatedString),
    field(5, "workingDir", Kind::String),
    field(6, "ports", Kind::RepeatedMessage(CONTAINER_PORT)),
    field(19, "envFrom", Kind::Unsupported),
    field(7, "env", Kind::RepeatedMessage(ENV_VAR)),
    field(8, "resources", Kind::Message(RESOURCE_REQUIREMENTS)),
    field(23, "resizePolicy", Kind::Unsupported),
    field(24, "restartPolicy", Kind::String),
    field(25, "restartPolicyRules", Kind::Unsupported),
    field(9, "volumeMounts", Kind::Unsupported),
    field(21, "volumeDevices", Kind::Unsupported),
    field(10, "livenessProbe", Kind::Unsupported),
    field(11, "readinessProbe", Kind::Unsupported),
    field(22, "startupProbe", Kind::Unsupported),
    field(12, "lifecycle", Kind::Unsupported),
    field(13, "terminationMessagePath", Kind::String),
    field(20, "terminationMessagePolicy", Kind::String),
    field(14, "imagePullPolicy", Kind::String),
    field(15, "securityContext", Kind::Unsupported),
    field(16, "stdin", Kind::Flag),
    field(17, "stdinOnce", Kind::Flag),
    field(18, "tty", Kind::Flag),
];

const POD_SPEC: &[Field] = &[
    field(1, "volumes", Kind::Unsupported),
    field(20, "initContainers", Kind::RepeatedMessage(CONTAINER)),
    field(2, "containers", Kind::RepeatedMessage(CONTAINER)),
    field(34, "ephemeralContainers", Kind::Unsupported),
    field(3, "restartPolicy", Kind::String),
    field(4, "terminationGracePeriodSeconds", Kind::OptInt),
    field(5, "activeDeadlineSeconds", Kind::OptInt),
    field(6, "dnsPolicy", Kind::String),
    field(7, "nodeSelector", Kind::StringMap),
    field(8, "serviceAccountName", Kind::String),
    field(9, "serviceAccount", Kind::String),
    field(21, "automountServiceAccountToken", Kind::Bool),
    field(10, "nodeName", Kind::String),
    field(11, "hostNetwork", Kind::Flag),
    field(12, "hostPID", Kind::Flag),
    field(13, "hostIPC", Kind::Flag),
    field(27, "shareProcessNamespace", Kind::Bool),
    field(14, "securityContext", Kind::Unsupported),
    field(
        15,
        "imagePullSecrets",
        Kind::RepeatedMessage(LOCAL_OBJECT_REFERENCE),
    ),
    field(16, "hostname", Kind::String),
    field(17, "subdomain", Kind::String),
    field(18, "affinity", Kind::Unsupported),
    field(19, "schedulerName", Kind::String),
    field(22, "tolerations", Kind::Unsupported),
    field(23, "hostAliases", Kind::Unsupported),
    field(24, "priorityClassName", Kind::String),
    field(25, "priority", Kind::OptInt),
    field(26, "dnsConfig", Kind::Unsupported),
    field(28, "readinessGates", Kind::Unsupported),
    field(29, "runtimeClassName", Kind::String),
    field(30, "enableServiceLinks", Kind::Bool),
    field(31, "preemptionPolicy", Kind::String),
    field(32, "overhead", Kind::QuantityMap),
    field(33, "topologySpreadConstraints", Kind::Unsupported),
    field(35, "setHostnameAsFQDN", Kind::Bool),
    field(36, "os", Kind::Unsupported),
    field(37, "hostUsers", Kind::Bool),
    field(38, "schedulingGates", Kind::Unsupported),
    field(39, "resourceClaims", Kind::Unsupported),
    field(40, "resources", Kind::Message(RESOURCE_REQUIREMENTS)),
    field(41, "hostnameOverride", Kind::String),
];

const POD_TEMPLATE_SPEC: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(2, "spec", Kind::Message(POD_SPEC)),
];

const ROLLING_UPDATE_DEPLOYMENT: &[Field] = &[
    field(1, "maxUnavailable", Kind::IntOrString),
    field(2, "maxSurge", Kind::IntOrString),
];

const DEPLOYMENT_STRATEGY: &[Field] = &[
    field(1, "type", Kind::String),
    field(2, "rollingUpdate", Kind::Message(ROLLING_UPDATE_DEPLOYMENT)),
];

const DEPLOYMENT_SPEC: &[Field] = &[
    field(1, "replicas", Kind::OptInt),
    field(2, "selector", Kind::Message(LABEL_SELECTOR)),
    field(3, "template", Kind::Message(POD_TEMPLATE_SPEC)),
    field(4, "strategy", Kind::Message(DEPLOYMENT_STRATEGY)),
    field(5, "minReadySeconds", Kind::Int64),
    field(6, "revisionHistoryLimit", Kind::OptInt),
    field(7, "paused", Kind::Flag),
    field(9, "progressDeadlineSeconds", Kind::OptInt),
];

const DEPLOYMENT: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(2, "spec", Kind::Message(DEPLOYMENT_SPEC)),
    field(3, "status", Kind::Ignore),
];

const LOCAL_OBJECT_REFERENCE: &[Field] = &[field(1, "name", Kind::String)];

const OBJECT_REFERENCE: &[Field] = &[
    field(1, "kind", Kind::String),
    field(2, "namespace", Kind::String),
    field(3, "name", Kind::String),
    field(4, "uid", Kind::String),
    field(5, "apiVersion", Kind::String),
    field(6, "resourceVersion", Kind::String),
    field(7, "fieldPath", Kind::String),
];

const JOB_SPEC: &[Field] = &[
    field(1, "parallelism", Kind::OptInt),
    field(2, "completions", Kind::OptInt),
    field(3, "activeDeadlineSeconds", Kind::OptInt),
    field(4, "selector", Kind::Message(LABEL_SELECTOR)),
    field(5, "manualSelector", Kind::Bool),
    field(6, "template", Kind::Message(POD_TEMPLATE_SPEC)),
    field(7, "backoffLimit", Kind::OptInt),
    field(8, "ttlSecondsAfterFinished", Kind::OptInt),
    field(9, "completionMode", Kind::String),
    field(10, "suspend", Kind::Bool),
    field(11, "podFailurePolicy", Kind::Unsupported),
    field(12, "backoffLimitPerIndex", Kind::OptInt),
    field(13, "maxFailedIndexes", Kind::OptInt),
    field(14, "podReplacementPolicy", Kind::String),
    field(15, "managedBy", Kind::String),
    field(16, "successPolicy", Kind::Unsupported),
];

const JOB: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(2, "spec", Kind::Message(JOB_SPEC)),
    field(3, "status", Kind::Ignore),
];

const JOB_TEMPLATE_SPEC: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(2, "spec", Kind::Message(JOB_SPEC)),
];

const CRON_JOB_SPEC: &[Field] = &[
    field(1, "schedule", Kind::String),
    field(2, "startingDeadlineSeconds", Kind::OptInt),
    field(3, "concurrencyPolicy", Kind::String),
    field(4, "suspend", Kind::Bool),
    field(5, "jobTemplate", Kind::Message(JOB_TEMPLATE_SPEC)),
    field(6, "successfulJobsHistoryLimit", Kind::OptInt),
    field(7, "failedJobsHistoryLimit", Kind::OptInt),
    field(8, "timeZone", Kind::String),
];

const CRON_JOB: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(2, "spec", Kind::Message(CRON_JOB_SPEC)),
    field(3, "status", Kind::Ignore),
];

const SERVICE_PORT: &[Field] = &[
    field(1, "name", Kind::String),
    field(2, "protocol", Kind::String),
    field(3, "port", Kind::Int64),
    field(4, "targetPort", Kind::PlainIntOrString),
    field(5, "nodePort", Kind::Int64),
    field(6, "appProtocol", Kind::String),
];

const SERVICE_SPEC: &[Field] = &[
    field(1, "ports", Kind::RepeatedMessage(SERVICE_PORT)),
    field(2, "selector", Kind::StringMap),
    field(3, "clusterIP", Kind::String),
    field(4, "type", Kind::String),
    field(5, "externalIPs", Kind::RepeatedString),
    field(7, "sessionAffinity", Kind::String),
    field(8, "loadBalancerIP", Kind::String),
    field(9, "loadBalancerSourceRanges", Kind::RepeatedString),
    field(10, "externalName", Kind::String),
    field(11, "externalTrafficPolicy", Kind::String),
    field(12, "healthCheckNodePort", Kind::Int64),
    field(13, "publishNotReadyAddresses", Kind::Flag),
    field(
        14,
        "sessionAffinityConfig",
        Kind::Message(&[field(
            1,
            "clientIP",
            Kind::Message(&[field(1, "timeoutSeconds", Kind::OptInt)]),
        )]),
    ),
    field(17, "ipFamilyPolicy", Kind::String),
    field(18, "clusterIPs", Kind::RepeatedString),
    field(19, "ipFamilies", Kind::RepeatedString),
    field(20, "allocateLoadBalancerNodePorts", Kind::Bool),
    field(21, "loadBalancerClass", Kind::String),
    field(22, "internalTrafficPolicy", Kind::String),
    field(23, "trafficDistribution", Kind::String),
];

const SERVICE: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(2, "spec", Kind::Message(SERVICE_SPEC)),
    field(3, "status", Kind::Ignore),
];

const SERVICE_ACCOUNT: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(2, "secrets", Kind::RepeatedMessage(OBJECT_REFERENCE)),
    field(
        3,
        "imagePullSecrets",
        Kind::RepeatedMessage(LOCAL_OBJECT_REFERENCE),
    ),
    field(4, "automountServiceAccountToken", Kind::Bool),
];

const RESOURCE_QUOTA: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(
        2,
        "spec",
        Kind::Message(&[
            field(1, "hard", Kind::QuantityMap),
            field(2, "scopes", Kind::RepeatedString),
            field(
                3,
                "scopeSelector",
                Kind::Message(&[field(
                    1,
                    "matchExpressions",
                    Kind::RepeatedMessage(&[
                        field(1, "scopeName", Kind::String),
                        field(2, "operator", Kind::String),
                        field(3, "values", Kind::RepeatedString),
                    ]),
                )]),
            ),
        ]),
    ),
    field(3, "status", Kind::Ignore),
];

const POLICY_RULE: &[Field] = &[
    field(1, "verbs", Kind::RepeatedString),
    field(2, "apiGroups", Kind::RepeatedString),
    field(3, "resources", Kind::RepeatedString),
    field(4, "resourceNames", Kind::RepeatedString),
    field(5, "nonResourceURLs", Kind::RepeatedString),
];

/// Role and ClusterRole.
const ROLE: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(2, "rules", Kind::RepeatedMessage(POLICY_RULE)),
    field(
        3,
        "aggregationRule",
        Kind::Message(&[field(
            1,
            "clusterRoleSelectors",
            Kind::RepeatedMessage(LABEL_SELECTOR),
        )]),
    ),
];

/// RoleBinding and ClusterRoleBinding.
const ROLE_BINDING: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(
        2,
        "subjects",
        Kind::RepeatedMessage(&[
            field(1, "kind", Kind::String),
            field(2, "apiGroup", Kind::String),
            field(3, "name", Kind::String),
            field(4, "namespace", Kind::String),
        ]),
    ),
    field(
        3,
        "roleRef",
        Kind::Message(&[
            field(1, "apiGroup", Kind::String),
            field(2, "kind", Kind::String),
            field(3, "name", Kind::String),
        ]),
    ),
];

const PRIORITY_CLASS: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(2, "value", Kind::OptInt),
    field(3, "globalDefault", Kind::Flag),
    field(4, "description", Kind::String),
    field(5, "preemptionPolicy", Kind::String),
];

const POD_DISRUPTION_BUDGET: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(
        2,
        "spec",
        Kind::Message(&[
            field(1, "minAvailable", Kind::IntOrString),
            field(2, "selector", Kind::Message(LABEL_SELECTOR)),
            field(3, "maxUnavailable", Kind::IntOrString),
            field(4, "unhealthyPodEvictionPolicy", Kind::String),
        ]),
    ),
    field(3, "status", Kind::Ignore),
];

const INGRESS_BACKEND: &[Field] = &[
    field(
        3,
        "resource",
        Kind::Message(&[
            field(1, "apiGroup", Kind::String),
            field(2, "kind", Kind::String),
            field(3, "name", Kind::String),
        ]),
    ),
    field(
        4,
        "service",
        Kind::Message(&[
            field(1, "name", Kind::String),
            field(
                2,
                "port",
                Kind::Message(&[
                    field(1, "name", Kind::String),
                    field(2, "number", Kind::Int64),
                ]),
            ),
        ]),
    ),
];

const INGRESS_RULE: &[Field] = &[
    field(1, "host", Kind::String),
    field(
        2,
        "ingressRuleValue",
        Kind::Inline(&[field(
            1,
            "http",
            Kind::Message(&[field(
                1,
                "paths",
                Kind::RepeatedMessage(&[
                    field(1, "path", Kind::String),
                    field(2, "backend", Kind::Message(INGRESS_BACKEND)),
                    field(3, "pathType", Kind::String),
                ]),
            )]),
        )]),
    ),
];

const INGRESS: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(
        2,
        "spec",
        Kind::Message(&[
            field(1, "defaultBackend", Kind::Message(INGRESS_BACKEND)),
            field(
                2,
                "tls",
                Kind::RepeatedMessage(&[
                    field(1, "hosts", Kind::RepeatedString),
                    field(2, "secretName", Kind::String),
                ]),
            ),
            field(3, "rules", Kind::RepeatedMessage(INGRESS_RULE)),
            field(4, "ingressClassName", Kind::String),
        ]),
    ),
    field(3, "status", Kind::Ignore),
];

const CROSS_VERSION_OBJECT_REFERENCE: &[Field] = &[
    field(1, "kind", Kind::String),
    field(2, "name", Kind::String),
    field(3, "apiVersion", Kind::String),
];

const HPA_V2: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(
        2,
        "spec",
        Kind::Message(&[
            field(
                1,
                "scaleTargetRef",
                Kind::Message(CROSS_VERSION_OBJECT_REFERENCE),
            ),
            field(2, "minReplicas", Kind::OptInt),
            field(3, "maxReplicas", Kind::OptInt),
            field(
                4,
                "metrics",
                Kind::RepeatedMessage(&[
                    field(1, "type", Kind::String),
                    field(2, "object", Kind::Unsupported),
                    field(3, "pods", Kind::Unsupported),
                    field(
                        4,
                        "resource",
                        Kind::Message(&[
                            field(1, "name", Kind::String),
                            field(
                                2,
                                "target",
                                Kind::Message(&[
                                    field(1, "type", Kind::String),
                                    field(2, "value", Kind::Quantity),
                                    field(3, "averageValue", Kind::Quantity),
                                    field(4, "averageUtilization", Kind::OptInt),
                                ]),
                            ),
                        ]),
                    ),
                    field(5, "external", Kind::Unsupported),
                    field(7, "containerResource", Kind::Unsupported),
                ]),
            ),
            field(5, "behavior", Kind::Unsupported),
        ]),
    ),
    field(3, "status", Kind::Ignore),
];

const HPA_V1: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(
        2,
        "spec",
        Kind::Message(&[
            field(
                1,
                "scaleTargetRef",
                Kind::Message(CROSS_VERSION_OBJECT_REFERENCE),
            ),
            field(2, "minReplicas", Kind::OptInt),
            field(3, "maxReplicas", Kind::OptInt),
            field(4, "targetCPUUtilizationPercentage", Kind::OptInt),
        ]),
    ),
    field(3, "status", Kind::Ignore),
];

const RESOURCE_ATTRIBUTES: &[Field] = &[
    field(1, "namespace", Kind::String),
    field(2, "verb", Kind::String),
    field(3, "group", Kind::String),
    field(4, "version", Kind::String),
    field(5, "resource", Kind::String),
    field(6, "subresource", Kind::String),
    field(7, "name", Kind::String),
    field(8, "fieldSelector", Kind::Unsupported),
    field(9, "labelSelector", Kind::Unsupported),
];

const NON_RESOURCE_ATTRIBUTES: &[Field] = &[
    field(1, "path", Kind::String),
    field(2, "verb", Kind::String),
];

const ACCESS_REVIEW_SPEC: &[Field] = &[
    field(1, "resourceAttributes", Kind::Message(RESOURCE_ATTRIBUTES)),
    field(
        2,
        "nonResourceAttributes",
        Kind::Message(NON_RESOURCE_ATTRIBUTES),
    ),
];

const SELF_SUBJECT_ACCESS_REVIEW: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(2, "spec", Kind::Message(ACCESS_REVIEW_SPEC)),
    field(3, "status", Kind::Ignore),
];

const SUBJECT_ACCESS_REVIEW_SPEC: &[Field] = &[
    field(1, "resourceAttributes", Kind::Message(RESOURCE_ATTRIBUTES)),
    field(
        2,
        "nonResourceAttributes",
        Kind::Message(NON_RESOURCE_ATTRIBUTES),
    ),
    field(3, "user", Kind::String),
    field(4, "groups", Kind::RepeatedString),
    field(5, "extra", Kind::Unsupported),
    field(6, "uid", Kind::String),
];

/// SubjectAccessReview and LocalSubjectAccessReview.
const SUBJECT_ACCESS_REVIEW: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(2, "spec", Kind::Message(SUBJECT_ACCESS_REVIEW_SPEC)),
    field(3, "status", Kind::Ignore),
];

const SELF_SUBJECT_RULES_REVIEW: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(
        2,
        "spec",
        Kind::Message(&[field(1, "namespace", Kind::String)]),
    ),
    field(3, "status", Kind::Ignore),
];

const TOKEN_REVIEW: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(
        2,
        "spec",
        Kind::Message(&[
            field(1, "token", Kind::String),
            field(2, "audiences", Kind::RepeatedString),
        ]),
    ),
    field(3, "status", Kind::Ignore),
];

const TOKEN_REQUEST: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(
        2,
        "spec",
        Kind::Message(&[
            field(1, "audiences", Kind::RepeatedString),
            field(
                3,
                "boundObjectRef",
                Kind::Message(&[
                    field(1, "kind", Kind::String),
                    field(2, "apiVersion", Kind::String),
                    field(3, "name", Kind::String),
                    field(4, "uid", Kind::String),
                ]),
            ),
            field(4, "expirationSeconds", Kind::OptInt),
        ]),
    ),
    field(3, "status", Kind::Ignore),
];

const EVICTION: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(
        2,
        "deleteOptions",
        Kind::Message(&[
            field(1, "gracePeriodSeconds", Kind::OptInt),
            field(
                2,
                "preconditions",
                Kind::Message(&[
                    field(1, "uid", Kind::String),
                    field(2, "resourceVersion", Kind::String),
                ]),
            ),
            field(3, "orphanDependents", Kind::Bool),
            field(4, "propagationPolicy", Kind::String),
            field(5, "dryRun", Kind::RepeatedString),
            field(
                6,
                "ignoreStoreReadErrorWithClusterBreakingPotential",
                Kind::Bool,
            ),
        ]),
    ),
];

const BINDING: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(2, "target", Kind::Message(OBJECT_REFERENCE)),
];

const SELF_SUBJECT_REVIEW: &[Field] = &[
    field(1, "metadata", Kind::Message(OBJECT_META)),
    field(2, "status", Kind::Ignore),
];

fn schema(api_version: &str, kind: &str) -> Option<&'static [Field]> {
    match (api_version, kind) {
        ("authentication.k8s.io/v1", "SelfSubjectReview") => Some(SELF_SUBJECT_REVIEW),
        ("authentication.k8s.io/v1", "TokenReview") => Some(TOKEN_REVIEW),
        ("authentication.k8s.io/v1", "TokenRequest") => Some(TOKEN_REQUEST),
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => Some(SELF_SUBJECT_ACCESS_REVIEW),
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => Some(SELF_SUBJECT_RULES_REVIEW),
        ("authorization.k8s.io/v1", "SubjectAccessReview" | "LocalSubjectAccessReview") => {
            Some(SUBJECT_ACCESS_REVIEW)
        }
        ("v1", "ConfigMap") => Some(CONFIG_MAP),
        ("v1", "Secret") => Some(SECRET),
        ("v1", "Namespace") => Some(NAMESPACE),
        ("apps/v1", "Deployment") => Some(DEPLOYMENT),
        ("autoscaling/v2", "HorizontalPodAutoscaler") => Some(HPA_V2),
        ("autoscaling/v1", "HorizontalPodAutoscaler") => Some(HPA_V1),
        ("batch/v1", "Job") => Some(JOB),
        ("batch/v1", "CronJob") => Some(CRON_JOB),
        ("v1", "Service") => Some(SERVICE),
        ("v1", "ServiceAccount") => Some(SERVICE_ACCOUNT),
        ("v1", "ResourceQuota") => Some(RESOURCE_QUOTA),
        ("rbac.authorization.k8s.io/v1", "Role" | "ClusterRole") => Some(ROLE),
        ("rbac.authorization.k8s.io/v1", "RoleBinding" | "ClusterRoleBinding") => {
            Some(ROLE_BINDING)
        }
        ("scheduling.k8s.io/v1", "PriorityClass") => Some(PRIORITY_CLASS),
        ("policy/v1", "PodDisruptionBudget") => Some(POD_DISRUPTION_BUDGET),
        ("policy/v1", "Eviction") => Some(EVICTION),
        ("v1", "Binding") => Some(BINDING),
        ("networking.k8s.io/v1", "Ingress") => Some(INGRESS),
        _ => None,
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self
                .bytes
                .split_first()
                .ok_or_else(|| malformed("truncated varint"))?;
            self.bytes = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtobufError> {
        if n > self.bytes.len() {
            return Err(malformed("a field runs past the end of the message"));
        }
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(taken)
    }

    /// The next field: its number and value, or `None` at the end.
    fn next(&mut self) -> Result<Option<(u64, Wire<'a>)>, ProtobufError> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let value = match tag & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed
            }
            2 => {
                let len =
                    usize::try_from(self.varint()?).map_err(|_| malformed("length too large"))?;
                Wire::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed
            }
            other => return Err(malformed(&format!("unsupported wire type {other}"))),
        };
        Ok(Some((tag >> 3, value)))
    }
}

fn text(bytes: &[u8]) -> Result<String, ProtobufError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed("a string field is not UTF-8"))
}

fn base64(bytes: &[u8]) -> Value {
    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn map_entry(
    bytes: &[u8],
    value_as_bytes: bool,
    quantity: bool,
) -> Result<(String, Value), ProtobufError> {
    let mut reader = Reader { bytes };
    let (mut key, mut value) = (
        String::new(),
        if value_as_bytes {
            base64(&[])
        } else {
            json!("")
        },
    );
    while let Some((number, field)) = reader.next()? {
        match (number, field) {
            (1, Wire::Bytes(b)) => key = text(b)?,
            (2, Wire::Bytes(b)) if value_as_bytes => value = base64(b),
            (2, Wire::Bytes(b)) if quantity => {
                value = message(b, QUANTITY)?
                    .get("string")
                    .cloned()
                    .unwrap_or(json!("0"));
            }
            (2, Wire::Bytes(b)) => value = json!(text(b)?),
            _ => {}
        }
    }
    Ok((key, value))
}

/// A timestamp; Go's zero time (year 1), which it writes for unset ones, is none.
fn time(bytes: &[u8]) -> Result<Option<Value>, ProtobufError> {
    let mut reader = Reader { bytes };
    let mut seconds = 0i64;
    while let Some((number, field)) = reader.next()? {
        if let (1, Wire::Varint(v)) = (number, field) {
            seconds = v as i64;
        }
    }
    Ok((seconds > 0).then(|| json!(tug_api::format::timestamp(seconds))))
}

fn message(bytes: &[u8], fields: &'static [Field]) -> Result<Value, ProtobufError> {
    let mut object = Map::new();
    let mut reader = Reader { bytes };
    while let Some((number, value)) = reader.next()? {
        let Some(field) = fields.iter().find(|f| f.number == number) else {
            return Err(ProtobufError::UnsupportedField(format!("number {number}")));
        };
        let wrong = || malformed(&format!("field {} has the wrong wire type", field.name));
        match (field.kind, value) {
            // Go writes every non-pointer field, empty or not; JSON omits
            // the empty ones, and so do we.
            (Kind::String, Wire::Bytes(b)) => {
                if !b.is_empty() {
                    object.insert(field.name.into(), json!(text(b)?));
                }
            }
            (Kind::Bool, Wire::Varint(v)) => {
                object.insert(field.name.into(), json!(v != 0));
            }
            (Kind::Flag, Wire::Varint(v)) => {
                if v != 0 {
                    object.insert(field.name.into(), json!(true));
                }
            }
            (Kind::Int64, Wire::Varint(v)) => {
                if v != 0 {
                    object.insert(field.name.into(), json!(v as i64));
                }
            }
            (Kind::OptInt, Wire::Varint(v)) => {
                object.insert(field.name.into(), json!(v as i64));
            }
            (Kind::IntOrString | Kind::PlainIntOrString, Wire::Bytes(b)) => {
                let parts = message(b, INT_OR_STRING)?;
                let value = if parts["type"] == 1 {
                    parts.get("strVal").cloned().unwrap_or(json!(""))
                } else {
                    parts.get("intVal").cloned().unwrap_or(json!(0))
                };
                if matches!(field.kind, Kind::IntOrString) || value != json!(0) {
                    object.insert(field.name.into(), value);
                }
            }
            (Kind::Quantity, Wire::Bytes(b)) => {
                let quantity = message(b, QUANTITY)?;
                object.insert(
                    field.name.into(),
                    quantity.get("string").cloned().unwrap_or(json!("0")),
                );
            }
            (Kind::Inline(inner), Wire::Bytes(b)) => {
                if let Value::Object(fields) = message(b, inner)? {
                    object.extend(fields);
                }
            }
            (Kind::QuantityMap, Wire::Bytes(b)) => {
                let (key, value) = map_entry(b, false, true)?;
                let map = object.entry(field.name).or_insert_with(|| json!({}));
                map[key] = value;
            }
            (Kind::Ignore, _) => {}
            (Kind::Unsupported, Wire::Bytes([])) => {}
            (Kind::Unsupported, _) => {
                return Err(ProtobufError::UnsupportedField(field.name.to_string()));
            }
            (Kind::Time, Wire::Bytes(b)) => {
                if let Some(time) = time(b)? {
                    object.insert(field.name.into(), time);
                }
            }
            (Kind::Message(inner), Wire::Bytes(b)) => {
                object.insert(field.name.into(), message(b, inner)?);
            }
            (Kind::StringMap | Kind::BytesMap, Wire::Bytes(b)) => {
                let (key, value) = map_entry(b, matches!(field.kind, Kind::BytesMap), false)?;
                let map = object.entry(field.name).or_insert_with(|| json!({}));
                map[key] = value;
            }
            (Kind::RepeatedString, Wire::Bytes(b)) => {
                let list = object.entry(field.name).or_insert_with(|| json!([]));
                list.as_array_mut()
                    .expect("made a list")
                    .push(json!(text(b)?));
            }
            (Kind::RepeatedMessage(inner), Wire::Bytes(b)) => {
                let list = object.entry(field.name).or_insert_with(|| json!([]));
                list.as_array_mut()
                    .expect("made a list")
                    .push(message(b, inner)?);
            }
            _ => return Err(wrong()),
        }
    }
    Ok(Value::Object(object))
}

/// Decodes a protobuf request body into the object's JSON, with its
/// apiVersion and kind from the envelope.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| malformed("the body does not start with the k8s protobuf prefix"))?;
    let mut reader = Reader { bytes: envelope };
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), None);
    while let Some((number, value)) = reader.next()? {
        match (number, value) {
            (1, Wire::Bytes(type_meta)) => {
                let mut meta = Reader { bytes: type_meta };
                while let Some((number, value)) = meta.next()? {
                    match (number, value) {
                        (1, Wire::Bytes(b)) => api_version = text(b)?,
                        (2, Wire::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = Some(b),
            (3, Wire::Bytes(encoding)) if !encoding.is_empty() => {
                return Err(malformed("content encodings are not supported"));
            }
            _ => {}
        }
    }
    let fields = schema(&api_version, &kind)
        .ok_or_else(|| ProtobufError::UnsupportedKind(format!("{api_version}/{kind}")))?;
    let mut object = message(raw.unwrap_or_default(), fields)?;
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut value: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes_field(number: u64, bytes: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | 2, out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    fn entry(key: &str, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        bytes_field(1, key.as_bytes(), &mut out);
        bytes_field(2, value, &mut out);
        out
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut type_meta = Vec::new();
        bytes_field(1, api_version.as_bytes(), &mut type_meta);
        bytes_field(2, kind.as_bytes(), &mut type_meta);
        let mut body = MAGIC.to_vec();
        bytes_field(1, &type_meta, &mut body);
        bytes_field(2, raw, &mut body);
        bytes_field(4, b"application/vnd.kubernetes.protobuf", &mut body);
        body
    }

    #[test]
    fn a_configmap_as_kubectl_sends_it_decodes_to_its_json() {
        let mut meta = Vec::new();
        bytes_field(1, b"app", &mut meta);
        bytes_field(2, b"", &mut meta);
        varint(7 << 3, &mut meta);
        varint(0, &mut meta);
        bytes_field(3, b"default", &mut meta);
        bytes_field(11, &entry("team", b"blue"), &mut meta);
        bytes_field(14, b"example.com/hold", &mut meta);
        let mut created = Vec::new();
        varint(1 << 3, &mut created);
        varint(1_795_459_074, &mut created);
        bytes_field(8, &created, &mut meta);
        let mut raw = Vec::new();
        bytes_field(1, &meta, &mut raw);
        bytes_field(2, &entry("a", b"1"), &mut raw);
        bytes_field(2, &entry("b", b"two"), &mut raw);
        bytes_field(3, &entry("bin", &[0, 255]), &mut raw);
        varint(4 << 3, &mut raw);
        varint(1, &mut raw);
        assert_eq!(
            decode(&envelope("v1", "ConfigMap", &raw)).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "app",
                    "namespace": "default",
                    "labels": {"team": "blue"},
                    "finalizers": ["example.com/hold"],
                    "creationTimestamp": "2026-11-23T18:37:54Z",
                },
                "data": {"a": "1", "b": "two"},
                "binaryData": {"bin": "AP8="},
                "immutable": true,
            })
        );
    }

    #[test]
    fn secret_data_is_base64_and_namespaces_keep_their_finalizers() {
        let mut meta = Vec::new();
        bytes_field(1, b"s", &mut meta);
        let mut raw = Vec::new();
        bytes_field(1, &meta, &mut raw);
        bytes_field(2, &entry("password", b"hunter2"), &mut raw);
        bytes_field(3, b"Opaque", &mut raw);
        let secret = decode(&envelope("v1", "Secret", &raw)).unwrap();
        assert_eq!(secret["data"]["password"], "aHVudGVyMg==");
        assert_eq!(secret["type"], "Opaque");

        let mut spec = Vec::new();
        bytes_field(1, b"kubernetes", &mut spec);
        let mut raw = Vec::new();
        bytes_field(2, &spec, &mut raw);
        assert_eq!(
            decode(&envelope("v1", "Namespace", &raw)).unwrap()["spec"],
            json!({"finalizers": ["kubernetes"]})
        );
    }

    #[test]
    fn fields_it_cannot_decode_are_refused_not_dropped() {
        let mut raw = Vec::new();
        bytes_field(99, b"a field this table does not know", &mut raw);
        assert_eq!(
            decode(&envelope("v1", "ConfigMap", &raw)),
            Err(ProtobufError::UnsupportedField("number 99".into()))
        );
        // A pod template with a probe: refused; an empty one: fine.
        let mut probe = Vec::new();
        bytes_field(1, b"exec", &mut probe);
        let mut container = Vec::new();
        bytes_field(1, b"c", &mut container);
        bytes_field(10, &probe, &mut container);
        let mut pod_spec = Vec::new();
        bytes_field(2, &container, &mut pod_spec);
        let mut template = Vec::new();
        bytes_field(2, &pod_spec, &mut template);
        let mut spec = Vec::new();
        bytes_field(3, &template, &mut spec);
        let mut raw = Vec::new();
        bytes_field(2, &spec, &mut raw);
        assert_eq!(
            decode(&envelope("apps/v1", "Deployment", &raw)),
            Err(ProtobufError::UnsupportedField("livenessProbe".into()))
        );
    }

    #[test]
    fn a_deployment_as_kubectl_create_deployment_sends_it() {
        let mut labels = Vec::new();
        bytes_field(1, &entry("app", b"web"), &mut labels);
        let mut meta = Vec::new();
        bytes_field(1, b"web", &mut meta);
        bytes_field(11, &entry("app", b"web"), &mut meta);
        let mut container = Vec::new();
        bytes_field(1, b"busybox", &mut container);
        bytes_field(2, b"busybox:1.36", &mut container);
        bytes_field(3, b"httpd", &mut container);
        bytes_field(3, b"-f", &mut container);
        bytes_field(8, b"", &mut container);
        varint(16 << 3, &mut container);
        varint(0, &mut container);
        let mut pod_spec = Vec::new();
        bytes_field(2, &container, &mut pod_spec);
        varint(11 << 3, &mut pod_spec);
        varint(0, &mut pod_spec);
        let mut template_meta = Vec::new();
        bytes_field(11, &entry("app", b"web"), &mut template_meta);
        let mut template = Vec::new();
        bytes_field(1, &template_meta, &mut template);
        bytes_field(2, &pod_spec, &mut template);
        let mut quantity = Vec::new();
        bytes_field(1, b"25%", &mut quantity);
        let mut int_or_string = Vec::new();
        varint(1 << 3, &mut int_or_string);
        varint(1, &mut int_or_string);
        bytes_field(3, b"25%", &mut int_or_string);
        let mut rolling = Vec::new();
        bytes_field(2, &int_or_string, &mut rolling);
        let mut strategy = Vec::new();
        bytes_field(2, &rolling, &mut strategy);
        let mut spec = Vec::new();
        varint(1 << 3, &mut spec);
        varint(0, &mut spec);
        bytes_field(2, &labels, &mut spec);
        bytes_field(3, &template, &mut spec);
        bytes_field(4, &strategy, &mut spec);
        let mut raw = Vec::new();
        bytes_field(1, &meta, &mut raw);
        bytes_field(2, &spec, &mut raw);
        bytes_field(3, b"", &mut raw);
        let deployment = decode(&envelope("apps/v1", "Deployment", &raw)).unwrap();
        assert_eq!(
            deployment["spec"],
            json!({
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "busybox", "image": "busybox:1.36", "command": ["httpd", "-f"], "resources": {}}]},
                },
                "strategy": {"rollingUpdate": {"maxSurge": "25%"}},
            })
        );
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        assert!(matches!(decode(b"{}"), Err(ProtobufError::Malformed(_))));
        assert!(matches!(
            decode(b"k8s\0\x0a\xff"),
            Err(ProtobufError::Malformed(_))
        ));
        assert_eq!(
            decode(&envelope("apps/v1", "DaemonSet", b"")),
            Err(ProtobufError::UnsupportedKind("apps/v1/DaemonSet".into()))
        );
        // A truncated object inside a valid envelope.
        let mut raw = Vec::new();
        varint(1 << 3 | 2, &mut raw);
        varint(50, &mut raw);
        assert!(matches!(
            decode(&envelope("v1", "ConfigMap", &raw)),
            Err(ProtobufError::Malformed(_))
        ));
    }
}
