//! Table output (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`):
//! the columns `kubectl get` prints, computed by the server as upstream's.

use serde_json::{Value, json};
use tug_api::format::{human_duration, parse_timestamp};
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
    match object["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(parse_timestamp)
    {
        Some(created) => json!(human_duration(now - created)),
        None => json!("<unknown>"),
    }
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

fn template_containers(object: &Value) -> &[Value] {
    object["spec"]["template"]["spec"]["containers"]
        .as_array()
        .map_or(&[], Vec::as_slice)
}

const CONTAINERS: Column = column(
    "Containers",
    "string",
    1,
    "Names of each container in the template.",
    |o, _| {
        let names: Vec<&str> = template_containers(o)
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        json!(names.join(","))
    },
);

const IMAGES: Column = column(
    "Images",
    "string",
    1,
    "Images referenced by each container in the template.",
    |o, _| {
        let images: Vec<&str> = template_containers(o)
            .iter()
            .filter_map(|c| c["image"].as_str())
            .collect();
        json!(images.join(","))
    },
);

const SELECTOR: Column = column(
    "Selector",
    "string",
    1,
    "Label selector for pods.",
    |o, _| {
        let selector = &o["spec"]["selector"];
        let labels = selector.get("matchLabels").unwrap_or(selector);
        selector_labels(labels)
    },
);

/// `a=b,c=d` sorted by key, or `<none>`.
fn selector_labels(labels: &Value) -> Value {
    let mut terms: Vec<String> = labels
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
                .collect()
        })
        .unwrap_or_default();
    terms.sort();
    if terms.is_empty() {
        json!("<none>")
    } else {
        json!(terms.join(","))
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
        ("apps", "replicasets") | ("", "replicationcontrollers") => vec![
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
            SELECTOR,
        ],
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
        _ => vec![NAME, AGE],
    }
}

fn partial_metadata(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object["metadata"].clone(),
    })
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
    let definitions: Vec<Value> = columns
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
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let cells: Vec<Value> = columns.iter().map(|c| (c.cell)(object, now)).collect();
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
