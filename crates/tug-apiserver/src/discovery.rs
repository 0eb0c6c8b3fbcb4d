//! Discovery: `/api`, `/apis`, aggregated discovery (v2 and v2beta1, chosen
//! by the Accept header as kubectl 1.27+ asks), and per-group-version
//! resource lists.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tug_api::registry::{self, Resource};

/// What a discovery request's Accept header asks for, in its own order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    AggregatedV2,
    AggregatedV2Beta1,
    Plain,
}

pub fn flavor(headers: &HeaderMap) -> Flavor {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    for media in accept.split(',') {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        let aggregated = params.contains(&"g=apidiscovery.k8s.io")
            && params.contains(&"as=APIGroupDiscoveryList");
        if aggregated && params.contains(&"v=v2") {
            return Flavor::AggregatedV2;
        }
        if aggregated && params.contains(&"v=v2beta1") {
            return Flavor::AggregatedV2Beta1;
        }
        if !aggregated {
            return Flavor::Plain;
        }
    }
    Flavor::Plain
}

fn json_response(body: Value, content_type: &'static str) -> Response {
    let mut response = serde_json::to_vec(&body)
        .unwrap_or_default()
        .into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn scope(resource: &Resource) -> &'static str {
    if resource.namespaced {
        "Namespaced"
    } else {
        "Cluster"
    }
}

/// What a subresource answers: tokens, bindings and evictions are
/// created, the others read and written.
fn subresource_verbs(subresource: &str) -> &'static [&'static str] {
    if Resource::create_only(subresource) {
        &["create"]
    } else if Resource::streaming(subresource) {
        &["create", "get"]
    } else if subresource == "log" {
        &["get"]
    } else {
        &["get", "patch", "update"]
    }
}

fn aggregated_resource(resource: &Resource) -> Value {
    let kind = json!({"group": resource.group, "version": resource.version, "kind": resource.kind});
    let subresources: Vec<Value> = resource
        .subresources
        .iter()
        .map(|sub| {
            let (group, version, kind) = resource.subresource_kind(sub);
            json!({
                "subresource": sub,
                "responseKind": {"group": group, "version": version, "kind": kind},
                "verbs": subresource_verbs(sub),
            })
        })
        .collect();
    let mut entry = json!({
        "resource": resource.plural,
        "responseKind": kind,
        "scope": scope(resource),
        "singularResource": resource.singular,
        "verbs": resource.verbs(),
    });
    if !resource.short_names.is_empty() {
        entry["shortNames"] = json!(resource.short_names);
    }
    if !resource.categories.is_empty() {
        entry["categories"] = json!(resource.categories);
    }
    if !subresources.is_empty() {
        entry["subresources"] = json!(subresources);
    }
    entry
}

fn aggregated(core: bool, flavor: Flavor) -> Response {
    let (api_version, content_type) = match flavor {
        Flavor::AggregatedV2Beta1 => (
            "apidiscovery.k8s.io/v2beta1",
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
        ),
        _ => (
            "apidiscovery.k8s.io/v2",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        ),
    };
    let items: Vec<Value> = registry::group_versions()
        .into_iter()
        .filter(|(group, _)| group.is_empty() == core)
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|version| {
                    let resources: Vec<Value> = registry::in_group_version(group, version)
                        .map(aggregated_resource)
                        .collect();
                    json!({"version": version, "resources": resources, "freshness": "Current"})
                })
                .collect();
            let mut metadata = json!({"creationTimestamp": null});
            if !group.is_empty() {
                metadata["name"] = json!(group);
            }
            json!({"metadata": metadata, "versions": versions})
        })
        .collect();
    json_response(
        json!({"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items}),
        content_type,
    )
}

/// `GET /api`
pub fn core_versions(headers: &HeaderMap) -> Response {
    match flavor(headers) {
        Flavor::Plain => json_response(
            json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
            }),
            "application/json",
        ),
        flavor => aggregated(true, flavor),
    }
}

/// A group with its versions, the preferred first.
fn group_entry(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|version| json!({"groupVersion": format!("{group}/{version}"), "version": version}))
        .collect();
    json!({"name": group, "preferredVersion": versions[0], "versions": versions})
}

/// `GET /apis`
pub fn group_list(headers: &HeaderMap) -> Response {
    match flavor(headers) {
        Flavor::Plain => {
            let groups: Vec<Value> = registry::group_versions()
                .into_iter()
                .filter(|(group, _)| !group.is_empty())
                .map(|(group, versions)| group_entry(group, &versions))
                .collect();
            json_response(
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
                "application/json",
            )
        }
        flavor => aggregated(false, flavor),
    }
}

/// `GET /apis/{group}`
pub fn group(group: &str) -> Option<Response> {
    let (group, versions) = registry::group_versions()
        .into_iter()
        .find(|(g, _)| *g == group)?;
    let mut entry = group_entry(group, &versions);
    entry["kind"] = json!("APIGroup");
    entry["apiVersion"] = json!("v1");
    Some(json_response(entry, "application/json"))
}

/// `GET /api/v1`, `GET /apis/{group}/{version}`
pub fn resource_list(group: &str, version: &str) -> Option<Response> {
    let mut resources = Vec::new();
    for resource in registry::in_group_version(group, version) {
        let mut entry = json!({
            "name": resource.plural,
            "singularName": resource.singular,
            "namespaced": resource.namespaced,
            "kind": resource.kind,
            "verbs": resource.verbs(),
        });
        if !resource.short_names.is_empty() {
            entry["shortNames"] = json!(resource.short_names);
        }
        if !resource.categories.is_empty() {
            entry["categories"] = json!(resource.categories);
        }
        resources.push(entry);
        for sub in resource.subresources {
            let (group, version, kind) = resource.subresource_kind(sub);
            let mut entry = json!({
                "name": format!("{}/{sub}", resource.plural),
                "singularName": "",
                "namespaced": resource.namespaced,
                "kind": kind,
                "verbs": subresource_verbs(sub),
            });
            if group != resource.group {
                entry["group"] = json!(group);
                entry["version"] = json!(version);
            }
            resources.push(entry);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json_response(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
        "application/json",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_accept_header_picks_the_discovery_flavor_in_its_own_order() {
        let kubectl_133 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        let kubectl_127 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(flavor(&accept(kubectl_133)), Flavor::AggregatedV2);
        assert_eq!(flavor(&accept(kubectl_127)), Flavor::AggregatedV2Beta1);
        assert_eq!(flavor(&accept("application/json, */*")), Flavor::Plain);
        assert_eq!(flavor(&HeaderMap::new()), Flavor::Plain);
    }
}
