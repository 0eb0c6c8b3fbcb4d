//! Versions of a kind that share storage with another: the stored form is
//! one (as upstream's internal version), each served version converts to
//! and from it. Today: events.k8s.io/v1 Events, stored as core v1 Events
//! so that `kubectl get events` and `describe` see what new clients record;
//! autoscaling/v1 HorizontalPodAutoscalers, stored as autoscaling/v2.

use serde_json::{Map, Value, json};

use crate::registry::Resource;

/// Field names that differ: (served, stored).
const EVENTS_V1: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
];

fn renames(resource: &Resource) -> &'static [(&'static str, &'static str)] {
    match (resource.group, resource.plural) {
        ("events.k8s.io", "events") => EVENTS_V1,
        _ => &[],
    }
}

fn rename(object: &mut Value, pairs: impl Iterator<Item = (&'static str, &'static str)>) {
    let Some(map) = object.as_object_mut() else {
        return;
    };
    let mut moved = Map::new();
    for (from, to) in pairs {
        if let Some(value) = map.remove(from) {
            moved.insert(to.to_string(), value);
        }
    }
    map.extend(moved);
}

fn is_hpa_v1(resource: &Resource) -> bool {
    resource.group == "autoscaling" && resource.version == "v1"
}

/// The served form of a stored object.
pub fn from_stored(resource: &Resource, object: &mut Value) {
    rename(
        object,
        renames(resource)
            .iter()
            .map(|&(served, stored)| (stored, served)),
    );
    if is_hpa_v1(resource) {
        hpa_v2_to_v1(object);
    }
}

/// Whether the served form differs from the stored one (or from what the
/// client sent: a Secret's stringData is folded into its data).
pub fn converts(resource: &Resource) -> bool {
    !renames(resource).is_empty() || is_hpa_v1(resource) || is_secret(resource)
}

/// The stored form of an object as a client sent it.
pub fn to_stored(resource: &Resource, object: &mut Value) {
    rename(object, renames(resource).iter().copied());
    if is_hpa_v1(resource) {
        hpa_v1_to_v2(object);
    }
    if is_secret(resource) {
        fold_string_data(object);
    }
}

fn is_secret(resource: &Resource) -> bool {
    resource.group.is_empty() && resource.plural == "secrets"
}

/// A Secret's stringData, write-only, goes into its data (base64), each
/// key overwriting data's, as upstream's conversion does.
fn fold_string_data(secret: &mut Value) {
    use base64::Engine as _;
    let Some(map) = secret.as_object_mut() else {
        return;
    };
    let Some(Value::Object(strings)) = map.remove("stringData") else {
        return;
    };
    if !map.get("data").is_some_and(Value::is_object) {
        map.insert("data".into(), Value::Object(Map::new()));
    }
    if let Some(Value::Object(data)) = map.get_mut("data") {
        for (key, value) in strings {
            let text = value.as_str().unwrap_or_default();
            let encoded = base64::engine::general_purpose::STANDARD.encode(text);
            data.insert(key, Value::String(encoded));
        }
    }
}

/// Whether a v2 metric is the CPU utilization that v1 expresses.
fn is_cpu_utilization(metric: &Value) -> bool {
    metric["type"] == "Resource" && metric["resource"]["name"] == "cpu"
}

/// The first CPU metric's value at `path` (`target` or `current`).
fn cpu_value(metrics: Option<Value>, part: &str) -> Option<Value> {
    let metrics = metrics?;
    let metric = metrics.as_array()?.iter().find(|m| is_cpu_utilization(m))?;
    Some(metric["resource"][part]["averageUtilization"].clone()).filter(|v| !v.is_null())
}

/// autoscaling/v2 -> v1: the CPU utilization target and its current
/// value; v1 has no room for other metrics, behavior or conditions.
fn hpa_v2_to_v1(object: &mut Value) {
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        if let Some(target) = cpu_value(spec.remove("metrics"), "target") {
            spec.insert("targetCPUUtilizationPercentage".into(), target);
        }
        spec.remove("behavior");
    }
    if let Some(status) = object.get_mut("status").and_then(Value::as_object_mut) {
        if let Some(current) = cpu_value(status.remove("currentMetrics"), "current") {
            status.insert("currentCPUUtilizationPercentage".into(), current);
        }
        status.remove("conditions");
    }
}

/// autoscaling/v1 -> v2.
fn hpa_v1_to_v2(object: &mut Value) {
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut)
        && let Some(target) = spec.remove("targetCPUUtilizationPercentage")
    {
        spec.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}}]),
        );
    }
    if let Some(status) = object.get_mut("status").and_then(Value::as_object_mut)
        && let Some(current) = status.remove("currentCPUUtilizationPercentage")
    {
        status.insert(
            "currentMetrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": current}}}]),
        );
    }
}

/// Where a resource's objects are kept: its own prefix, or the one of the
/// version it shares storage with.
pub fn storage_prefix(resource: &Resource) -> String {
    match (resource.group, resource.plural) {
        ("events.k8s.io", "events") => "/registry/events/".to_string(),
        _ => resource.storage_prefix(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry;

    #[test]
    fn a_secrets_string_data_is_stored_in_its_data() {
        let secrets = registry::find("", "v1", "secrets").unwrap();
        let mut secret = json!({"data": {"a": "b2xk", "b": "Yg=="}, "stringData": {"a": "new"}});
        to_stored(secrets, &mut secret);
        assert_eq!(secret, json!({"data": {"a": "bmV3", "b": "Yg=="}}));
        let mut only = json!({"stringData": {"k": "v"}});
        to_stored(secrets, &mut only);
        assert_eq!(only, json!({"data": {"k": "dg=="}}));
        assert!(converts(secrets));
    }

    #[test]
    fn hpa_v1_is_stored_as_v2() {
        let v1 = registry::find("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        let served = json!({
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 70},
            "status": {"currentReplicas": 2, "desiredReplicas": 2, "currentCPUUtilizationPercentage": 40},
        });
        let mut stored = served.clone();
        to_stored(v1, &mut stored);
        assert_eq!(
            stored["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            70
        );
        assert_eq!(
            stored["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"],
            40
        );
        assert_eq!(stored["spec"].get("targetCPUUtilizationPercentage"), None);
        from_stored(v1, &mut stored);
        assert_eq!(stored, served);
        // v2 is the stored form itself.
        let v2 = registry::find("autoscaling", "v2", "horizontalpodautoscalers").unwrap();
        let mut same = stored.clone();
        to_stored(v2, &mut same);
        assert_eq!(same, stored);
    }

    #[test]
    fn events_v1_round_trip_through_the_core_form() {
        let events = registry::find("events.k8s.io", "v1", "events").unwrap();
        let served = json!({
            "metadata": {"name": "e"},
            "regarding": {"kind": "Pod", "name": "web"},
            "note": "Started container",
            "reason": "Started",
            "reportingController": "tug-agent",
            "deprecatedCount": 2,
        });
        let mut stored = served.clone();
        to_stored(events, &mut stored);
        assert_eq!(stored["involvedObject"]["name"], "web");
        assert_eq!(stored["message"], "Started container");
        assert_eq!(stored["reportingComponent"], "tug-agent");
        assert_eq!(stored["count"], 2);
        assert_eq!(stored["reason"], "Started");
        assert_eq!(stored.get("note"), None);
        from_stored(events, &mut stored);
        assert_eq!(stored, served);
        assert_eq!(storage_prefix(events), "/registry/events/");
        let core = registry::find("", "v1", "events").unwrap();
        assert_eq!(storage_prefix(core), "/registry/events/");
    }
}
