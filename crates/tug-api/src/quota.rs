//! ResourceQuota arithmetic, shared by the API server's admission and the
//! controller that keeps quotas' status: what an object uses of each
//! quota resource name (upstream's evaluators), which names concern a
//! kind, what a pod must state when cpu or memory are limited, and which
//! pods a scoped quota covers.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::quantity;

/// An amount of one resource, and whether it is written in binary
/// suffixes (kept by sums, as upstream's quantities keep their format).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Amount {
    pub milli: i128,
    pub binary: bool,
}

impl Amount {
    pub fn parse(text: &str) -> Option<Amount> {
        Some(Amount {
            milli: quantity::milli(text)?,
            binary: quantity::is_binary(text),
        })
    }

    fn count(n: i128) -> Amount {
        Amount {
            milli: n * 1000,
            binary: false,
        }
    }

    fn plus(self, other: Amount) -> Amount {
        Amount {
            milli: self.milli.saturating_add(other.milli),
            binary: if self.milli == 0 {
                other.binary
            } else {
                self.binary
            },
        }
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&quantity::format(self.milli, self.binary))
    }
}

/// Resource name to amount.
pub type Usage = BTreeMap<String, Amount>;

/// A resource list (`{"cpu": "1", ...}`) as amounts; what does not parse
/// is left out.
pub fn parse_list(list: &Value) -> Usage {
    list.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), Amount::parse(v.as_str()?)?)))
        .collect()
}

pub fn to_list(usage: &Usage) -> Value {
    Value::Object(
        usage
            .iter()
            .map(|(k, v)| (k.clone(), json!(v.to_string())))
            .collect(),
    )
}

/// `a=1,b=2` over `names` (upstream's prettyPrint of a masked list).
pub fn pretty(usage: &Usage, names: &BTreeSet<String>) -> String {
    names
        .iter()
        .map(|n| format!("{n}={}", usage.get(n).copied().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn add(total: &mut Usage, more: &Usage) {
    for (name, amount) in more {
        let sum = total.get(name).copied().unwrap_or_default().plus(*amount);
        total.insert(name.clone(), sum);
    }
}

/// The generic count name of a kind: `count/<plural>[.<group>]`.
fn count_name(group: &str, plural: &str) -> String {
    if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    }
}

const STANDARD: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];
const CLASS_SUFFIX: &str = ".storageclass.storage.k8s.io/";

/// Whether quota resource `name` concerns objects of this kind.
pub fn concerns(group: &str, plural: &str, name: &str) -> bool {
    if name == count_name(group, plural) {
        return true;
    }
    match (group, plural) {
        ("", "pods") => {
            name == "pods"
                || STANDARD.contains(&name)
                || (name.starts_with("requests.") && name != "requests.storage")
                || name.starts_with("limits.")
        }
        ("", "services") => matches!(
            name,
            "services" | "services.nodeports" | "services.loadbalancers"
        ),
        ("", "persistentvolumeclaims") => {
            matches!(name, "persistentvolumeclaims" | "requests.storage")
                || name.ends_with(&format!("{CLASS_SUFFIX}requests.storage"))
                || name.ends_with(&format!("{CLASS_SUFFIX}persistentvolumeclaims"))
        }
        ("", "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas") => {
            name == plural
        }
        _ => false,
    }
}

/// A pod's requests and limits as the scheduler counts them: the sum of
/// its containers (and sidecars), at least each init container's, plus
/// the overhead.
pub fn pod_resources(spec: &Value) -> (Usage, Usage) {
    let of = |c: &Value, which: &str| parse_list(&c["resources"][which]);
    let mut totals = (Usage::new(), Usage::new());
    let containers = spec["containers"].as_array().into_iter().flatten();
    let sidecars = spec["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["restartPolicy"] == "Always");
    for c in containers.chain(sidecars) {
        add(&mut totals.0, &of(c, "requests"));
        add(&mut totals.1, &of(c, "limits"));
    }
    for c in spec["initContainers"].as_array().into_iter().flatten() {
        if c["restartPolicy"] == "Always" {
            continue;
        }
        for (total, which) in [(&mut totals.0, "requests"), (&mut totals.1, "limits")] {
            for (name, amount) in of(c, which) {
                let now = total.entry(name).or_default();
                if amount.milli > now.milli {
                    *now = amount;
                }
            }
        }
    }
    let overhead = parse_list(&spec["overhead"]);
    add(&mut totals.0, &overhead);
    add(&mut totals.1, &overhead);
    totals
}

fn finished(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

/// What `object` (of `group`/`plural`) uses of every quota resource it
/// concerns; nothing for a finished pod.
pub fn usage(group: &str, plural: &str, object: &Value) -> Usage {
    let mut usage = Usage::new();
    let one = Amount::count(1);
    usage.insert(count_name(group, plural), one);
    match (group, plural) {
        ("", "pods") => {
            if finished(object) {
                return Usage::new();
            }
            usage.insert("pods".into(), one);
            let (requests, limits) = pod_resources(&object["spec"]);
            for (name, amount) in requests {
                if STANDARD.contains(&name.as_str()) {
                    usage.insert(name.clone(), amount);
                }
                usage.insert(format!("requests.{name}"), amount);
            }
            for (name, amount) in limits {
                if STANDARD.contains(&name.as_str()) {
                    usage.insert(format!("limits.{name}"), amount);
                }
            }
        }
        ("", "services") => {
            usage.insert("services".into(), one);
            let kind = object["spec"]["type"].as_str().unwrap_or("ClusterIP");
            if matches!(kind, "NodePort" | "LoadBalancer") {
                let ports = object["spec"]["ports"].as_array().map_or(0, Vec::len);
                usage.insert("services.nodeports".into(), Amount::count(ports as i128));
            }
            if kind == "LoadBalancer" {
                usage.insert("services.loadbalancers".into(), one);
            }
        }
        ("", "persistentvolumeclaims") => {
            usage.insert("persistentvolumeclaims".into(), one);
            let storage = object["spec"]["resources"]["requests"]["storage"]
                .as_str()
                .and_then(Amount::parse)
                .unwrap_or_default();
            usage.insert("requests.storage".into(), storage);
            if let Some(class) = object["spec"]["storageClassName"].as_str() {
                usage.insert(format!("{class}{CLASS_SUFFIX}requests.storage"), storage);
                usage.insert(format!("{class}{CLASS_SUFFIX}persistentvolumeclaims"), one);
            }
        }
        ("", "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas") => {
            usage.insert(plural.into(), one);
        }
        _ => {}
    }
    usage
}

/// Names a pod must state for itself in every container when a quota
/// limits them (upstream's backward-compatible requirement).
const STATED: [&str; 6] = [
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

/// `Err("must specify limits.cpu for: a,b; requests.cpu for: a")` when a
/// quota limiting `limited` covers a pod whose containers do not state
/// those resources.
pub fn pod_constraints(limited: &BTreeSet<String>, pod: &Value) -> Result<(), String> {
    let required: Vec<&str> = STATED
        .iter()
        .copied()
        .filter(|n| limited.contains(*n))
        .collect();
    if required.is_empty() {
        return Ok(());
    }
    let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let spec = &pod["spec"];
    let all = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["initContainers"].as_array().into_iter().flatten());
    for container in all {
        let requests = &container["resources"]["requests"];
        let limits = &container["resources"]["limits"];
        for name in &required {
            let stated = match name.split_once('.') {
                Some(("limits", r)) => !limits[r].is_null(),
                Some((_, r)) => !requests[r].is_null(),
                None => !requests[*name].is_null(),
            };
            if !stated {
                let container = container["name"].as_str().unwrap_or_default().to_string();
                missing.entry(name).or_default().insert(container);
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|(name, containers)| {
            let containers: Vec<&str> = containers.iter().map(String::as_str).collect();
            format!("{name} for: {}", containers.join(","))
        })
        .collect();
    Err(format!("must specify {}", parts.join("; ")))
}

fn best_effort(pod: &Value) -> bool {
    let spec = &pod["spec"];
    spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["initContainers"].as_array().into_iter().flatten())
        .all(|c| {
            let empty = |v: &Value| v.as_object().is_none_or(|m| m.is_empty());
            empty(&c["resources"]["requests"]) && empty(&c["resources"]["limits"])
        })
}

fn in_scope(scope: &str, operator: &str, values: &[&str], pod: &Value) -> bool {
    let spec = &pod["spec"];
    let holds = match scope {
        "Terminating" => spec["activeDeadlineSeconds"]
            .as_i64()
            .is_some_and(|s| s >= 0),
        "NotTerminating" => spec["activeDeadlineSeconds"].as_i64().is_none_or(|s| s < 0),
        "BestEffort" => best_effort(pod),
        "NotBestEffort" => !best_effort(pod),
        "PriorityClass" => {
            let class = spec["priorityClassName"].as_str().unwrap_or("");
            return match operator {
                "In" => values.contains(&class),
                "NotIn" => !values.contains(&class),
                "Exists" => !class.is_empty(),
                "DoesNotExist" => class.is_empty(),
                _ => false,
            };
        }
        _ => return false,
    };
    match operator {
        "DoesNotExist" | "NotIn" => !holds,
        _ => holds,
    }
}

/// Whether `quota` covers an object of this kind: a quota with scopes
/// covers only pods in every scope.
pub fn covers(quota: &Value, group: &str, plural: &str, object: &Value) -> bool {
    let scopes: Vec<&str> = quota["spec"]["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let selected: Vec<&Value> = quota["spec"]["scopeSelector"]["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    if scopes.is_empty() && selected.is_empty() {
        return true;
    }
    if (group, plural) != ("", "pods") {
        return false;
    }
    scopes.iter().all(|s| in_scope(s, "Exists", &[], object))
        && selected.iter().all(|e| {
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            in_scope(
                e["scopeName"].as_str().unwrap_or_default(),
                e["operator"].as_str().unwrap_or_default(),
                &values,
                object,
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(containers: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": containers}})
    }

    #[test]
    fn a_pod_uses_its_requests_limits_and_one_pod() {
        let p = json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1"}}},
                {"name": "b", "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}}}],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2"}}}],
            "overhead": {"memory": "10Mi"}}});
        let used = usage("", "pods", &p);
        let shown: BTreeMap<&str, String> = used
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_string()))
            .collect();
        assert_eq!(
            shown,
            BTreeMap::from([
                ("count/pods", "1".to_string()),
                ("cpu", "2".into()),
                ("limits.cpu", "1".into()),
                ("limits.memory", "10Mi".into()),
                ("memory", "1546Mi".into()),
                ("pods", "1".into()),
                ("requests.cpu", "2".into()),
                ("requests.memory", "1546Mi".into()),
            ])
        );
        let done = json!({"spec": {"containers": []}, "status": {"phase": "Succeeded"}});
        assert!(usage("", "pods", &done).is_empty());
    }

    #[test]
    fn other_kinds_count_themselves() {
        let svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}});
        let used = usage("", "services", &svc);
        assert_eq!(used["services.nodeports"].to_string(), "2");
        assert_eq!(used["services"].to_string(), "1");
        let pvc = json!({"spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "5Gi"}}}});
        let used = usage("", "persistentvolumeclaims", &pvc);
        assert_eq!(used["requests.storage"].to_string(), "5Gi");
        assert_eq!(
            used["fast.storageclass.storage.k8s.io/requests.storage"].to_string(),
            "5Gi"
        );
        assert!(usage("apps", "deployments", &json!({})).contains_key("count/deployments.apps"));
        assert!(concerns("", "pods", "requests.cpu"));
        assert!(!concerns("", "pods", "requests.storage"));
        assert!(concerns("", "persistentvolumeclaims", "requests.storage"));
        assert!(concerns("", "configmaps", "count/configmaps"));
        assert!(!concerns("", "configmaps", "secrets"));
        assert!(concerns("apps", "deployments", "count/deployments.apps"));
    }

    #[test]
    fn limited_cpu_and_memory_must_be_stated_by_every_container() {
        let limited: BTreeSet<String> = ["requests.cpu", "limits.memory", "pods"]
            .map(String::from)
            .into();
        let p = pod(json!([
            {"name": "a", "resources": {"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}}},
            {"name": "b", "resources": {}},
            {"name": "c", "resources": {"requests": {"cpu": "1"}}}]));
        assert_eq!(
            pod_constraints(&limited, &p),
            Err("must specify limits.memory for: b,c; requests.cpu for: b".into())
        );
        let only_pods: BTreeSet<String> = ["pods".to_string()].into();
        assert_eq!(pod_constraints(&only_pods, &p), Ok(()));
    }

    #[test]
    fn scopes_pick_pods() {
        let best_effort = pod(json!([{"name": "a"}]));
        let burstable = pod(json!([{"name": "a", "resources": {"requests": {"cpu": "1"}}}]));
        let quota = |spec: Value| json!({"spec": spec});
        let be = quota(json!({"scopes": ["BestEffort"]}));
        assert!(covers(&be, "", "pods", &best_effort));
        assert!(!covers(&be, "", "pods", &burstable));
        assert!(!covers(&be, "", "services", &json!({})));
        assert!(covers(&quota(json!({})), "", "services", &json!({})));
        let high = quota(json!({"scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}));
        let mut p = burstable.clone();
        assert!(!covers(&high, "", "pods", &p));
        p["spec"]["priorityClassName"] = json!("high");
        assert!(covers(&high, "", "pods", &p));
        let terminating = quota(json!({"scopes": ["Terminating"]}));
        p["spec"]["activeDeadlineSeconds"] = json!(30);
        assert!(covers(&terminating, "", "pods", &p));
        assert!(!covers(&terminating, "", "pods", &burstable));
    }

    #[test]
    fn pretty_prints_masked_lists() {
        let used = parse_list(&json!({"requests.cpu": "1500m", "pods": "3"}));
        let names: BTreeSet<String> = ["pods", "requests.cpu", "requests.memory"]
            .map(String::from)
            .into();
        assert_eq!(
            pretty(&used, &names),
            "pods=3,requests.cpu=1500m,requests.memory=0"
        );
        assert_eq!(
            to_list(&used),
            json!({"pods": "3", "requests.cpu": "1500m"})
        );
    }
}
