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
