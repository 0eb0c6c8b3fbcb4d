//! EndpointSlices and Endpoints for Services with selectors, as the
//! endpointslice and endpoints controllers write them: one endpoint per
//! pod with an IP that matches the selector, its conditions (ready,
//! serving, terminating), its node and zone, its ports resolved by name
//! on the pod; slices of at most 100 endpoints per port set; the legacy
//! Endpoints object with ready and not-ready addresses.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Node, ObjectReference, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{self as discovery, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};

use crate::informer::{Informer, key_of};
use crate::pods;
use crate::workqueue::WorkQueue;

pub const COMPONENT: &str = "endpointslice-controller";
pub const ENDPOINTS_COMPONENT: &str = "endpoint-controller";
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGER: &str = "endpointslice-controller.k8s.io";
/// Endpoints per slice (upstream's --max-endpoints-per-slice default).
pub const SLICE_MAX: usize = 100;
/// Addresses in an Endpoints object at most.
const ENDPOINTS_MAX: usize = 1000;
const ZONE: &str = "topology.kubernetes.io/zone";

/// The index of EndpointSlices by their Service: `svc:<ns>/<name>`.
pub fn by_service(slice: &EndpointSlice) -> Option<String> {
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME)?;
    Some(format!(
        "svc:{}/{name}",
        slice.metadata.namespace.as_deref().unwrap_or("")
    ))
}

/// A Service's selector, if it has a usable one.
fn selector_of(service: &Service) -> Option<LabelSelector> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    let labels = spec.selector.clone().filter(|s| !s.is_empty())?;
    Some(LabelSelector {
        match_labels: Some(labels),
        match_expressions: None,
    })
}

/// Whether a pod belongs among a Service's endpoints at all.
fn included(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let has_ip = status
        .and_then(|s| s.pod_ip.as_deref())
        .is_some_and(|ip| !ip.is_empty());
    let phase = status.and_then(|s| s.phase.as_deref());
    has_ip && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// One endpoint, before it is written as a slice's or an Endpoints'.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub ip: String,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node: Option<String>,
    pub zone: Option<String>,
    pub hostname: Option<String>,
    pub pod: ObjectReference,
}

/// A Service's port as served by one pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Port {
    pub name: Option<String>,
    pub port: i32,
    pub protocol: String,
    pub app_protocol: Option<String>,
}

/// The pod's ports for the Service's: numbers as they are, names looked
/// up among the pod's container ports (a name it lacks leaves that port
/// out).
fn ports_for(service: &Service, pod: &Pod) -> Vec<Port> {
    let spec = service.spec.clone().unwrap_or_default();
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let mut ports = Vec::new();
    for p in spec.ports.unwrap_or_default() {
        let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        let number = match &p.target_port {
            None => Some(p.port),
            Some(IntOrString::Int(n)) => Some(*n),
            Some(IntOrString::String(name)) => containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|cp| {
                    cp.name.as_deref() == Some(name.as_str())
                        && cp.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|cp| cp.container_port),
        };
        if let Some(port) = number {
            ports.push(Port {
                name: p.name.clone(),
                port,
                protocol,
                app_protocol: p.app_protocol.clone(),
            });
        }
    }
    ports
}

/// The Service's endpoints grouped by port set, each group sorted by IP.
pub fn members(
    service: &Service,
    pods: &[Arc<Pod>],
    zone_of: impl Fn(&str) -> Option<String>,
) -> Vec<(Vec<Port>, Vec<Member>)> {
    let publish = service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let subdomain_match = |pod: &Pod| {
        pod.spec.as_ref().and_then(|s| s.subdomain.as_deref()) == service.metadata.name.as_deref()
    };
    let mut groups: BTreeMap<Vec<Port>, Vec<Member>> = BTreeMap::new();
    for pod in pods.iter().filter(|p| included(p)) {
        let ready = pods::is_ready(pod);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        let member = Member {
            ip: pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_default(),
            ready: publish || (ready && !terminating),
            serving: publish || ready,
            terminating,
            zone: node.as_deref().and_then(&zone_of),
            node,
            hostname: pod
                .spec
                .as_ref()
                .and_then(|s| s.hostname.clone())
                .filter(|_| subdomain_match(pod)),
            pod: ObjectReference {
                kind: Some("Pod".into()),
                namespace: pod.metadata.namespace.clone(),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
                ..ObjectReference::default()
            },
        };
        groups
            .entry(ports_for(service, pod))
            .or_default()
            .push(member);
    }
    groups
        .into_iter()
        .map(|(ports, mut members)| {
            members
                .sort_by(|a, b| ip_order(&a.ip, &b.ip).then_with(|| a.pod.name.cmp(&b.pod.name)));
            (ports, members)
        })
        .collect()
}

fn ip_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<std::net::IpAddr>(), b.parse::<std::net::IpAddr>()) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        _ => a.cmp(b),
    }
}

fn labels_for(service: &Service, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = service
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k != SERVICE_NAME && k != MANAGED_BY)
        .collect();
    for (k, v) in extra {
        labels.insert(k.to_string(), v.to_string());
    }
    if service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert("service.kubernetes.io/headless".into(), String::new());
    }
    labels
}

/// The slices a Service should have: per port set, chunks of at most
/// [`SLICE_MAX`] endpoints (a Service without endpoints has one empty
/// slice, as upstream's).
pub fn desired_slices(
    service: &Service,
    groups: &[(Vec<Port>, Vec<Member>)],
) -> Vec<EndpointSlice> {
    let name = service.name_any();
    let labels = labels_for(service, &[(SERVICE_NAME, &name), (MANAGED_BY, MANAGER)]);
    let owner = pods::controller_ref("v1", "Service", &service.metadata);
    let slice = |ports: &[Port], members: &[Member]| EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: service.metadata.namespace.clone(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: members
            .iter()
            .map(|m| discovery::Endpoint {
                addresses: vec![m.ip.clone()],
                conditions: Some(EndpointConditions {
                    ready: Some(m.ready),
                    serving: Some(m.serving),
                    terminating: Some(m.terminating),
                }),
                node_name: m.node.clone(),
                zone: m.zone.clone(),
                hostname: m.hostname.clone(),
                target_ref: Some(m.pod.clone()),
                ..discovery::Endpoint::default()
            })
            .collect(),
        ports: Some(
            ports
                .iter()
                .map(|p| discovery::EndpointPort {
                    name: Some(p.name.clone().unwrap_or_default()),
                    port: Some(p.port),
                    protocol: Some(p.protocol.clone()),
                    app_protocol: p.app_protocol.clone(),
                })
                .collect(),
        ),
    };
    let mut slices = Vec::new();
    for (ports, members) in groups {
        for chunk in members.chunks(SLICE_MAX) {
            slices.push(slice(ports, chunk));
        }
    }
    if slices.is_empty() {
        let ports = service
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| match p.target_port {
                Some(IntOrString::String(_)) => None,
                target => Some(Port {
                    name: p.name,
                    port: match target {
                        Some(IntOrString::Int(n)) => n,
                        _ => p.port,
                    },
                    protocol: p.protocol.unwrap_or_else(|| "TCP".into()),
                    app_protocol: p.app_protocol,
                }),
            })
            .collect::<Vec<_>>();
        let mut empty = slice(&ports, &[]);
        empty.ports = None;
        slices.push(empty);
    }
    slices
}

/// The legacy Endpoints object: ready addresses and not-ready ones (no
/// terminating pods unless publishNotReadyAddresses), one subset per
/// port set, at most 1000 addresses.
pub fn desired_endpoints(service: &Service, groups: &[(Vec<Port>, Vec<Member>)]) -> Endpoints {
    let publish = service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let mut total = 0;
    let mut truncated = false;
    let mut subsets = Vec::new();
    for (ports, members) in groups {
        let address = |m: &Member| EndpointAddress {
            ip: m.ip.clone(),
            node_name: m.node.clone(),
            hostname: m.hostname.clone(),
            target_ref: Some(m.pod.clone()),
        };
        let (mut ready, mut not_ready) = (Vec::new(), Vec::new());
        for m in members {
            if m.terminating && !publish {
                continue;
            }
            if total == ENDPOINTS_MAX {
                truncated = true;
                break;
            }
            total += 1;
            if m.ready {
                ready.push(address(m))
            } else {
                not_ready.push(address(m))
            }
        }
        if ready.is_empty() && not_ready.is_empty() {
            continue;
        }
        subsets.push(EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: Some(
                ports
                    .iter()
                    .map(|p| EndpointPort {
                        name: p.name.clone(),
                        port: p.port,
                        protocol: Some(p.protocol.clone()),
                        app_protocol: p.app_protocol.clone(),
                    })
                    .collect(),
            ),
        });
    }
    let mut annotations = BTreeMap::new();
    if truncated {
        annotations.insert(
            "endpoints.kubernetes.io/over-capacity".to_string(),
            "truncated".to_string(),
        );
    }
    Endpoints {
        metadata: ObjectMeta {
            name: service.metadata.name.clone(),
            namespace: service.metadata.namespace.clone(),
            labels: Some(labels_for(service, &[])).filter(|l| !l.is_empty()),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..ObjectMeta::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

struct Controller {
    client: Client,
    services: Informer<Service>,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    slices: Informer<EndpointSlice>,
    endpoints: Informer<Endpoints>,
    queue: WorkQueue,
}

impl Controller {
    fn queue_services_of(&self, pod: &Pod) {
        let namespace = pod.namespace().unwrap_or_default();
        for service in self.services.in_namespace(&namespace) {
            if let Some(selector) = selector_of(&service)
                && pods::selects(Some(&selector), pod.metadata.labels.as_ref())
            {
                self.queue.add(&key_of(service.as_ref()));
            }
        }
    }

    fn zone_of(&self, node: &str) -> Option<String> {
        self.nodes.get(node)?.labels().get(ZONE).cloned()
    }

    async fn sync(&self, key: &str) -> anyhow::Result<Option<std::time::Duration>> {
        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
        let endpoints_api: Api<Endpoints> = Api::namespaced(self.client.clone(), namespace);
        let Some(service) = self.services.get(key) else {
            // Slices go with their owner; the Endpoints object is ours to remove.
            if self.endpoints.get(key).is_some() {
                match endpoints_api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(err) => return Err(err.into()),
                }
            }
            return Ok(None);
        };
        let Some(selector) = selector_of(&service) else {
            return Ok(None);
        };
        let selected: Vec<Arc<Pod>> = self
            .pods
            .in_namespace(namespace)
            .into_iter()
            .filter(|p| pods::selects(Some(&selector), p.metadata.labels.as_ref()))
            .collect();
        let groups = members(&service, &selected, |node| self.zone_of(node));
        self.write_slices(&service, &groups).await?;
        self.write_endpoints(&service, &groups, &endpoints_api)
            .await?;
        Ok(None)
    }

    async fn write_slices(
        &self,
        service: &Service,
        groups: &[(Vec<Port>, Vec<Member>)],
    ) -> anyhow::Result<()> {
        let namespace = service.namespace().unwrap_or_default();
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &namespace);
        let mut existing: Vec<Arc<EndpointSlice>> = self
            .slices
            .indexed(&format!("svc:{}", key_of(service)))
            .into_iter()
            .filter(|s| {
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(MANAGED_BY))
                    .map(String::as_str)
                    == Some(MANAGER)
            })
            .collect();
        existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let desired = desired_slices(service, groups);
        let mut existing = existing.into_iter();
        for want in desired {
            match existing.next() {
                Some(have) => {
                    let same = have.endpoints == want.endpoints
                        && have.ports == want.ports
                        && have.metadata.labels == want.metadata.labels
                        && have.address_type == want.address_type;
                    if same {
                        continue;
                    }
                    let mut update = want;
                    update.metadata.name = have.metadata.name.clone();
                    update.metadata.generate_name = None;
                    update.metadata.resource_version = have.metadata.resource_version.clone();
                    api.replace(&have.name_any(), &PostParams::default(), &update)
                        .await?;
                }
                None => {
                    api.create(&PostParams::default(), &want).await?;
                }
            }
        }
        for extra in existing {
            match api
                .delete(&extra.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    async fn write_endpoints(
        &self,
        service: &Service,
        groups: &[(Vec<Port>, Vec<Member>)],
        api: &Api<Endpoints>,
    ) -> anyhow::Result<()> {
        let want = desired_endpoints(service, groups);
        match self.endpoints.get(&key_of(service)) {
            Some(have) => {
                if have.subsets == want.subsets
                    && have.metadata.labels == want.metadata.labels
                    && have.metadata.annotations == want.metadata.annotations
                {
                    return Ok(());
                }
                let mut update = want;
                update.metadata.resource_version = have.metadata.resource_version.clone();
                api.replace(&service.name_any(), &PostParams::default(), &update)
                    .await?;
            }
            None => match api.create(&PostParams::default(), &want).await {
                Ok(_) => {}
                // Made meanwhile (the cache lags): the next sync updates it.
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    anyhow::bail!("Endpoints {} exists already", key_of(service))
                }
                Err(err) => return Err(err.into()),
            },
        }
        Ok(())
    }
}

/// Starts the controller (EndpointSlices and Endpoints together).
pub(crate) fn start(ctx: &crate::Context) -> crate::Running {
    let controller = Arc::new(Controller {
        client: ctx.client.clone(),
        services: ctx.services.clone(),
        pods: ctx.pods.clone(),
        nodes: ctx.nodes.clone(),
        slices: ctx.endpoint_slices.clone(),
        endpoints: ctx.endpoints.clone(),
        queue: WorkQueue::default(),
    });
    let c = controller.clone();
    ctx.services.subscribe(Box::new(move |old, new| {
        if let Some(service) = new.or(old) {
            c.queue.add(&key_of(service.as_ref()));
        }
    }));
    let c = controller.clone();
    ctx.pods.subscribe(Box::new(move |old, new| {
        if let (Some(old), Some(new)) = (old, new)
            && old.metadata.resource_version == new.metadata.resource_version
        {
            return;
        }
        let mut seen = HashSet::new();
        for pod in [old, new].into_iter().flatten() {
            if seen.insert(pod.metadata.labels.clone()) {
                c.queue_services_of(pod);
            }
        }
    }));
    let c = controller.clone();
    ctx.endpoint_slices.subscribe(Box::new(move |old, new| {
        // A managed slice changed or removed by someone else: put it right.
        let Some(slice) = new.or(old) else { return };
        let labels = slice.metadata.labels.clone().unwrap_or_default();
        if labels.get(MANAGED_BY).map(String::as_str) == Some(MANAGER)
            && let Some(service) = labels.get(SERVICE_NAME)
        {
            c.queue.add(&format!(
                "{}/{service}",
                slice.namespace().unwrap_or_default()
            ));
        }
    }));
    crate::Running::workers(COMPONENT, controller.queue.clone(), 5, move |key| {
        let c = controller.clone();
        async move { c.sync(&key).await }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn service(extra: Value) -> Service {
        let mut v = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "s1", "labels": {"app": "web"}},
            "spec": {"selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "metrics", "port": 9090, "targetPort": 9091},
            ]},
        });
        if let Some(spec) = extra.get("spec") {
            for (k, val) in spec.as_object().unwrap() {
                v["spec"][k] = val.clone();
            }
        }
        serde_json::from_value(v).unwrap()
    }

    fn pod(name: &str, ip: &str, ready: bool, extra: Value) -> Arc<Pod> {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        });
        for (k, val) in extra.as_object().unwrap() {
            for (k2, val2) in val.as_object().unwrap() {
                v[k][k2] = val2.clone();
            }
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn endpoints_carry_conditions_and_named_ports() {
        let svc = service(json!({}));
        let pods = vec![
            pod("b", "10.0.0.10", true, json!({})),
            pod("a", "10.0.0.9", false, json!({})),
            pod(
                "gone",
                "10.0.0.11",
                true,
                json!({"metadata": {"deletionTimestamp": "2026-11-30T10:00:00Z"}}),
            ),
            pod(
                "done",
                "10.0.0.12",
                true,
                json!({"status": {"phase": "Succeeded"}}),
            ),
            pod("no-ip", "", true, json!({})),
        ];
        let groups = members(&svc, &pods, |_| Some("z1".into()));
        assert_eq!(groups.len(), 1);
        let (ports, members) = &groups[0];
        assert_eq!(
            ports
                .iter()
                .map(|p| (p.name.as_deref(), p.port))
                .collect::<Vec<_>>(),
            [(Some("http"), 8080), (Some("metrics"), 9091)]
        );
        let summary: Vec<_> = members
            .iter()
            .map(|m| (m.ip.as_str(), m.ready, m.serving, m.terminating))
            .collect();
        assert_eq!(
            summary,
            [
                ("10.0.0.9", false, false, false),
                ("10.0.0.10", true, true, false),
                ("10.0.0.11", false, true, true),
            ]
        );
        let slices = desired_slices(&svc, &groups);
        assert_eq!(slices.len(), 1);
        let labels = slices[0].metadata.labels.clone().unwrap();
        assert_eq!(
            (
                labels[SERVICE_NAME].as_str(),
                labels[MANAGED_BY].as_str(),
                labels["app"].as_str()
            ),
            ("web", MANAGER, "web")
        );
        assert_eq!(slices[0].endpoints[1].zone.as_deref(), Some("z1"));
        let endpoints = desired_endpoints(&svc, &groups);
        let subset = &endpoints.subsets.unwrap()[0];
        assert_eq!(
            subset
                .addresses
                .as_ref()
                .unwrap()
                .iter()
                .map(|a| a.ip.as_str())
                .collect::<Vec<_>>(),
            ["10.0.0.10"]
        );
        assert_eq!(
            subset
                .not_ready_addresses
                .as_ref()
                .unwrap()
                .iter()
                .map(|a| a.ip.as_str())
                .collect::<Vec<_>>(),
            ["10.0.0.9"]
        );
    }

    #[test]
    fn many_endpoints_split_into_slices_and_none_leave_one_empty_slice() {
        let svc = service(json!({}));
        let pods: Vec<_> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.1.{}.{}", i / 200, i % 200),
                    true,
                    json!({}),
                )
            })
            .collect();
        let groups = members(&svc, &pods, |_| None);
        let sizes: Vec<usize> = desired_slices(&svc, &groups)
            .iter()
            .map(|s| s.endpoints.len())
            .collect();
        assert_eq!(sizes, [100, 100, 50]);
        let empty = desired_slices(&svc, &[]);
        assert_eq!(empty.len(), 1);
        assert!(empty[0].endpoints.is_empty());
        assert!(desired_endpoints(&svc, &[]).subsets.is_none());
        // publishNotReadyAddresses: every pod counts as ready.
        let publish = service(json!({"spec": {"publishNotReadyAddresses": true}}));
        let groups = members(&publish, &[pod("a", "10.0.0.1", false, json!({}))], |_| {
            None
        });
        assert!(groups[0].1[0].ready);
    }

    #[test]
    fn services_without_a_selector_or_external_names_are_left_alone() {
        let mut svc = service(json!({}));
        svc.spec.as_mut().unwrap().selector = None;
        assert!(selector_of(&svc).is_none());
        let external = service(json!({"spec": {"type": "ExternalName"}}));
        assert!(selector_of(&external).is_none());
    }
}
