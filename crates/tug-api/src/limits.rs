//! LimitRanges, as upstream's LimitRanger admission applies them to a
//! new pod or claim: default requests and limits filled into containers
//! that state none (noted in the `kubernetes.io/limit-ranger`
//! annotation), then min, max and maxLimitRequestRatio checked per
//! Container, per Pod and per PersistentVolumeClaim, with upstream's
//! messages.

use serde_json::{Map, Value, json};

use crate::quota::{self, Amount, Usage};

pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// The defaults a LimitRange item gets (upstream's
/// SetDefaults_LimitRangeItem): for containers, default limits from max,
/// default requests from the default limits, else from min.
pub fn default_item(item: &mut Value) {
    if item["type"] != "Container" {
        return;
    }
    for field in ["default", "defaultRequest"] {
        if !item[field].is_object() {
            item[field] = json!({});
        }
    }
    let fill = |item: &mut Value, from: &str, to: &str| {
        let source = item[from].as_object().cloned().unwrap_or_default();
        for (name, value) in source {
            if item[to].get(&name).is_none() {
                item[to][name] = value;
            }
        }
    };
    fill(item, "max", "default");
    fill(item, "default", "defaultRequest");
    fill(item, "min", "defaultRequest");
}

fn items<'a>(ranges: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    ranges
        .iter()
        .flat_map(|r| r["spec"]["limits"].as_array().into_iter().flatten())
        .filter(move |i| i["type"] == kind)
}

/// Fills the containers' missing requests and limits from the
/// Container items' defaults; answers what was set, for the annotation.
fn fill_defaults(pod: &mut Value, ranges: &[Value]) -> Vec<String> {
    let mut requests = Map::new();
    let mut limits = Map::new();
    for item in items(ranges, "Container") {
        if let Some(d) = item["defaultRequest"].as_object() {
            requests.extend(d.clone());
        }
        if let Some(d) = item["default"].as_object() {
            limits.extend(d.clone());
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return Vec::new();
    }
    let mut notes = Vec::new();
    for (field, prefix) in [
        ("containers", "container"),
        ("initContainers", "init container"),
    ] {
        let Some(containers) = pod["spec"][field].as_array_mut() else {
            continue;
        };
        for container in containers {
            let name = container["name"].as_str().unwrap_or_default().to_string();
            let resources = &mut container["resources"];
            if !resources.is_object() {
                *resources = json!({});
            }
            let mut set = |which: &str, defaults: &Map<String, Value>| {
                let mut names = Vec::new();
                for (resource, value) in defaults {
                    if resources[which].get(resource).is_none() {
                        if !resources[which].is_object() {
                            resources[which] = json!({});
                        }
                        resources[which][resource] = value.clone();
                        names.push(resource.clone());
                    }
                }
                names.sort();
                names
            };
            let set_limits = set("limits", &limits);
            let set_requests = set("requests", &requests);
            if !set_requests.is_empty() {
                notes.push(format!(
                    "{} request for {prefix} {name}",
                    set_requests.join(", ")
                ));
            }
            if !set_limits.is_empty() {
                notes.push(format!(
                    "{} limit for {prefix} {name}",
                    set_limits.join(", ")
                ));
            }
        }
    }
    notes
}

fn amount(list: &Value, name: &str) -> Option<Amount> {
    list[name].as_str().and_then(Amount::parse)
}

/// Upstream's min, max and ratio constraints of one kind of limit over
/// `requests` and `limits`, each broken one a message.
fn check(kind: &str, item: &Value, requests: &Value, limits: &Value, errors: &mut Vec<String>) {
    let shown = |v: &Value| v.as_str().and_then(Amount::parse).map(|a| a.to_string());
    for (name, enforced) in item["min"].as_object().into_iter().flatten() {
        let Some(min) = enforced.as_str().and_then(Amount::parse) else {
            continue;
        };
        let request = amount(requests, name);
        let limit = amount(limits, name);
        match (request, limit) {
            (None, _) => errors.push(format!(
                "minimum {name} usage per {kind} is {min}.  No request is specified"
            )),
            (Some(r), _) if r.milli < min.milli => errors.push(format!(
                "minimum {name} usage per {kind} is {min}, but request is {}",
                shown(&requests[name]).unwrap_or_default()
            )),
            (_, Some(l)) if l.milli < min.milli => errors.push(format!(
                "minimum {name} usage per {kind} is {min}, but limit is {}",
                shown(&limits[name]).unwrap_or_default()
            )),
            _ => {}
        }
    }
    for (name, enforced) in item["max"].as_object().into_iter().flatten() {
        let Some(max) = enforced.as_str().and_then(Amount::parse) else {
            continue;
        };
        let request = amount(requests, name);
        let limit = amount(limits, name);
        if kind == "PersistentVolumeClaim" {
            if let Some(r) = request
                && r.milli > max.milli
            {
                errors.push(format!(
                    "maximum {name} usage per {kind} is {max}, but request is {}",
                    shown(&requests[name]).unwrap_or_default()
                ));
            }
            continue;
        }
        match (request, limit) {
            (_, None) => errors.push(format!(
                "maximum {name} usage per {kind} is {max}.  No limit is specified"
            )),
            (_, Some(l)) if l.milli > max.milli => errors.push(format!(
                "maximum {name} usage per {kind} is {max}, but limit is {}",
                shown(&limits[name]).unwrap_or_default()
            )),
            (Some(r), _) if r.milli > max.milli => errors.push(format!(
                "maximum {name} usage per {kind} is {max}, but request is {}",
                shown(&requests[name]).unwrap_or_default()
            )),
            _ => {}
        }
    }
    for (name, enforced) in item["maxLimitRequestRatio"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let Some(ratio) = enforced.as_str().and_then(Amount::parse) else {
            continue;
        };
        let request = amount(requests, name).filter(|r| r.milli != 0);
        let limit = amount(limits, name).filter(|l| l.milli != 0);
        let (Some(r), Some(l)) = (request, limit) else {
            let missing = if request.is_none() {
                "request"
            } else {
                "limit"
            };
            errors.push(format!(
                "{name} max limit to request ratio per {kind} is {ratio}, but no {missing} is specified or {missing} is 0"
            ));
            continue;
        };
        let observed = l.milli as f64 / r.milli as f64;
        if observed * 1000.0 > ratio.milli as f64 {
            errors.push(format!(
                "{name} max limit to request ratio per {kind} is {ratio}, but provided ratio is {observed:.6}"
            ));
        }
    }
}

fn to_json(usage: &Usage) -> Value {
    quota::to_list(usage)
}

/// Upstream's aggregate of errors: one as is, more in brackets.
fn aggregate(errors: Vec<String>) -> Result<(), String> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.into_iter().next().unwrap_or_default()),
        _ => Err(format!("[{}]", errors.join(", "))),
    }
}

/// Applies the namespace's LimitRanges to a new pod: defaults, then the
/// checks; `Err` is the message of the 403.
pub fn admit_pod(pod: &mut Value, ranges: &[Value]) -> Result<(), String> {
    let notes = fill_defaults(pod, ranges);
    if !notes.is_empty() {
        let metadata = &mut pod["metadata"];
        if !metadata["annotations"].is_object() {
            metadata["annotations"] = json!({});
        }
        metadata["annotations"][ANNOTATION] =
            json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
    }
    let mut errors = Vec::new();
    for item in items(ranges, "Container") {
        for field in ["containers", "initContainers"] {
            for container in pod["spec"][field].as_array().into_iter().flatten() {
                let resources = &container["resources"];
                check(
                    "Container",
                    item,
                    &resources["requests"],
                    &resources["limits"],
                    &mut errors,
                );
            }
        }
    }
    for item in items(ranges, "Pod") {
        let (requests, limits) = quota::pod_resources(&pod["spec"]);
        check(
            "Pod",
            item,
            &to_json(&requests),
            &to_json(&limits),
            &mut errors,
        );
    }
    aggregate(errors)
}

/// Applies the namespace's LimitRanges to a new claim: min and max of
/// its requested storage.
pub fn admit_claim(claim: &Value, ranges: &[Value]) -> Result<(), String> {
    let mut errors = Vec::new();
    let resources = &claim["spec"]["resources"];
    for item in items(ranges, "PersistentVolumeClaim") {
        check(
            "PersistentVolumeClaim",
            item,
            &resources["requests"],
            &resources["limits"],
            &mut errors,
        );
    }
    aggregate(errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(limits: Value) -> Value {
        let mut r = json!({"spec": {"limits": limits}});
        for item in r["spec"]["limits"].as_array_mut().unwrap() {
            default_item(item);
        }
        r
    }

    #[test]
    fn items_default_from_max_and_min() {
        let mut item = json!({"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}});
        default_item(&mut item);
        assert_eq!(item["default"], json!({"cpu": "2"}));
        assert_eq!(
            item["defaultRequest"],
            json!({"cpu": "2", "memory": "64Mi"})
        );
        let mut pod_item = json!({"type": "Pod", "max": {"cpu": "2"}});
        default_item(&mut pod_item);
        assert!(pod_item.get("default").is_none());
    }

    #[test]
    fn defaults_fill_what_containers_leave_out() {
        let ranges = [range(json!([{"type": "Container",
            "default": {"cpu": "500m", "memory": "256Mi"}, "defaultRequest": {"cpu": "250m"}}]))];
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "web", "resources": {"requests": {"memory": "128Mi"}}},
            {"name": "side", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}}]}});
        admit_pod(&mut pod, &ranges).unwrap();
        assert_eq!(
            pod["spec"]["containers"][0]["resources"],
            json!({"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}})
        );
        assert_eq!(
            pod["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: cpu request for container web; cpu, memory limit for container web; \
             memory request for container side; memory limit for container side",
            "the default limit is the default request too"
        );
    }

    #[test]
    fn min_max_and_ratio_refuse_with_upstreams_messages() {
        let ranges = [range(
            json!([{"type": "Container", "max": {"cpu": "1"}, "min": {"cpu": "100m"},
            "maxLimitRequestRatio": {"memory": "2"}}]),
        )];
        let pod = |resources: Value| json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "resources": resources}]}});
        let mut big = pod(
            json!({"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "2", "memory": "256Mi"}}),
        );
        assert_eq!(
            admit_pod(&mut big, &ranges),
            Err("[maximum cpu usage per Container is 1, but limit is 2, memory max limit to request ratio per Container is 2, but provided ratio is 4.000000]".into())
        );
        let mut small = pod(
            json!({"limits": {"cpu": "50m", "memory": "1Gi"}, "requests": {"cpu": "50m", "memory": "1Gi"}}),
        );
        assert_eq!(
            admit_pod(&mut small, &ranges),
            Err("minimum cpu usage per Container is 100m, but request is 50m".into())
        );
        let mut fine = pod(json!({"requests": {"memory": "1Gi"}, "limits": {"memory": "1Gi"}}));
        assert_eq!(
            admit_pod(&mut fine, &ranges),
            Ok(()),
            "defaults from max fill cpu"
        );
        let per_pod = [range(json!([{"type": "Pod", "max": {"memory": "1Gi"}}]))];
        let mut two = json!({"metadata": {}, "spec": {"containers": [
            {"name": "a", "resources": {"limits": {"memory": "768Mi"}}},
            {"name": "b", "resources": {"limits": {"memory": "768Mi"}}}]}});
        assert_eq!(
            admit_pod(&mut two, &per_pod),
            Err("maximum memory usage per Pod is 1Gi, but limit is 1536Mi".into())
        );
        let claims = [range(
            json!([{"type": "PersistentVolumeClaim", "max": {"storage": "2Gi"}}]),
        )];
        let claim = json!({"spec": {"resources": {"requests": {"storage": "5Gi"}}}});
        assert_eq!(
            admit_claim(&claim, &claims),
            Err(
                "maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi".into()
            )
        );
    }
}
