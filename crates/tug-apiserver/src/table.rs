//! Table output (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`):
//! the columns `kubectl get` prints, computed by the server as upstream's.

use std::collections::{BTreeSet, HashMap};
use std::sync::{OnceLock, RwLock};

use serde_json::{Value, json};
use tug_api::format::{human_duration, parse_timestamp, timestamp};
use tug_api::jsonpath;
use tug_api::registry::Resource;

/// Whether the Accept header asks for a Table.
pub fn wanted(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table") && first.contains("g=meta.k8s.io"))
}

/// What each row carries of its object (`?includeObject=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

struct Column {
    name: &'static str,
    kind: &'static str,
    format: &'static str,
    description: &'static str,
    priority: i64,
    cell: fn(&Value, i64) -> Value,
}

fn name_cell(object: &Value, _: i64) -> Value {
    object["metadata"]["name"].clone()
}

fn age_cell(object: &Value, now: i64) -> Value {
    json!(since(&object["metadata"]["creationTimestamp"], now))
}

fn count_cell(object: &Value, field: &str) -> Value {
    let count = |v: &Value| v.as_object().map_or(0, |m| m.len());
    json!(
        count(&object[field])
            + if field == "data" {
                count(&object["binaryData"])
            } else {
                0
            }
    )
}

const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    priority: 0,
    cell: name_cell,
};

const AGE: Column = Column {
    name: "Age",
    kind: "string",
    format: "",
    description: "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
    priority: 0,
    cell: age_cell,
};

/// `Created At`, the column of upstream's default table convertor (used
/// where no printer is registered): the creation time in RFC 3339, UTC.
const CREATED_AT: Column = Column {
    name: "Created At",
    kind: "date",
    cell: created_at_cell,
    ..AGE
};

fn created_at_cell(object: &Value, _: i64) -> Value {
    match object["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(parse_timestamp)
    {
        Some(created) => json!(timestamp(created)),
        // Go's zero time, as upstream formats an unset timestamp.
        None => json!("0001-01-01T00:00:00Z"),
    }
}

const fn column(
    name: &'static str,
    kind: &'static str,
    priority: i64,
    description: &'static str,
    cell: fn(&Value, i64) -> Value,
) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority,
        cell,
    }
}

fn or_none(value: &Value) -> Value {
    match value.as_str() {
        Some(s) if !s.is_empty() => json!(s),
        _ => json!("<none>"),
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

fn int(value: &Value) -> i64 {
    value.as_i64().unwrap_or(0)
}

fn array(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

/// Upstream's translateTimestampSince: how long ago `time` was, as
/// kubectl shows ages, or `<unknown>` when it is unset.
fn since(time: &Value, now: i64) -> String {
    match time.as_str().and_then(parse_timestamp) {
        Some(then) => human_duration(now - then),
        None => "<unknown>".into(),
    }
}

/// `items` joined by commas, or `placeholder` when there are none.
fn join_or<S: AsRef<str>>(items: &[S], placeholder: &str) -> Value {
    let items: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    if items.is_empty() {
        json!(placeholder)
    } else {
        json!(items.join(","))
    }
}

/// `a,b,c + 2 more...`: how upstream shortens long lists.
fn and_more<S: AsRef<str>>(shown: &[S], hidden: usize) -> String {
    let list = shown
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<&str>>()
        .join(",");
    if hidden == 0 {
        list
    } else {
        format!("{list} + {hidden} more...")
    }
}

/// The first three of `items`, then how many more there are.
fn first_three(mut items: impl Iterator<Item = String>) -> String {
    let shown: Vec<String> = items.by_ref().take(3).collect();
    and_more(&shown, items.count())
}

/// Upstream's printBoolPtr: `True`, `False`, or `<unset>` when absent.
fn bool_ptr(value: &Value) -> Value {
    json!(match value.as_bool() {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    })
}

/// A boolean field, or its default when absent.
fn flag(value: &Value, default: bool) -> Value {
    json!(value.as_bool().unwrap_or(default))
}

/// A string field, or `<unset>` when absent.
fn or_unset(value: &Value) -> Value {
    json!(value.as_str().unwrap_or("<unset>"))
}

/// A resource quantity as stored, `0` when absent. (Upstream prints the
/// canonical form, e.g. `1Gi` for `1024Mi`; tug keeps what was written.)
fn quantity(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => "0".into(),
    }
}

/// The status of the first condition of this type is `True` (upstream's
/// hasJobCondition).
fn condition_true(object: &Value, kind: &str) -> bool {
    array(&object["status"]["conditions"])
        .iter()
        .find(|c| c["type"] == kind)
        .is_some_and(|c| c["status"] == "True")
}

fn container_field(pod_spec: &Value, field: &str) -> Value {
    let values: Vec<&str> = array(&pod_spec["containers"])
        .iter()
        .map(|c| text(&c[field]))
        .collect();
    json!(values.join(","))
}

const fn containers_column(priority: i64, cell: fn(&Value, i64) -> Value) -> Column {
    column(
        "Containers",
        "string",
        priority,
        "Names of each container in the template.",
        cell,
    )
}

const fn images_column(priority: i64, cell: fn(&Value, i64) -> Value) -> Column {
    column(
        "Images",
        "string",
        priority,
        "Images referenced by each container in the template.",
        cell,
    )
}

const CONTAINERS: Column = containers_column(1, |o, _| {
    container_field(&o["spec"]["template"]["spec"], "name")
});

const IMAGES: Column = images_column(1, |o, _| {
    container_field(&o["spec"]["template"]["spec"], "image")
});

const SELECTOR: Column = column(
    "Selector",
    "string",
    1,
    "Label selector for pods.",
    |o, _| label_selector(&o["spec"]["selector"]),
);

/// A label map as upstream's labels.FormatLabels: `a=b,c=d` sorted by key,
/// or `<none>`.
fn selector_labels(labels: &Value) -> Value {
    let mut pairs: Vec<(&String, &str)> = labels
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| (k, v)))
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let terms: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    join_or(&terms, "<none>")
}

/// A LabelSelector as upstream's metav1.FormatLabelSelector: requirements
/// sorted by key (`app=web,!canary,tier in (a,b)`), `<none>` when there are
/// none, `<error>` when an expression is malformed.
fn label_selector(selector: &Value) -> Value {
    let mut terms: Vec<(&str, String)> = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| (key.as_str(), format!("{key}={}", text(value))))
        .collect();
    for expression in array(&selector["matchExpressions"]) {
        match requirement(expression) {
            Some(term) => terms.push((text(&expression["key"]), term)),
            None => return json!("<error>"),
        }
    }
    terms.sort_by(|a, b| a.0.cmp(b.0));
    let terms: Vec<String> = terms.into_iter().map(|(_, term)| term).collect();
    join_or(&terms, "<none>")
}

/// One matchExpression as a selector requirement, values sorted.
fn requirement(expression: &Value) -> Option<String> {
    let key = text(&expression["key"]);
    let mut values: Vec<&str> = array(&expression["values"]).iter().map(text).collect();
    values.sort_unstable();
    let given = !values.is_empty();
    let values = values.join(",");
    match (text(&expression["operator"]), given) {
        ("In", true) => Some(format!("{key} in ({values})")),
        ("NotIn", true) => Some(format!("{key} notin ({values})")),
        ("Exists", false) => Some(key.to_string()),
        ("DoesNotExist", false) => Some(format!("!{key}")),
        _ => None,
    }
}

fn pod_ready(object: &Value, _: i64) -> Value {
    let total = object["spec"]["containers"].as_array().map_or(0, Vec::len);
    let ready = object["status"]["containerStatuses"]
        .as_array()
        .map_or(0, |s| s.iter().filter(|c| c["ready"] == true).count());
    json!(format!("{ready}/{total}"))
}

/// The STATUS column, as kubectl shows it: the phase, unless a container
/// says more (waiting or terminated reasons), or the pod is going.
fn pod_status(object: &Value, _: i64) -> Value {
    let status = &object["status"];
    let mut reason = status["reason"]
        .as_str()
        .or(status["phase"].as_str())
        .unwrap_or("Pending")
        .to_string();
    let mut initializing = false;
    let init_total = object["spec"]["initContainers"]
        .as_array()
        .map_or(0, Vec::len);
    for (i, container) in status["initContainerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let state = &container["state"];
        if state["terminated"]["exitCode"] == 0 && !state["terminated"].is_null() {
            continue;
        }
        initializing = true;
        reason = if let Some(r) = state["terminated"]["reason"].as_str() {
            format!("Init:{r}")
        } else if !state["terminated"].is_null() {
            format!("Init:ExitCode:{}", state["terminated"]["exitCode"])
        } else if let Some(r) = state["waiting"]["reason"]
            .as_str()
            .filter(|r| *r != "PodInitializing")
        {
            format!("Init:{r}")
        } else {
            format!("Init:{i}/{init_total}")
        };
        break;
    }
    if !initializing {
        let mut has_running = false;
        for container in status["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .rev()
        {
            let state = &container["state"];
            if let Some(r) = state["waiting"]["reason"].as_str() {
                reason = r.to_string();
            } else if let Some(r) = state["terminated"]["reason"].as_str() {
                reason = r.to_string();
            } else if !state["terminated"].is_null() {
                reason = match state["terminated"]["signal"].as_i64() {
                    Some(signal) if signal != 0 => format!("Signal:{signal}"),
                    _ => format!("ExitCode:{}", state["terminated"]["exitCode"]),
                };
            } else if container["ready"] == true && !state["running"].is_null() {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            reason = "Running".into();
        }
    }
    if !object["metadata"]["deletionTimestamp"].is_null() {
        reason = if status["reason"] == "NodeLost" {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    json!(reason)
}

fn pod_restarts(object: &Value, now: i64) -> Value {
    let mut restarts = 0;
    let mut last_finished: Option<i64> = None;
    let statuses = object["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten();
    for container in statuses {
        restarts += container["restartCount"].as_i64().unwrap_or(0);
        if let Some(finished) = container["lastState"]["terminated"]["finishedAt"]
            .as_str()
            .and_then(parse_timestamp)
        {
            last_finished = Some(last_finished.map_or(finished, |l: i64| l.max(finished)));
        }
    }
    match last_finished {
        Some(finished) if restarts > 0 => json!(format!(
            "{restarts} ({} ago)",
            human_duration(now - finished)
        )),
        _ => json!(restarts.to_string()),
    }
}

fn pod_readiness_gates(object: &Value, _: i64) -> Value {
    let Some(gates) = object["spec"]["readinessGates"]
        .as_array()
        .filter(|g| !g.is_empty())
    else {
        return json!("<none>");
    };
    let conditions = object["status"]["conditions"].as_array();
    let ready = gates
        .iter()
        .filter(|gate| {
            conditions.is_some_and(|c| {
                c.iter().any(|condition| {
                    condition["type"] == gate["conditionType"] && condition["status"] == "True"
                })
            })
        })
        .count();
    json!(format!("{ready}/{}", gates.len()))
}

fn service_external_ips(object: &Value, _: i64) -> Value {
    let mut ips: Vec<String> = object["spec"]["externalIPs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    match object["spec"]["type"].as_str() {
        Some("ExternalName") => {
            return json!(object["spec"]["externalName"].as_str().unwrap_or("<none>"));
        }
        Some("LoadBalancer") => {
            for ingress in object["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(ip) = ingress["ip"].as_str().or(ingress["hostname"].as_str()) {
                    ips.push(ip.to_string());
                }
            }
            if ips.is_empty() {
                return json!("<pending>");
            }
        }
        _ => {}
    }
    if ips.is_empty() {
        json!("<none>")
    } else {
        json!(ips.join(","))
    }
}

fn service_ports(object: &Value, _: i64) -> Value {
    let ports: Vec<String> = object["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let protocol = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(node) if node != 0 => format!("{}:{node}/{protocol}", p["port"]),
                _ => format!("{}/{protocol}", p["port"]),
            }
        })
        .collect();
    if ports.is_empty() {
        json!("<none>")
    } else {
        json!(ports.join(","))
    }
}

fn node_status(object: &Value, _: i64) -> Value {
    let ready = object["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["status"].as_str().unwrap_or(""));
    let mut status = match ready {
        Some("True") => "Ready".to_string(),
        Some("False") => "NotReady".to_string(),
        _ => "Unknown".to_string(),
    };
    if object["spec"]["unschedulable"] == true {
        status.push_str(",SchedulingDisabled");
    }
    json!(status)
}

fn node_roles(object: &Value, _: i64) -> Value {
    let mut roles: Vec<&str> = object["metadata"]["labels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(key, value)| {
                    key.strip_prefix("node-role.kubernetes.io/")
                        .filter(|role| !role.is_empty())
                        .or_else(|| {
                            (key == "kubernetes.io/role").then(|| value.as_str().unwrap_or(""))
                        })
                })
                .filter(|role| !role.is_empty())
                .collect()
        })
        .unwrap_or_default();
    roles.sort_unstable();
    roles.dedup();
    if roles.is_empty() {
        json!("<none>")
    } else {
        json!(roles.join(","))
    }
}

fn node_address(object: &Value, kind: &str) -> Value {
    let addresses: Vec<&str> = object["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["type"] == kind)
        .filter_map(|a| a["address"].as_str())
        .collect();
    if addresses.is_empty() {
        json!("<none>")
    } else {
        json!(addresses.join(","))
    }
}

/// When an event was first seen: its firstTimestamp, else its eventTime.
fn event_first_seen(object: &Value, now: i64) -> String {
    let first = &object["firstTimestamp"];
    let first = if first.is_string() {
        first
    } else {
        &object["eventTime"]
    };
    since(first, now)
}

/// When an event was last seen: its series' last observation, else its
/// lastTimestamp, else when it was first seen.
fn event_last_seen(object: &Value, now: i64) -> Value {
    json!(if object["series"].is_object() {
        since(&object["series"]["lastObservedTime"], now)
    } else if object["lastTimestamp"].is_string() {
        since(&object["lastTimestamp"], now)
    } else {
        event_first_seen(object, now)
    })
}

/// How often an event happened: its series' count, else its count, at
/// least 1 (singleton events of the new API carry none).
fn event_count(object: &Value, _: i64) -> Value {
    json!(if object["series"].is_object() {
        int(&object["series"]["count"])
    } else {
        match int(&object["count"]) {
            0 => 1,
            count => count,
        }
    })
}

/// `pod/web`: the involved object's kind, lowercased, and name.
fn event_object(object: &Value, _: i64) -> Value {
    let involved = &object["involvedObject"];
    let kind = text(&involved["kind"]).to_lowercase();
    match text(&involved["name"]) {
        "" => json!(kind),
        name => json!(format!("{kind}/{name}")),
    }
}

/// `kubelet, node-1`: the source's component and host, or the reporting
/// controller and instance the new API records instead.
fn event_source(object: &Value, _: i64) -> Value {
    let source = &object["source"];
    let component = first_non_empty(&source["component"], &object["reportingComponent"]);
    let instance = first_non_empty(&source["host"], &object["reportingInstance"]);
    if instance.is_empty() {
        json!(component)
    } else {
        json!(format!("{component}, {instance}"))
    }
}

fn first_non_empty<'a>(a: &'a Value, b: &'a Value) -> &'a str {
    match text(a) {
        "" => text(b),
        a => a,
    }
}

fn host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Upstream's formatEndpoints: every ready address with every port of its
/// subset (`10.0.0.1:80,...`), the first three and a count of the rest;
/// `<none>` without subsets.
fn endpoints_list(object: &Value, _: i64) -> Value {
    let subsets = array(&object["subsets"]);
    if subsets.is_empty() {
        return json!("<none>");
    }
    let endpoints = subsets.iter().flat_map(|subset| {
        let ips: Vec<&str> = array(&subset["addresses"])
            .iter()
            .map(|a| text(&a["ip"]))
            .collect();
        match array(&subset["ports"]) {
            // Headless services may have no ports.
            [] => ips.into_iter().map(String::from).collect::<Vec<_>>(),
            ports => ports
                .iter()
                .flat_map(|port| ips.iter().map(move |ip| host_port(ip, int(&port["port"]))))
                .collect(),
        }
    });
    json!(first_three(endpoints))
}

/// Upstream's listWithMoreString: the first three, a count of the rest,
/// `<unset>` when that says nothing.
fn first_three_or_unset(items: impl Iterator<Item = String>) -> Value {
    match first_three(items) {
        list if list.is_empty() => json!("<unset>"),
        list => json!(list),
    }
}

fn endpoint_slice_ports(object: &Value, _: i64) -> Value {
    first_three_or_unset(array(&object["ports"]).iter().map(|port| {
        match (port["port"].as_i64(), port["name"].as_str()) {
            (Some(number), _) => number.to_string(),
            (None, Some(name)) => name.to_string(),
            (None, None) => "*".to_string(),
        }
    }))
}

fn endpoint_slice_endpoints(object: &Value, _: i64) -> Value {
    first_three_or_unset(
        array(&object["endpoints"])
            .iter()
            .flat_map(|endpoint| array(&endpoint["addresses"]))
            .map(|address| text(address).to_string()),
    )
}

/// `Terminating` while being deleted, else the status' phase.
fn phase(object: &Value, _: i64) -> Value {
    if object["metadata"]["deletionTimestamp"].is_null() {
        json!(text(&object["status"]["phase"]))
    } else {
        json!("Terminating")
    }
}

/// Upstream's GetAccessModesAsString: `RWO,ROX,RWX,RWOP`, in that order.
fn access_modes(modes: &Value) -> String {
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(mode, _)| array(modes).iter().any(|m| m.as_str() == Some(*mode)))
    .map(|(_, short)| *short)
    .collect::<Vec<&str>>()
    .join(",")
}

/// The storage class of a volume or claim: the beta annotation first.
fn storage_class(object: &Value, _: i64) -> Value {
    let annotation = &object["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"];
    json!(
        annotation
            .as_str()
            .unwrap_or_else(|| text(&object["spec"]["storageClassName"]))
    )
}

fn volume_claim(object: &Value, _: i64) -> Value {
    let claim = &object["spec"]["claimRef"];
    if claim.is_object() {
        json!(format!(
            "{}/{}",
            text(&claim["namespace"]),
            text(&claim["name"])
        ))
    } else {
        json!("")
    }
}

/// A claim's capacity and access modes are those of its volume, once bound.
fn claim_bound(object: &Value) -> bool {
    !text(&object["spec"]["volumeName"]).is_empty()
}

fn claim_capacity(object: &Value, _: i64) -> Value {
    if claim_bound(object) {
        json!(quantity(&object["status"]["capacity"]["storage"]))
    } else {
        json!("")
    }
}

fn claim_access_modes(object: &Value, _: i64) -> Value {
    if claim_bound(object) {
        json!(access_modes(&object["status"]["accessModes"]))
    } else {
        json!("")
    }
}

/// `requests.cpu: 500m/1, pods: 3/10`: used over hard, by resource name,
/// those named `limits.*` in the Limit column and the rest in Request.
fn quota_usage(object: &Value, limits: bool) -> Value {
    let status = &object["status"];
    let mut names: Vec<&String> = status["hard"]
        .as_object()
        .into_iter()
        .flat_map(|hard| hard.keys())
        .filter(|name| name.starts_with("limits.") == limits)
        .collect();
    names.sort();
    let usage: Vec<String> = names
        .iter()
        .map(|name| {
            let used = quantity(&status["used"][name.as_str()]);
            let hard = quantity(&status["hard"][name.as_str()]);
            format!("{name}: {used}/{hard}")
        })
        .collect();
    json!(usage.join(", "))
}

/// `daemonset.apps/fluentd`: the controlling owner, as kind.group/name.
fn revision_controller(object: &Value, _: i64) -> Value {
    let Some(owner) = array(&object["metadata"]["ownerReferences"])
        .iter()
        .find(|owner| owner["controller"] == true)
    else {
        return json!("<none>");
    };
    let group = text(&owner["apiVersion"])
        .split_once('/')
        .map_or("", |(group, _)| group);
    let kind = text(&owner["kind"]);
    let name = text(&owner["name"]);
    json!(match (group, kind) {
        ("", "") => name.to_string(),
        ("", kind) => format!("{}/{name}", kind.to_lowercase()),
        (group, kind) => format!("{}.{}/{name}", kind.to_lowercase(), group.to_lowercase()),
    })
}

fn job_status(object: &Value, _: i64) -> Value {
    let status = if condition_true(object, "Complete") {
        "Complete"
    } else if condition_true(object, "Failed") {
        "Failed"
    } else if !object["metadata"]["deletionTimestamp"].is_null() {
        "Terminating"
    } else if condition_true(object, "Suspended") {
        "Suspended"
    } else if condition_true(object, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    json!(status)
}

/// `2/3` succeeded of the completions wanted; `0/1 of 4` for a work queue
/// run by several pods.
fn job_completions(object: &Value, _: i64) -> Value {
    let succeeded = int(&object["status"]["succeeded"]);
    let spec = &object["spec"];
    let completions = match (spec["completions"].as_i64(), int(&spec["parallelism"])) {
        (Some(completions), _) => format!("{succeeded}/{completions}"),
        (None, parallelism) if parallelism > 1 => format!("{succeeded}/1 of {parallelism}"),
        (None, _) => format!("{succeeded}/1"),
    };
    json!(completions)
}

/// How long a job took, or has taken so far; empty before it started.
fn job_duration(object: &Value, now: i64) -> Value {
    let time = |field: &str| object["status"][field].as_str().and_then(parse_timestamp);
    json!(match (time("startTime"), time("completionTime")) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now - start),
        (Some(start), Some(end)) => human_duration(end - start),
    })
}

fn cronjob_pod_spec(object: &Value) -> &Value {
    &object["spec"]["jobTemplate"]["spec"]["template"]["spec"]
}

fn cronjob_last_schedule(object: &Value, now: i64) -> Value {
    let last = &object["status"]["lastScheduleTime"];
    if last.is_null() {
        json!("<none>")
    } else {
        json!(since(last, now))
    }
}

/// `Users`, `Groups` or `ServiceAccounts` (as namespace/name) a binding
/// names, separated by `, `.
fn binding_subjects(object: &Value, kind: &str) -> Value {
    let names: Vec<String> = array(&object["subjects"])
        .iter()
        .filter(|subject| subject["kind"] == kind)
        .map(|subject| match kind {
            "ServiceAccount" => {
                format!("{}/{}", text(&subject["namespace"]), text(&subject["name"]))
            }
            _ => text(&subject["name"]).to_string(),
        })
        .collect();
    json!(names.join(", "))
}

/// Upstream's formatHosts: up to three hosts; once three are listed, any
/// rule after counts as more (`a,b,c + 2 more...`); `*` without hosts.
fn ingress_hosts(object: &Value, _: i64) -> Value {
    let rules = array(&object["spec"]["rules"]);
    let mut hosts: Vec<&str> = Vec::new();
    let mut hidden = 0;
    for host in rules.iter().map(|rule| text(&rule["host"])) {
        if hosts.len() == 3 {
            hidden = rules.len() - 3;
            break;
        }
        if !host.is_empty() {
            hosts.push(host);
        }
    }
    if hosts.is_empty() {
        json!("*")
    } else {
        json!(and_more(&hosts, hidden))
    }
}

/// The load balancer's addresses (IP, else hostname), sorted, distinct.
fn ingress_address(object: &Value, _: i64) -> Value {
    let addresses: BTreeSet<&str> = array(&object["status"]["loadBalancer"]["ingress"])
        .iter()
        .map(|ingress| match text(&ingress["ip"]) {
            "" => text(&ingress["hostname"]),
            ip => ip,
        })
        .filter(|address| !address.is_empty())
        .collect();
    json!(addresses.into_iter().collect::<Vec<&str>>().join(","))
}

fn ingress_ports(object: &Value, _: i64) -> Value {
    if array(&object["spec"]["tls"]).is_empty() {
        json!("80")
    } else {
        json!("80, 443")
    }
}

/// `ConfigMap.example.com/name` of the parameters' reference.
fn ingress_class_parameters(object: &Value, _: i64) -> Value {
    let parameters = &object["spec"]["parameters"];
    if !parameters.is_object() {
        return json!("<none>");
    }
    let kind = match parameters["apiGroup"].as_str() {
        Some(group) => format!("{}.{group}", text(&parameters["kind"])),
        None => text(&parameters["kind"]).to_string(),
    };
    json!(format!("{kind}/{}", text(&parameters["name"])))
}

/// An IntOrString as written (`2`, `50%`), or `N/A` when unset.
fn int_or_percent(value: &Value) -> Value {
    match value {
        Value::Number(n) => json!(n.to_string()),
        Value::String(s) => json!(s),
        _ => json!("N/A"),
    }
}

/// A storage class' name, marked ` (default)` when it is the default.
fn storage_class_name(object: &Value, _: i64) -> Value {
    let metadata = &object["metadata"];
    let default = [
        "storageclass.kubernetes.io/is-default-class",
        "storageclass.beta.kubernetes.io/is-default-class",
    ]
    .iter()
    .any(|annotation| metadata["annotations"][*annotation] == "true");
    let name = text(&metadata["name"]);
    if default {
        json!(format!("{name} (default)"))
    } else {
        json!(name)
    }
}

/// The audiences of a CSI driver's token requests, `<unset>` without any.
fn csi_token_requests(object: &Value, _: i64) -> Value {
    match object["spec"]["tokenRequests"].as_array() {
        Some(requests) => {
            let audiences: Vec<&str> = requests.iter().map(|r| text(&r["audience"])).collect();
            json!(audiences.join(","))
        }
        None => json!("<unset>"),
    }
}

fn csi_modes(object: &Value, _: i64) -> Value {
    let modes: Vec<&str> = array(&object["spec"]["volumeLifecycleModes"])
        .iter()
        .map(text)
        .collect();
    join_or(&modes, "<none>")
}

fn replica_columns(selector: Column) -> Vec<Column> {
    vec![
        NAME,
        column(
            "Desired",
            "integer",
            0,
            "Number of desired pods.",
            |o, _| json!(o["spec"]["replicas"].as_i64().unwrap_or(1)),
        ),
        column(
            "Current",
            "integer",
            0,
            "Most recently observed number of replicas.",
            |o, _| json!(o["status"]["replicas"].as_i64().unwrap_or(0)),
        ),
        column(
            "Ready",
            "integer",
            0,
            "The number of ready replicas for this replica set.",
            |o, _| json!(o["status"]["readyReplicas"].as_i64().unwrap_or(0)),
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        selector,
    ]
}

/// RoleBindings and ClusterRoleBindings: the role, then (wide) whom the
/// binding names, described as `descriptions` say.
fn binding_columns(role: &'static str, descriptions: [&'static str; 3]) -> Vec<Column> {
    let [users, groups, accounts] = descriptions;
    vec![
        NAME,
        column("Role", "string", 0, role, |o, _| {
            json!(format!(
                "{}/{}",
                text(&o["roleRef"]["kind"]),
                text(&o["roleRef"]["name"])
            ))
        }),
        AGE,
        column("Users", "string", 1, users, |o, _| {
            binding_subjects(o, "User")
        }),
        column("Groups", "string", 1, groups, |o, _| {
            binding_subjects(o, "Group")
        }),
        column("ServiceAccounts", "string", 1, accounts, |o, _| {
            binding_subjects(o, "ServiceAccount")
        }),
    ]
}

/// An HPA's TARGETS: each metric as `name: current/target`, the current
/// `<unknown>` until measured; more than two end in `+ N more...`.
fn hpa_targets(object: &Value, _: i64) -> Value {
    let spec = &object["spec"];
    let status = &object["status"];
    // autoscaling/v1 states only a CPU target.
    if let Some(target) = spec["targetCPUUtilizationPercentage"].as_i64() {
        let current = status["currentCPUUtilizationPercentage"]
            .as_i64()
            .map_or("<unknown>".to_string(), |c| format!("{c}%"));
        return json!(format!("cpu: {current}/{target}%"));
    }
    let metrics = spec["metrics"].as_array().map_or(&[][..], Vec::as_slice);
    if metrics.is_empty() {
        return json!("<none>");
    }
    let currents = status["currentMetrics"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let described: Vec<String> = metrics
        .iter()
        .map(|metric| {
            let kind = metric["type"].as_str().unwrap_or("");
            let field = match kind {
                "Resource" => "resource",
                "ContainerResource" => "containerResource",
                "Pods" => "pods",
                "Object" => "object",
                "External" => "external",
                _ => "",
            };
            let source = &metric[field];
            let target = &source["target"];
            let name = source["name"]
                .as_str()
                .or(source["metric"]["name"].as_str())
                .unwrap_or("<unknown>");
            let current = currents
                .iter()
                .find(|c| c["type"] == kind && c[field]["name"] == source["name"])
                .map(|c| &c[field]["current"]);
            let (current, target) = match target["averageUtilization"].as_i64() {
                Some(t) => (
                    current
                        .and_then(|c| c["averageUtilization"].as_i64())
                        .map_or("<unknown>".to_string(), |c| format!("{c}%")),
                    format!("{t}%"),
                ),
                None => {
                    let key = if target["averageValue"].is_string() {
                        "averageValue"
                    } else {
                        "value"
                    };
                    (
                        current
                            .and_then(|c| c[key].as_str())
                            .map_or("<unknown>".to_string(), str::to_string),
                        target[key].as_str().unwrap_or("<unknown>").to_string(),
                    )
                }
            };
            format!("{name}: {current}/{target}")
        })
        .collect();
    let shown = described.len().min(2);
    let mut text = described[..shown].join(", ");
    if described.len() > shown {
        text.push_str(&format!(" + {} more...", described.len() - shown));
    }
    json!(text)
}

fn columns(resource: &Resource) -> Vec<Column> {
    match (resource.group, resource.plural) {
        ("", "namespaces") => vec![
            NAME,
            Column {
                name: "Status",
                kind: "string",
                format: "",
                description: "The status of the namespace",
                priority: 0,
                cell: |o, _| o["status"]["phase"].clone(),
            },
            AGE,
        ],
        ("", "configmaps") => vec![
            NAME,
            Column {
                name: "Data",
                kind: "string",
                format: "",
                description: "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.",
                priority: 0,
                cell: |o, _| count_cell(o, "data"),
            },
            AGE,
        ],
        ("", "secrets") => vec![
            NAME,
            Column {
                name: "Type",
                kind: "string",
                format: "",
                description: "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types",
                priority: 0,
                cell: |o, _| o["type"].clone(),
            },
            Column {
                name: "Data",
                kind: "string",
                format: "",
                description: "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4",
                priority: 0,
                cell: |o, _| count_cell(o, "data"),
            },
            AGE,
        ],
        ("", "serviceaccounts") => vec![
            NAME,
            Column {
                name: "Secrets",
                kind: "string",
                format: "",
                description: "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
                priority: 0,
                cell: |o, _| json!(o["secrets"].as_array().map_or(0, Vec::len)),
            },
            AGE,
        ],
        ("", "pods") => vec![
            NAME,
            column(
                "Ready",
                "string",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
                pod_ready,
            ),
            column(
                "Status",
                "string",
                0,
                "The aggregate status of the containers in this pod.",
                pod_status,
            ),
            column(
                "Restarts",
                "string",
                0,
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
                pod_restarts,
            ),
            AGE,
            column(
                "IP",
                "string",
                1,
                "The IP address assigned to the pod",
                |o, _| or_none(&o["status"]["podIP"]),
            ),
            column(
                "Node",
                "string",
                1,
                "The name of the node to which the pod is assigned",
                |o, _| or_none(&o["spec"]["nodeName"]),
            ),
            column(
                "Nominated Node",
                "string",
                1,
                "The name of the node where the pod is nominated to run",
                |o, _| or_none(&o["status"]["nominatedNodeName"]),
            ),
            column(
                "Readiness Gates",
                "string",
                1,
                "The readiness gates of the pod",
                pod_readiness_gates,
            ),
        ],
        ("apps", "deployments") => vec![
            NAME,
            column(
                "Ready",
                "string",
                0,
                "Number of the pod with ready state",
                |o, _| {
                    json!(format!(
                        "{}/{}",
                        o["status"]["readyReplicas"].as_i64().unwrap_or(0),
                        o["spec"]["replicas"].as_i64().unwrap_or(1)
                    ))
                },
            ),
            column(
                "Up-to-date",
                "integer",
                0,
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
                |o, _| json!(o["status"]["updatedReplicas"].as_i64().unwrap_or(0)),
            ),
            column(
                "Available",
                "integer",
                0,
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
                |o, _| json!(o["status"]["availableReplicas"].as_i64().unwrap_or(0)),
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        ("apps", "replicasets") => replica_columns(SELECTOR),
        ("", "replicationcontrollers") => replica_columns(column(
            "Selector",
            "string",
            1,
            "Selector is a label query over pods that should match the Replicas count. If Selector is empty, it is defaulted to the labels present on the Pod template. Label keys and values that must match in order to be controlled by this replication controller, if empty defaulted to labels on Pod template. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
            |o, _| selector_labels(&o["spec"]["selector"]),
        )),
        ("", "services") => vec![
            NAME,
            column("Type", "string", 0, "The type of the service.", |o, _| {
                json!(o["spec"]["type"].as_str().unwrap_or("ClusterIP"))
            }),
            column(
                "Cluster-IP",
                "string",
                0,
                "The cluster IP address of the service.",
                |o, _| or_none(&o["spec"]["clusterIP"]),
            ),
            column(
                "External-IP",
                "string",
                0,
                "The external IP addresses of the service.",
                service_external_ips,
            ),
            column(
                "Port(s)",
                "string",
                0,
                "The ports of the service.",
                service_ports,
            ),
            AGE,
            column(
                "Selector",
                "string",
                1,
                "The label selector of the service.",
                |o, _| selector_labels(&o["spec"]["selector"]),
            ),
        ],
        ("", "nodes") => vec![
            NAME,
            column("Status", "string", 0, "The status of the node", node_status),
            column("Roles", "string", 0, "The roles of the node", node_roles),
            AGE,
            column(
                "Version",
                "string",
                0,
                "Kubelet Version reported by the node.",
                |o, _| {
                    json!(
                        o["status"]["nodeInfo"]["kubeletVersion"]
                            .as_str()
                            .unwrap_or("")
                    )
                },
            ),
            column(
                "Internal-IP",
                "string",
                1,
                "List of internal IPs.",
                |o, _| node_address(o, "InternalIP"),
            ),
            column(
                "External-IP",
                "string",
                1,
                "List of external IPs.",
                |o, _| node_address(o, "ExternalIP"),
            ),
            column(
                "OS-Image",
                "string",
                1,
                "OS image reported by the node from /etc/os-release.",
                |o, _| {
                    json!(
                        o["status"]["nodeInfo"]["osImage"]
                            .as_str()
                            .unwrap_or("<unknown>")
                    )
                },
            ),
            column(
                "Kernel-Version",
                "string",
                1,
                "Kernel Version reported by the node.",
                |o, _| {
                    json!(
                        o["status"]["nodeInfo"]["kernelVersion"]
                            .as_str()
                            .unwrap_or("<unknown>")
                    )
                },
            ),
            column(
                "Container-Runtime",
                "string",
                1,
                "Container Runtime Version reported by the node.",
                |o, _| {
                    json!(
                        o["status"]["nodeInfo"]["containerRuntimeVersion"]
                            .as_str()
                            .unwrap_or("<unknown>")
                    )
                },
            ),
        ],
        // events.k8s.io Events are shown in their core form (see table()).
        ("", "events") | ("events.k8s.io", "events") => vec![
            column(
                "Last Seen",
                "string",
                0,
                "The time at which the most recent occurrence of this event was recorded.",
                event_last_seen,
            ),
            column(
                "Type",
                "string",
                0,
                "Type of this event (Normal, Warning), new types could be added in the future",
                |o, _| json!(text(&o["type"])),
            ),
            column(
                "Reason",
                "string",
                0,
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
                |o, _| json!(text(&o["reason"])),
            ),
            column(
                "Object",
                "string",
                0,
                "The object that this event is about.",
                event_object,
            ),
            column(
                "Subobject",
                "string",
                1,
                "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object.",
                |o, _| json!(text(&o["involvedObject"]["fieldPath"])),
            ),
            column(
                "Source",
                "string",
                1,
                "The component reporting this event. Should be a short machine understandable string.",
                event_source,
            ),
            column(
                "Message",
                "string",
                0,
                "A human-readable description of the status of this operation.",
                |o, _| json!(text(&o["message"]).trim()),
            ),
            column(
                "First Seen",
                "string",
                1,
                "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
                |o, now| json!(event_first_seen(o, now)),
            ),
            column(
                "Count",
                "string",
                1,
                "The number of times this event has occurred.",
                event_count,
            ),
            Column {
                priority: 1,
                ..NAME
            },
        ],
        ("", "endpoints") => vec![
            NAME,
            column(
                "Endpoints",
                "string",
                0,
                "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service.",
                endpoints_list,
            ),
            AGE,
        ],
        ("", "persistentvolumeclaims") => vec![
            NAME,
            column(
                "Status",
                "string",
                0,
                "phase represents the current phase of PersistentVolumeClaim.",
                phase,
            ),
            column(
                "Volume",
                "string",
                0,
                "volumeName is the binding reference to the PersistentVolume backing this claim.",
                |o, _| json!(text(&o["spec"]["volumeName"])),
            ),
            column(
                "Capacity",
                "string",
                0,
                "capacity represents the actual resources of the underlying volume.",
                claim_capacity,
            ),
            column(
                "Access Modes",
                "string",
                0,
                "accessModes contains the actual access modes the volume backing the PVC has. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes-1",
                claim_access_modes,
            ),
            column(
                "StorageClass",
                "string",
                0,
                "StorageClass of the pvc",
                storage_class,
            ),
            column(
                "VolumeAttributesClass",
                "string",
                0,
                "VolumeAttributesClass of the pvc",
                |o, _| or_unset(&o["spec"]["volumeAttributesClassName"]),
            ),
            AGE,
            column(
                "VolumeMode",
                "string",
                1,
                "volumeMode defines what type of volume is required by the claim. Value of Filesystem is implied when not included in claim spec.",
                |o, _| or_unset(&o["spec"]["volumeMode"]),
            ),
        ],
        ("", "persistentvolumes") => vec![
            NAME,
            column(
                "Capacity",
                "string",
                0,
                "capacity is the description of the persistent volume's resources and capacity. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#capacity",
                |o, _| json!(quantity(&o["spec"]["capacity"]["storage"])),
            ),
            column(
                "Access Modes",
                "string",
                0,
                "accessModes contains all ways the volume can be mounted. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes",
                |o, _| json!(access_modes(&o["spec"]["accessModes"])),
            ),
            column(
                "Reclaim Policy",
                "string",
                0,
                "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim. Valid options are Retain (default for manually created PersistentVolumes), Delete (default for dynamically provisioned PersistentVolumes), and Recycle (deprecated). Recycle must be supported by the volume plugin underlying this PersistentVolume. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#reclaiming",
                |o, _| json!(text(&o["spec"]["persistentVolumeReclaimPolicy"])),
            ),
            column(
                "Status",
                "string",
                0,
                "phase indicates if a volume is available, bound to a claim, or released by a claim. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#phase",
                phase,
            ),
            column(
                "Claim",
                "string",
                0,
                "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim. Expected to be non-nil when bound. claim.VolumeName is the authoritative bind between PV and PVC. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#binding",
                volume_claim,
            ),
            column(
                "StorageClass",
                "string",
                0,
                "StorageClass of the pv",
                storage_class,
            ),
            column(
                "VolumeAttributesClass",
                "string",
                0,
                "VolumeAttributesClass of the pv",
                |o, _| or_unset(&o["spec"]["volumeAttributesClassName"]),
            ),
            column(
                "Reason",
                "string",
                0,
                "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI.",
                |o, _| json!(text(&o["status"]["reason"])),
            ),
            AGE,
            column(
                "VolumeMode",
                "string",
                1,
                "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state. Value of Filesystem is implied when not included in spec.",
                |o, _| or_unset(&o["spec"]["volumeMode"]),
            ),
        ],
        ("", "resourcequotas") => vec![
            NAME,
            column(
                "Request",
                "string",
                0,
                "Request represents a minimum amount of cpu/memory that a container may consume.",
                |o, _| quota_usage(o, false),
            ),
            column(
                "Limit",
                "string",
                0,
                "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
                |o, _| quota_usage(o, true),
            ),
            AGE,
        ],
        // No printer upstream: the default table convertor's columns.
        ("", "limitranges") | ("rbac.authorization.k8s.io", "roles" | "clusterroles") => {
            vec![NAME, CREATED_AT]
        }
        ("", "podtemplates") => vec![
            NAME,
            containers_column(0, |o, _| container_field(&o["template"]["spec"], "name")),
            images_column(0, |o, _| container_field(&o["template"]["spec"], "image")),
            column(
                "Pod Labels",
                "string",
                0,
                "The labels for the pod template.",
                |o, _| selector_labels(&o["template"]["metadata"]["labels"]),
            ),
        ],
        ("apps", "statefulsets") => vec![
            NAME,
            column(
                "Ready",
                "string",
                0,
                "Number of the pod with ready state",
                |o, _| {
                    json!(format!(
                        "{}/{}",
                        int(&o["status"]["readyReplicas"]),
                        o["spec"]["replicas"].as_i64().unwrap_or(1)
                    ))
                },
            ),
            AGE,
            CONTAINERS,
            IMAGES,
        ],
        ("apps", "daemonsets") => vec![
            NAME,
            column(
                "Desired",
                "integer",
                0,
                "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod). More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/",
                |o, _| json!(int(&o["status"]["desiredNumberScheduled"])),
            ),
            column(
                "Current",
                "integer",
                0,
                "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod. More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/",
                |o, _| json!(int(&o["status"]["currentNumberScheduled"])),
            ),
            column(
                "Ready",
                "integer",
                0,
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.",
                |o, _| json!(int(&o["status"]["numberReady"])),
            ),
            column(
                "Up-to-date",
                "integer",
                0,
                "The total number of nodes that are running updated daemon pod",
                |o, _| json!(int(&o["status"]["updatedNumberScheduled"])),
            ),
            column(
                "Available",
                "integer",
                0,
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
                |o, _| json!(int(&o["status"]["numberAvailable"])),
            ),
            column(
                "Node Selector",
                "string",
                0,
                "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node. More info: https://kubernetes.io/docs/concepts/configuration/assign-pod-node/",
                |o, _| selector_labels(&o["spec"]["template"]["spec"]["nodeSelector"]),
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            column(
                "Selector",
                "string",
                1,
                "A label query over pods that are managed by the daemon set. Must match in order to be controlled. If empty, defaulted to labels on Pod template. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
                |o, _| label_selector(&o["spec"]["selector"]),
            ),
        ],
        ("apps", "controllerrevisions") => vec![
            NAME,
            column(
                "Controller",
                "string",
                0,
                "Controller of the object",
                revision_controller,
            ),
            column(
                "Revision",
                "string",
                0,
                "revision indicates the revision of the state represented by Data.",
                |o, _| json!(int(&o["revision"])),
            ),
            AGE,
        ],
        ("autoscaling", "horizontalpodautoscalers") => vec![
            NAME,
            column(
                "Reference",
                "string",
                0,
                "ScaleTargetRef points to the target resource to scale, and is used to the pods for which metrics should be collected, as well as to actually change the replica count.",
                |o, _| {
                    let target = &o["spec"]["scaleTargetRef"];
                    json!(format!(
                        "{}/{}",
                        target["kind"].as_str().unwrap_or(""),
                        target["name"].as_str().unwrap_or("")
                    ))
                },
            ),
            column(
                "Targets",
                "string",
                0,
                "metrics contains the specifications for which to use to calculate the desired replica count (the maximum replica count across all metrics will be used).",
                hpa_targets,
            ),
            column(
                "MinPods",
                "string",
                0,
                "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.",
                |o, _| match o["spec"]["minReplicas"].as_i64() {
                    Some(n) => json!(n.to_string()),
                    None => json!("<unset>"),
                },
            ),
            column(
                "MaxPods",
                "string",
                0,
                "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up.",
                |o, _| json!(o["spec"]["maxReplicas"].as_i64().unwrap_or(0).to_string()),
            ),
            column(
                "Replicas",
                "string",
                0,
                "currentReplicas is current number of replicas of pods managed by this autoscaler, as last seen by the autoscaler.",
                |o, _| {
                    json!(
                        o["status"]["currentReplicas"]
                            .as_i64()
                            .unwrap_or(0)
                            .to_string()
                    )
                },
            ),
            AGE,
        ],
        ("batch", "jobs") => vec![
            NAME,
            column("Status", "string", 0, "Status of the job.", job_status),
            column(
                "Completions",
                "string",
                0,
                "The number of pods which reached phase Succeeded. The value increases monotonically for a given spec. However, it may decrease in reaction to scale down of elastic indexed jobs.",
                job_completions,
            ),
            column(
                "Duration",
                "string",
                0,
                "Time required to complete the job.",
                job_duration,
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            column(
                "Selector",
                "string",
                1,
                "A label query over pods that should match the pod count. Normally, the system sets this field for you. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
                |o, _| label_selector(&o["spec"]["selector"]),
            ),
        ],
        ("batch", "cronjobs") => vec![
            NAME,
            column(
                "Schedule",
                "string",
                0,
                "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.",
                |o, _| json!(text(&o["spec"]["schedule"])),
            ),
            column(
                "Timezone",
                "string",
                0,
                "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones. If not specified, this will default to the time zone of the kube-controller-manager process. The set of valid time zone names and the time zone offset is loaded from the system-wide time zone database by the API server during CronJob validation and the controller manager during execution. If no system-wide time zone database can be found a bundled version of the database is used instead. If the time zone name becomes invalid during the lifetime of a CronJob or due to a change in host configuration, the controller will stop creating new new Jobs and will create a system event with the reason UnknownTimeZone. More information can be found in https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/#time-zones",
                |o, _| json!(o["spec"]["timeZone"].as_str().unwrap_or("<none>")),
            ),
            column(
                "Suspend",
                "boolean",
                0,
                "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.  Defaults to false.",
                |o, _| bool_ptr(&o["spec"]["suspend"]),
            ),
            column(
                "Active",
                "integer",
                0,
                "A list of pointers to currently running jobs.",
                |o, _| json!(array(&o["status"]["active"]).len()),
            ),
            column(
                "Last Schedule",
                "string",
                0,
                "Information when was the last time the job was successfully scheduled.",
                cronjob_last_schedule,
            ),
            AGE,
            containers_column(1, |o, _| container_field(cronjob_pod_spec(o), "name")),
            images_column(1, |o, _| container_field(cronjob_pod_spec(o), "image")),
            column(
                "Selector",
                "string",
                1,
                "A label query over pods that should match the pod count. Normally, the system sets this field for you. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
                |o, _| label_selector(&o["spec"]["jobTemplate"]["spec"]["selector"]),
            ),
        ],
        ("coordination.k8s.io", "leases") => vec![
            NAME,
            column(
                "Holder",
                "string",
                0,
                "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.",
                |o, _| json!(text(&o["spec"]["holderIdentity"])),
            ),
            AGE,
        ],
        ("discovery.k8s.io", "endpointslices") => vec![
            NAME,
            column(
                "AddressType",
                "string",
                0,
                "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type. This field is immutable after creation. The following address types are currently supported: * IPv4: Represents an IPv4 Address. * IPv6: Represents an IPv6 Address. * FQDN: Represents a Fully Qualified Domain Name.",
                |o, _| json!(text(&o["addressType"])),
            ),
            column(
                "Ports",
                "string",
                0,
                "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must have a unique name. When ports is empty, it indicates that there are no defined ports. When a port is defined with a nil port value, it indicates \"all ports\". Each slice may include a maximum of 100 ports.",
                endpoint_slice_ports,
            ),
            column(
                "Endpoints",
                "string",
                0,
                "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 endpoints.",
                endpoint_slice_endpoints,
            ),
            AGE,
        ],
        ("networking.k8s.io", "ingresses") => vec![
            NAME,
            column(
                "Class",
                "string",
                0,
                "The name of the IngressClass resource that should be used for additional configuration",
                |o, _| json!(o["spec"]["ingressClassName"].as_str().unwrap_or("<none>")),
            ),
            column(
                "Hosts",
                "string",
                0,
                "Hosts that incoming requests are matched against before the ingress rule",
                ingress_hosts,
            ),
            column(
                "Address",
                "string",
                0,
                "Address is a list containing ingress points for the load-balancer",
                ingress_address,
            ),
            column(
                "Ports",
                "string",
                0,
                "Ports of TLS configurations that open",
                ingress_ports,
            ),
            AGE,
        ],
        ("networking.k8s.io", "ingressclasses") => vec![
            NAME,
            column(
                "Controller",
                "string",
                0,
                "Controller that is responsible for handling this class",
                |o, _| json!(text(&o["spec"]["controller"])),
            ),
            column(
                "Parameters",
                "string",
                0,
                "A reference to a resource with additional parameters",
                ingress_class_parameters,
            ),
            AGE,
        ],
        ("networking.k8s.io", "networkpolicies") => vec![
            NAME,
            column(
                "Pod-Selector",
                "string",
                0,
                "Selects the pods to which this NetworkPolicy object applies.  The array of ingress rules is applied to any pods selected by this field. Multiple network policies can select the same set of pods.  In this case, the ingress rules for each are combined additively. This field is NOT optional and follows standard label selector semantics. An empty podSelector matches all pods in this namespace.",
                |o, _| label_selector(&o["spec"]["podSelector"]),
            ),
            AGE,
        ],
        ("policy", "poddisruptionbudgets") => vec![
            NAME,
            column(
                "Min Available",
                "string",
                0,
                "The minimum number of pods that must be available.",
                |o, _| int_or_percent(&o["spec"]["minAvailable"]),
            ),
            column(
                "Max Unavailable",
                "string",
                0,
                "The maximum number of pods that may be unavailable.",
                |o, _| int_or_percent(&o["spec"]["maxUnavailable"]),
            ),
            column(
                "Allowed Disruptions",
                "integer",
                0,
                "Calculated number of pods that may be disrupted at this time.",
                |o, _| json!(int(&o["status"]["disruptionsAllowed"])),
            ),
            AGE,
        ],
        ("rbac.authorization.k8s.io", "rolebindings") => binding_columns(
            "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error.",
            [
                "Users in the roleBinding",
                "Groups in the roleBinding",
                "ServiceAccounts in the roleBinding",
            ],
        ),
        ("rbac.authorization.k8s.io", "clusterrolebindings") => binding_columns(
            "RoleRef can only reference a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error.",
            [
                "Users in the clusterRoleBinding",
                "Groups in the clusterRoleBinding",
                "ServiceAccounts in the clusterRoleBinding",
            ],
        ),
        ("scheduling.k8s.io", "priorityclasses") => vec![
            NAME,
            column(
                "Value",
                "integer",
                0,
                "value represents the integer value of this priority class. This is the actual priority that pods receive when they have the name of this class in their pod spec.",
                |o, _| json!(int(&o["value"])),
            ),
            column(
                "Global-Default",
                "boolean",
                0,
                "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class. Only one PriorityClass can be marked as `globalDefault`. However, if more than one PriorityClasses exists with their `globalDefault` field set to true, the smallest value of such global default PriorityClasses will be used as the default priority.",
                |o, _| flag(&o["globalDefault"], false),
            ),
            AGE,
            // Priority 0 upstream too, though only printed when wide (which
            // the server always is).
            column(
                "PreemptionPolicy",
                "string",
                0,
                "preemptionPolicy is the Policy for preempting pods with lower priority. One of Never, PreemptLowerPriority. Defaults to PreemptLowerPriority if unset.",
                |o, _| json!(text(&o["preemptionPolicy"])),
            ),
        ],
        ("storage.k8s.io", "storageclasses") => vec![
            Column {
                cell: storage_class_name,
                ..NAME
            },
            column(
                "Provisioner",
                "string",
                0,
                "provisioner indicates the type of the provisioner.",
                |o, _| json!(text(&o["provisioner"])),
            ),
            column(
                "ReclaimPolicy",
                "string",
                0,
                "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class. Defaults to Delete.",
                |o, _| json!(o["reclaimPolicy"].as_str().unwrap_or("Delete")),
            ),
            column(
                "VolumeBindingMode",
                "string",
                0,
                "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.  When unset, VolumeBindingImmediate is used. This field is only honored by servers that enable the VolumeScheduling feature.",
                |o, _| json!(o["volumeBindingMode"].as_str().unwrap_or("Immediate")),
            ),
            column(
                "AllowVolumeExpansion",
                "string",
                0,
                "allowVolumeExpansion shows whether the storage class allow volume expand.",
                |o, _| flag(&o["allowVolumeExpansion"], false),
            ),
            AGE,
        ],
        ("storage.k8s.io", "csidrivers") => vec![
            NAME,
            column(
                "AttachRequired",
                "boolean",
                0,
                "attachRequired indicates this CSI volume driver requires an attach operation (because it implements the CSI ControllerPublishVolume() method), and that the Kubernetes attach detach controller should call the attach volume interface which checks the volumeattachment status and waits until the volume is attached before proceeding to mounting. The CSI external-attacher coordinates with CSI volume driver and updates the volumeattachment status when the attach operation is complete. If the CSIDriverRegistry feature gate is enabled and the value is specified to false, the attach operation will be skipped. Otherwise the attach operation will be called.\n\nThis field is immutable.",
                |o, _| flag(&o["spec"]["attachRequired"], true),
            ),
            column(
                "PodInfoOnMount",
                "boolean",
                0,
                "podInfoOnMount indicates this CSI volume driver requires additional pod information (like podName, podUID, etc.) during mount operations, if set to true. If set to false, pod information will not be passed on mount. Default is false.\n\nThe CSI driver specifies podInfoOnMount as part of driver deployment. If true, Kubelet will pass pod information as VolumeContext in the CSI NodePublishVolume() calls. The CSI driver is responsible for parsing and validating the information passed in as VolumeContext.\n\nThe following VolumeContext will be passed if podInfoOnMount is set to true. This list might grow, but the prefix will be used. \"csi.storage.k8s.io/pod.name\": pod.Name \"csi.storage.k8s.io/pod.namespace\": pod.Namespace \"csi.storage.k8s.io/pod.uid\": string(pod.UID) \"csi.storage.k8s.io/ephemeral\": \"true\" if the volume is an ephemeral inline volume\n                                defined by a CSIVolumeSource, otherwise \"false\"\n\n\"csi.storage.k8s.io/ephemeral\" is a new feature in Kubernetes 1.16. It is only required for drivers which support both the \"Persistent\" and \"Ephemeral\" VolumeLifecycleMode. Other drivers can leave pod info disabled and/or ignore this field. As Kubernetes 1.15 doesn't support this field, drivers can only support one mode when deployed on such a cluster and the deployment determines which mode that is, for example via a command line parameter of the driver.\n\nThis field was immutable in Kubernetes < 1.29 and now is mutable.",
                |o, _| flag(&o["spec"]["podInfoOnMount"], false),
            ),
            column(
                "StorageCapacity",
                "boolean",
                0,
                "storageCapacity indicates that the CSI volume driver wants pod scheduling to consider the storage capacity that the driver deployment will report by creating CSIStorageCapacity objects with capacity information, if set to true.\n\nThe check can be enabled immediately when deploying a driver. In that case, provisioning new volumes with late binding will pause until the driver deployment has published some suitable CSIStorageCapacity object.\n\nAlternatively, the driver can be deployed with the field unset or false and it can be flipped later when storage capacity information has been published.\n\nThis field was immutable in Kubernetes <= 1.22 and now is mutable.",
                |o, _| flag(&o["spec"]["storageCapacity"], false),
            ),
            column(
                "TokenRequests",
                "string",
                0,
                "tokenRequests indicates the CSI driver needs pods' service account tokens it is mounting volume for to do necessary authentication. Kubelet will pass the tokens in VolumeContext in the CSI NodePublishVolume calls. The CSI driver should parse and validate the following VolumeContext: \"csi.storage.k8s.io/serviceAccount.tokens\": {\n  \"<audience>\": {\n    \"token\": <token>,\n    \"expirationTimestamp\": <expiration timestamp in RFC3339>,\n  },\n  ...\n}\n\nNote: Audience in each TokenRequest should be different and at most one token is empty string. To receive a new token after expiry, RequiresRepublish can be used to trigger NodePublishVolume periodically.",
                csi_token_requests,
            ),
            column(
                "RequiresRepublish",
                "boolean",
                0,
                "requiresRepublish indicates the CSI driver wants `NodePublishVolume` being periodically called to reflect any possible change in the mounted volume. This field defaults to false.\n\nNote: After a successful initial NodePublishVolume call, subsequent calls to NodePublishVolume should only update the contents of the volume. New mount points will not be seen by a running container.",
                |o, _| flag(&o["spec"]["requiresRepublish"], false),
            ),
            column(
                "Modes",
                "string",
                0,
                "volumeLifecycleModes defines what kind of volumes this CSI volume driver supports. The default if the list is empty is \"Persistent\", which is the usage defined by the CSI specification and implemented in Kubernetes via the usual PV/PVC mechanism.\n\nThe other mode is \"Ephemeral\". In this mode, volumes are defined inline inside the pod spec with CSIVolumeSource and their lifecycle is tied to the lifecycle of that pod. A driver has to be aware of this because it is only going to get a NodePublishVolume call for such a volume.\n\nFor more information about implementing this mode, see https://kubernetes-csi.github.io/docs/ephemeral-local-volumes.html A driver can support one or more of these modes and more modes may be added in the future.\n\nThis field is beta. This field is immutable.",
                csi_modes,
            ),
            AGE,
        ],
        ("storage.k8s.io", "csinodes") => vec![
            NAME,
            column(
                "Drivers",
                "integer",
                0,
                "Drivers indicates the number of CSI drivers registered on the node",
                |o, _| json!(array(&o["spec"]["drivers"]).len()),
            ),
            AGE,
        ],
        ("storage.k8s.io", "volumeattachments") => vec![
            NAME,
            // Upstream gives this column the `name` format too.
            Column {
                name: "Attacher",
                kind: "string",
                format: "name",
                description: "attacher indicates the name of the volume driver that MUST handle this request. This is the name returned by GetPluginName().",
                priority: 0,
                cell: |o, _| json!(text(&o["spec"]["attacher"])),
            },
            column(
                "PV",
                "string",
                0,
                "persistentVolumeName represents the name of the persistent volume to attach.",
                |o, _| json!(text(&o["spec"]["source"]["persistentVolumeName"])),
            ),
            column(
                "Node",
                "string",
                0,
                "nodeName represents the node that the volume should be attached to.",
                |o, _| json!(text(&o["spec"]["nodeName"])),
            ),
            column(
                "Attached",
                "boolean",
                0,
                "attached indicates the volume is successfully attached. This field must only be set by the entity completing the attach operation, i.e. the external-attacher.",
                |o, _| flag(&o["status"]["attached"], false),
            ),
            AGE,
        ],
        _ => vec![NAME, AGE],
    }
}

/// Whether the Accept header asks for metadata only
/// (`as=PartialObjectMetadata` or `PartialObjectMetadataList`).
pub fn metadata_wanted(accept: &str) -> bool {
    accept.split(',').next().is_some_and(|first| {
        first.contains("as=PartialObjectMetadata") && first.contains("g=meta.k8s.io")
    })
}

/// An object's metadata alone, as a PartialObjectMetadata.
pub fn partial_metadata(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object["metadata"].clone(),
    })
}

type CustomColumns = HashMap<(&'static str, &'static str, &'static str), Vec<Value>>;

/// The additionalPrinterColumns of custom kinds, from their CRDs.
fn custom_columns() -> &'static RwLock<CustomColumns> {
    static COLUMNS: OnceLock<RwLock<CustomColumns>> = OnceLock::new();
    COLUMNS.get_or_init(Default::default)
}

/// Replaces the custom kinds' printer columns.
pub fn set_custom_columns(columns: CustomColumns) {
    *custom_columns().write().expect("custom columns lock") = columns;
}

/// A printer column's cell: the first value its JSONPath finds, as its
/// type says (none when absent or of another type).
fn custom_cell(kind: &str, path: &jsonpath::Path, object: &Value) -> Value {
    let Some(value) = path.find(object).into_iter().next() else {
        return Value::Null;
    };
    match kind {
        "integer" => value.as_f64().map_or(Value::Null, |n| json!(n as i64)),
        "number" => value.as_f64().map_or(Value::Null, |n| json!(n)),
        "boolean" => value.as_bool().map_or(Value::Null, |b| json!(b)),
        "string" => match value {
            Value::String(text) => json!(text),
            other => json!(other.to_string()),
        },
        _ => value.clone(),
    }
}

/// A Table of `objects`, with the list metadata given.
pub fn table(
    resource: &Resource,
    objects: &[Value],
    metadata: Value,
    include: Include,
    now: i64,
) -> Value {
    let columns = columns(resource);
    let mut definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.kind,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    // A custom kind with printer columns: Name, then those.
    let custom: Vec<(String, jsonpath::Path)> = match custom_columns()
        .read()
        .expect("custom columns lock")
        .get(&(resource.group, resource.version, resource.kind))
    {
        Some(printer) if !printer.is_empty() => {
            definitions.truncate(1);
            printer
                .iter()
                .filter_map(|column| {
                    let path = jsonpath::Path::parse(column["jsonPath"].as_str()?).ok()?;
                    definitions.push(json!({
                        "name": column["name"],
                        "type": column["type"],
                        "format": column["format"].as_str().unwrap_or(""),
                        "description": column["description"].as_str().unwrap_or(""),
                        "priority": column["priority"].as_i64().unwrap_or(0),
                    }));
                    Some((
                        column["type"].as_str().unwrap_or("string").to_string(),
                        path,
                    ))
                })
                .collect()
        }
        _ => Vec::new(),
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let cells: Vec<Value> = if custom.is_empty() {
                let mut stored;
                let mut shown = object;
                if resource.group == "events.k8s.io" {
                    stored = object.clone();
                    tug_api::convert::to_stored(resource, &mut stored);
                    shown = &stored;
                }
                columns.iter().map(|c| (c.cell)(shown, now)).collect()
            } else {
                std::iter::once(name_cell(object, now))
                    .chain(
                        custom
                            .iter()
                            .map(|(kind, path)| custom_cell(kind, path, object)),
                    )
                    .collect()
            };
            let mut row = json!({"cells": cells});
            match include {
                Include::None => {}
                Include::Metadata => row["object"] = partial_metadata(object),
                Include::Object => row["object"] = object.clone(),
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tug_api::registry::find;

    #[test]
    fn hpa_targets_show_current_over_target() {
        let v2 = json!({
            "spec": {"metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}},
                {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
                {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}},
            ]},
            "status": {"currentMetrics": [
                {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 40}}},
            ]},
        });
        assert_eq!(
            hpa_targets(&v2, 0),
            "cpu: 40%/60%, memory: <unknown>/100Mi + 1 more..."
        );
        let v1 = json!({"spec": {"targetCPUUtilizationPercentage": 80}});
        assert_eq!(hpa_targets(&v1, 0), "cpu: <unknown>/80%");
    }

    #[test]
    fn configmap_rows_count_data_and_show_age() {
        let resource = find("", "v1", "configmaps").unwrap();
        let object = json!({
            "metadata": {"name": "app", "namespace": "default", "creationTimestamp": "2026-11-23T18:00:00Z"},
            "data": {"a": "1", "b": "2"},
            "binaryData": {"c": "AA=="},
        });
        let now = parse_timestamp("2026-11-23T18:03:20Z").unwrap();
        let table = table(
            resource,
            &[object],
            json!({"resourceVersion": "7"}),
            Include::Metadata,
            now,
        );
        let names: Vec<&str> = table["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "Data", "Age"]);
        assert_eq!(table["rows"][0]["cells"], json!(["app", 3, "3m20s"]));
        assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(
            table["rows"][0]["object"]["metadata"]["namespace"],
            "default"
        );
    }

    fn cells(plural: &str, group: &str, object: Value, now: i64) -> Vec<Value> {
        let resource = find(group, "v1", plural).unwrap();
        table(resource, &[object], json!({}), Include::None, now)["rows"][0]["cells"]
            .as_array()
            .unwrap()
            .clone()
    }

    #[test]
    fn pods_show_ready_status_and_restarts_as_kubectl() {
        let now = parse_timestamp("2026-11-23T18:10:00Z").unwrap();
        let created = "2026-11-23T18:00:00Z";
        let running = json!({
            "metadata": {"name": "web", "creationTimestamp": created},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.42.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-11-23T18:08:00Z"}}},
            ]},
        });
        assert_eq!(
            json!(cells("pods", "", running, now)),
            json!([
                "web",
                "1/2",
                "CrashLoopBackOff",
                "3 (2m ago)",
                "10m",
                "10.42.0.5",
                "n1",
                "<none>",
                "<none>"
            ])
        );
        let init = json!({
            "metadata": {"name": "i", "creationTimestamp": created},
            "spec": {"containers": [{"name": "a"}], "initContainers": [{"name": "x"}, {"name": "y"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "x", "state": {"terminated": {"exitCode": 0}}},
                {"name": "y", "state": {"running": {}}},
            ]},
        });
        assert_eq!(cells("pods", "", init, now)[2], "Init:1/2");
        let going = json!({"metadata": {"name": "g", "deletionTimestamp": created}, "spec": {"containers": []}, "status": {"phase": "Running"}});
        assert_eq!(cells("pods", "", going, now)[2], "Terminating");
        assert_eq!(
            cells(
                "pods",
                "",
                json!({"metadata": {"name": "p"}, "spec": {}}),
                now
            )[1..3],
            [json!("0/0"), json!("Pending")]
        );
    }

    #[test]
    fn workloads_services_and_nodes_show_upstreams_columns() {
        let now = parse_timestamp("2026-11-23T18:10:00Z").unwrap();
        let deployment = json!({
            "metadata": {"name": "web", "creationTimestamp": "2026-11-23T18:00:00Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "app", "image": "nginx"}, {"name": "log", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
        });
        assert_eq!(
            json!(cells("deployments", "apps", deployment, now)),
            json!([
                "web",
                "2/3",
                3,
                2,
                "10m",
                "app,log",
                "nginx,busybox",
                "app=web"
            ])
        );
        let service = json!({
            "metadata": {"name": "svc"},
            "spec": {"type": "NodePort", "clusterIP": "10.43.0.10", "selector": {"app": "web"},
                     "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]},
        });
        assert_eq!(
            cells("services", "", service, now)[1..5],
            [
                json!("NodePort"),
                json!("10.43.0.10"),
                json!("<none>"),
                json!("80:30080/TCP,53/UDP")
            ]
        );
        let pending = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer"}});
        assert_eq!(cells("services", "", pending, now)[3], "<pending>");
        let node = json!({
            "metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": "true", "node-role.kubernetes.io/master": "true"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.33.0+tug1"},
                       "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]},
        });
        assert_eq!(
            cells("nodes", "", node, now)[..3],
            [
                json!("n1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,master")
            ]
        );
    }

    /// Column names and priorities, as the Table defines them.
    fn definitions(plural: &str, group: &str) -> Vec<(String, i64)> {
        let resource = find(group, "v1", plural).unwrap();
        table(resource, &[], json!({}), Include::None, 0)["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["priority"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    const CREATED: &str = "2026-11-23T18:00:00Z";

    fn ten_past() -> i64 {
        parse_timestamp("2026-11-23T18:10:00Z").unwrap()
    }

    #[test]
    fn every_resource_has_a_cell_for_each_column() {
        for resource in tug_api::registry::RESOURCES {
            let object = json!({"metadata": {"name": "x"}});
            let table = table(resource, &[object], json!({}), Include::None, 0);
            assert_eq!(
                table["rows"][0]["cells"].as_array().unwrap().len(),
                table["columnDefinitions"].as_array().unwrap().len(),
                "{}",
                resource.plural
            );
        }
    }

    #[test]
    fn jobs_show_status_completions_and_duration() {
        let now = ten_past();
        let complete = json!({
            "metadata": {"name": "pi", "creationTimestamp": CREATED},
            "spec": {"completions": 3, "parallelism": 1,
                     "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "abc"}},
                     "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
            "status": {"succeeded": 3, "startTime": "2026-11-23T18:00:00Z", "completionTime": "2026-11-23T18:02:05Z",
                       "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]},
        });
        assert_eq!(
            json!(cells("jobs", "batch", complete, now)),
            json!([
                "pi",
                "Complete",
                "3/3",
                "2m5s",
                "10m",
                "pi",
                "perl",
                "batch.kubernetes.io/controller-uid=abc"
            ])
        );
        let queue = json!({
            "metadata": {"name": "q", "creationTimestamp": CREATED},
            "spec": {"parallelism": 4},
            "status": {"succeeded": 1, "startTime": "2026-11-23T18:05:00Z"},
        });
        assert_eq!(
            cells("jobs", "batch", queue, now)[1..4],
            [json!("Running"), json!("1/1 of 4"), json!("5m")]
        );
        let suspended = json!({
            "metadata": {"name": "s"},
            "spec": {"completions": 2},
            "status": {"conditions": [{"type": "Suspended", "status": "True"}]},
        });
        assert_eq!(
            cells("jobs", "batch", suspended, now)[1..4],
            [json!("Suspended"), json!("0/2"), json!("")]
        );
        let going = json!({
            "metadata": {"name": "g", "deletionTimestamp": CREATED},
            "status": {"conditions": [{"type": "FailureTarget", "status": "True"}]},
        });
        assert_eq!(
            cells("jobs", "batch", going, now)[1..3],
            [json!("Terminating"), json!("0/1")]
        );
        let failed = json!({
            "metadata": {"name": "f", "deletionTimestamp": CREATED},
            "status": {"conditions": [{"type": "Failed", "status": "True"}]},
        });
        assert_eq!(cells("jobs", "batch", failed, now)[1], "Failed");
    }

    #[test]
    fn cronjobs_show_schedule_and_last_run() {
        let now = ten_past();
        let cronjob = json!({
            "metadata": {"name": "tick", "creationTimestamp": CREATED},
            "spec": {"schedule": "*/5 * * * *", "suspend": false,
                     "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}},
            "status": {"active": [{"name": "tick-1"}, {"name": "tick-2"}], "lastScheduleTime": "2026-11-23T18:05:00Z"},
        });
        assert_eq!(
            json!(cells("cronjobs", "batch", cronjob, now)),
            json!([
                "tick",
                "*/5 * * * *",
                "<none>",
                "False",
                2,
                "5m",
                "10m",
                "c",
                "busybox",
                "<none>"
            ])
        );
        let unset = json!({"metadata": {"name": "t"}, "spec": {"schedule": "@hourly", "timeZone": "Europe/Paris"}});
        assert_eq!(
            cells("cronjobs", "batch", unset, now)[2..6],
            [
                json!("Europe/Paris"),
                json!("<unset>"),
                json!(0),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn statefulsets_and_daemonsets_show_their_counts() {
        let now = ten_past();
        let statefulset = json!({
            "metadata": {"name": "db", "creationTimestamp": CREATED},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "pg", "image": "postgres:17"}]}}},
            "status": {"replicas": 2, "readyReplicas": 1},
        });
        assert_eq!(
            json!(cells("statefulsets", "apps", statefulset, now)),
            json!(["db", "1/3", "10m", "pg", "postgres:17"])
        );
        assert_eq!(
            definitions("statefulsets", "apps"),
            [
                ("Name", 0),
                ("Ready", 0),
                ("Age", 0),
                ("Containers", 1),
                ("Images", 1)
            ]
            .map(|(n, p)| (n.to_string(), p))
        );
        let daemonset = json!({
            "metadata": {"name": "fluentd", "creationTimestamp": CREATED},
            "spec": {
                "selector": {"matchLabels": {"app": "ds"}, "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["b", "a"]},
                    {"key": "canary", "operator": "DoesNotExist"},
                ]},
                "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                                      "containers": [{"name": "fluentd", "image": "fluentd:v1"}]}},
            },
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                       "updatedNumberScheduled": 3, "numberAvailable": 2},
        });
        assert_eq!(
            json!(cells("daemonsets", "apps", daemonset, now)),
            json!([
                "fluentd",
                3,
                3,
                2,
                3,
                2,
                "kubernetes.io/os=linux",
                "10m",
                "fluentd",
                "fluentd:v1",
                "app=ds,!canary,tier in (a,b)"
            ])
        );
        let bare = json!({"metadata": {"name": "ds"}, "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}});
        assert_eq!(cells("daemonsets", "apps", bare.clone(), now)[6], "<none>");
        assert_eq!(cells("daemonsets", "apps", bare, now)[10], "<error>");
    }

    #[test]
    fn events_show_when_what_and_where() {
        let now = ten_past();
        assert_eq!(
            definitions("events", ""),
            [
                ("Last Seen", 0),
                ("Type", 0),
                ("Reason", 0),
                ("Object", 0),
                ("Subobject", 1),
                ("Source", 1),
                ("Message", 0),
                ("First Seen", 1),
                ("Count", 1),
                ("Name", 1)
            ]
            .map(|(n, p)| (n.to_string(), p))
        );
        let recorded = json!({
            "metadata": {"name": "web-1.17a"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{app}"},
            "type": "Warning", "reason": "BackOff", "message": "Back-off restarting failed container\n",
            "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": "2026-11-23T18:00:00Z", "lastTimestamp": "2026-11-23T18:08:00Z", "count": 5,
        });
        assert_eq!(
            json!(cells("events", "", recorded, now)),
            json!([
                "2m",
                "Warning",
                "BackOff",
                "pod/web-1",
                "spec.containers{app}",
                "kubelet, n1",
                "Back-off restarting failed container",
                "10m",
                5,
                "web-1.17a"
            ])
        );
        // As events.k8s.io clients record them: an eventTime, no count.
        let new = json!({
            "metadata": {"name": "n"},
            "involvedObject": {"kind": "Node"},
            "eventTime": "2026-11-23T18:09:30.123456Z",
            "reportingComponent": "tug-agent", "reportingInstance": "",
            "type": "Normal", "reason": "Ready",
        });
        let row = cells("events", "", new, now);
        assert_eq!(row[0], "30s");
        assert_eq!(row[3], "node");
        assert_eq!(row[5], "tug-agent");
        assert_eq!(row[7..9], [json!("30s"), json!(1)]);
        let series = json!({
            "metadata": {"name": "s"},
            "eventTime": "2026-11-23T18:00:00.000000Z",
            "series": {"count": 4, "lastObservedTime": "2026-11-23T18:09:50.000000Z"},
        });
        let row = cells("events", "", series, now);
        assert_eq!(row[0], "10s");
        assert_eq!(row[7..9], [json!("10m"), json!(4)]);
        let unknown = cells("events", "", json!({"metadata": {"name": "u"}}), now);
        assert_eq!(unknown[0], "<unknown>");
        assert_eq!(unknown[7], "<unknown>");
    }

    #[test]
    fn endpoints_list_three_then_count_the_rest() {
        let now = ten_past();
        let endpoints = |subsets: Value| {
            cells(
                "endpoints",
                "",
                json!({"metadata": {"name": "svc"}, "subsets": subsets}),
                now,
            )[1]
            .clone()
        };
        assert_eq!(
            endpoints(json!([{
                "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
                "ports": [{"port": 80}, {"port": 443}],
            }])),
            "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more..."
        );
        assert_eq!(
            endpoints(json!([
                {"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 53}]},
                {"addresses": [{"ip": "10.0.0.3"}, {"ip": "10.0.0.4"}]},
            ])),
            "[fd00::1]:53,10.0.0.3,10.0.0.4"
        );
        assert_eq!(endpoints(json!([])), "<none>");
        assert_eq!(
            endpoints(
                json!([{"notReadyAddresses": [{"ip": "10.0.0.5"}], "ports": [{"port": 80}]}])
            ),
            ""
        );
        let slice = json!({
            "metadata": {"name": "svc-abc", "creationTimestamp": CREATED},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 80}, {"name": "dns"}, {}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "10.0.0.3"]}, {"addresses": ["10.0.0.4"]}],
        });
        assert_eq!(
            json!(cells("endpointslices", "discovery.k8s.io", slice, now)),
            json!([
                "svc-abc",
                "IPv4",
                "80,dns,*",
                "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...",
                "10m"
            ])
        );
        let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv4"});
        assert_eq!(
            cells("endpointslices", "discovery.k8s.io", empty, now)[2..4],
            [json!("<unset>"), json!("<unset>")]
        );
    }

    #[test]
    fn bindings_show_their_role_and_subjects() {
        let now = ten_past();
        let binding = json!({
            "metadata": {"name": "rb", "creationTimestamp": CREATED},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [
                {"kind": "User", "name": "alice"},
                {"kind": "Group", "name": "devs"},
                {"kind": "ServiceAccount", "name": "builder", "namespace": "default"},
                {"kind": "User", "name": "bob"},
            ],
        });
        assert_eq!(
            json!(cells(
                "rolebindings",
                "rbac.authorization.k8s.io",
                binding,
                now
            )),
            json!([
                "rb",
                "ClusterRole/view",
                "10m",
                "alice, bob",
                "devs",
                "default/builder"
            ])
        );
        let cluster = json!({"metadata": {"name": "crb"}, "roleRef": {"kind": "ClusterRole", "name": "admin"}});
        assert_eq!(
            cells(
                "clusterrolebindings",
                "rbac.authorization.k8s.io",
                cluster,
                now
            )[1..],
            [
                json!("ClusterRole/admin"),
                json!("<unknown>"),
                json!(""),
                json!(""),
                json!("")
            ]
        );
        // Roles have no printer upstream: the default columns.
        let role =
            json!({"metadata": {"name": "r", "creationTimestamp": "2026-11-23T19:00:00+01:00"}});
        assert_eq!(
            cells("clusterroles", "rbac.authorization.k8s.io", role, now),
            [json!("r"), json!("2026-11-23T18:00:00Z")]
        );
        let resource = find("rbac.authorization.k8s.io", "v1", "roles").unwrap();
        assert_eq!(
            table(resource, &[], json!({}), Include::None, now)["columnDefinitions"][1]["type"],
            "date"
        );
    }

    #[test]
    fn ingresses_show_class_hosts_address_and_ports() {
        let now = ten_past();
        let ingress = json!({
            "metadata": {"name": "web", "creationTimestamp": CREATED},
            "spec": {"ingressClassName": "nginx",
                     "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}, {}, {"host": "c.example.com"}, {"host": "d.example.com"}],
                     "tls": [{"hosts": ["a.example.com"]}]},
            "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}, {"ip": "192.0.2.1"}, {"ip": "192.0.2.1"}]}},
        });
        assert_eq!(
            json!(cells("ingresses", "networking.k8s.io", ingress, now)),
            json!([
                "web",
                "nginx",
                "a.example.com,b.example.com,c.example.com + 2 more...",
                "192.0.2.1,lb.example.com",
                "80, 443",
                "10m"
            ])
        );
        let three = json!({"metadata": {"name": "t"}, "spec": {"rules": [{"host": "a"}, {}, {"host": "b"}, {"host": "c"}]}});
        assert_eq!(
            cells("ingresses", "networking.k8s.io", three, now)[2],
            "a,b,c"
        );
        let bare = json!({"metadata": {"name": "b", "creationTimestamp": CREATED}, "spec": {"defaultBackend": {}}});
        assert_eq!(
            json!(cells("ingresses", "networking.k8s.io", bare, now)),
            json!(["b", "<none>", "*", "", "80", "10m"])
        );
        let class = json!({
            "metadata": {"name": "nginx", "creationTimestamp": CREATED},
            "spec": {"controller": "k8s.io/ingress-nginx",
                     "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "external-lb"}},
        });
        assert_eq!(
            json!(cells("ingressclasses", "networking.k8s.io", class, now)),
            json!([
                "nginx",
                "k8s.io/ingress-nginx",
                "IngressParameters.k8s.example.com/external-lb",
                "10m"
            ])
        );
    }

    #[test]
    fn storage_policy_and_quota_rows_as_upstream() {
        let now = ten_past();
        let claim = json!({
            "metadata": {"name": "data", "creationTimestamp": CREATED},
            "spec": {"volumeName": "pv1", "storageClassName": "local", "volumeMode": "Filesystem",
                     "resources": {"requests": {"storage": "500Mi"}}},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"},
                       "accessModes": ["ReadWriteOncePod", "ReadWriteOnce", "ReadWriteOnce"]},
        });
        assert_eq!(
            json!(cells("persistentvolumeclaims", "", claim, now)),
            json!([
                "data",
                "Bound",
                "pv1",
                "1Gi",
                "RWO,RWOP",
                "local",
                "<unset>",
                "10m",
                "Filesystem"
            ])
        );
        let volume = json!({
            "metadata": {"name": "pv1", "creationTimestamp": CREATED, "deletionTimestamp": CREATED,
                         "annotations": {"volume.beta.kubernetes.io/storage-class": "old"}},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany", "ReadOnlyMany"],
                     "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "local",
                     "claimRef": {"namespace": "default", "name": "data"}},
            "status": {"phase": "Bound"},
        });
        assert_eq!(
            json!(cells("persistentvolumes", "", volume, now)),
            json!([
                "pv1",
                "1Gi",
                "ROX,RWX",
                "Retain",
                "Terminating",
                "default/data",
                "old",
                "<unset>",
                "",
                "10m",
                "<unset>"
            ])
        );
        let class = json!({
            "metadata": {"name": "local-path", "creationTimestamp": CREATED,
                         "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer",
        });
        assert_eq!(
            json!(cells("storageclasses", "storage.k8s.io", class, now)),
            json!([
                "local-path (default)",
                "rancher.io/local-path",
                "Delete",
                "WaitForFirstConsumer",
                false,
                "10m"
            ])
        );
        let quota = json!({
            "metadata": {"name": "q", "creationTimestamp": CREATED},
            "status": {"hard": {"limits.cpu": "2", "requests.cpu": "1", "pods": "10"},
                       "used": {"requests.cpu": "500m", "pods": "3"}},
        });
        assert_eq!(
            json!(cells("resourcequotas", "", quota, now)),
            json!([
                "q",
                "pods: 3/10, requests.cpu: 500m/1",
                "limits.cpu: 0/2",
                "10m"
            ])
        );
        let budget = json!({
            "metadata": {"name": "pdb", "creationTimestamp": CREATED},
            "spec": {"minAvailable": "50%"},
            "status": {"disruptionsAllowed": 1},
        });
        assert_eq!(
            json!(cells("poddisruptionbudgets", "policy", budget, now)),
            json!(["pdb", "50%", "N/A", 1, "10m"])
        );
        let revision = json!({
            "metadata": {"name": "fluentd-6d8f", "creationTimestamp": CREATED, "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "fluentd", "controller": true}]},
            "revision": 2,
        });
        assert_eq!(
            json!(cells("controllerrevisions", "apps", revision, now)),
            json!(["fluentd-6d8f", "daemonset.apps/fluentd", 2, "10m"])
        );
        let template = json!({
            "metadata": {"name": "tpl"},
            "template": {"metadata": {"labels": {"b": "2", "a": "1"}},
                         "spec": {"containers": [{"name": "x", "image": "nginx"}, {"name": "y", "image": "redis"}]}},
        });
        assert_eq!(
            json!(cells("podtemplates", "", template, now)),
            json!(["tpl", "x,y", "nginx,redis", "a=1,b=2"])
        );
    }

    #[test]
    fn only_a_table_first_in_accept_asks_for_a_table() {
        assert!(wanted(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!wanted("application/json"));
        assert!(!wanted(
            "application/json,application/json;as=Table;v=v1;g=meta.k8s.io"
        ));
    }
}
