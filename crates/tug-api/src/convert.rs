//! Versions of a kind that share storage with another: the stored form is
//! one (as upstream's internal version), each served version converts to
//! and from it. Today: events.k8s.io/v1 Events, stored as core v1 Events
//! so that `kubectl get events` and `describe` see what new clients record.

use serde_json::{Map, Value};

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

/// The served form of a stored object.
pub fn from_stored(resource: &Resource, object: &mut Value) {
    rename(
        object,
        renames(resource)
            .iter()
            .map(|&(served, stored)| (stored, served)),
    );
}

/// The stored form of an object as a client sent it.
pub fn to_stored(resource: &Resource, object: &mut Value) {
    rename(object, renames(resource).iter().copied());
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
