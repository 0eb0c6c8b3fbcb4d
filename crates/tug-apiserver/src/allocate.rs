//! Cluster IPs and node ports for Services, allocated at create as
//! kube-apiserver allocates them.
//!
//! Each address or port in use is a key in the store
//! (`/registry/ranges/serviceips/<ip>`, `/registry/ranges/servicenodeports/<port>`),
//! claimed with a create, so two servers or two requests can never hand out
//! the same one; deleting the Service releases them.

use std::net::Ipv4Addr;

use serde_json::{Value, json};
use tug_store::{PutOptions, Store};

use crate::status::{ApiError, from_store};

const IP_PREFIX: &str = "/registry/ranges/serviceips/";
const PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";
/// Upstream's default `--service-node-port-range`.
pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;
/// Addresses tried before giving up on a full range.
const ATTEMPTS_MAX: u32 = 4096;

/// The Service CIDR, IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceCidr {
    base: u32,
    prefix: u8,
}

impl ServiceCidr {
    pub fn parse(cidr: &str) -> Result<Self, String> {
        let (ip, bits) = cidr
            .split_once('/')
            .ok_or_else(|| format!("{cidr:?} is not a CIDR"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{cidr:?}: only IPv4 service CIDRs are supported"))?;
        let prefix: u8 = bits
            .parse()
            .map_err(|_| format!("{cidr:?} has a bad prefix length"))?;
        if !(8..=30).contains(&prefix) {
            return Err(format!(
                "{cidr:?}: the prefix length must be between 8 and 30"
            ));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Self {
            base: u32::from(ip) & mask,
            prefix,
        })
    }

    fn size(&self) -> u32 {
        1 << (32 - self.prefix)
    }

    /// The address of the `kubernetes` Service: the first in the range.
    pub fn kubernetes_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        ip > self.base && ip < self.base + self.size() - 1
    }

    /// The `n`th candidate address, skipping the network, the first address
    /// (the kubernetes Service's, claimed by name) and broadcast.
    fn candidate(&self, n: u32) -> Ipv4Addr {
        let usable = self.size() - 3;
        Ipv4Addr::from(self.base + 2 + n % usable)
    }
}

fn invalid(field: &str, value: &Value, message: &str, name: &str) -> ApiError {
    ApiError::invalid(
        "Service",
        "",
        name,
        vec![(
            "FieldValueInvalid".into(),
            field.into(),
            format!("Invalid value: {value}: {message}"),
        )],
    )
}

async fn claim(store: &dyn Store, key: String, owner: &str) -> Result<bool, ApiError> {
    match store
        .create(
            &key,
            owner.as_bytes().to_vec().into(),
            PutOptions::default(),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(tug_store::Error::AlreadyExists { .. }) => Ok(false),
        Err(err) => Err(from_store(err)),
    }
}

/// A Service's name, and `namespace/name`, which its claims record.
fn name_and_owner(object: &Value) -> (String, String) {
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
    (name.clone(), format!("{namespace}/{name}"))
}

fn random() -> u32 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// Gives a new Service its cluster IP and node ports; answers what it took,
/// for [`release`] if the create fails after all.
pub async fn service(
    store: &dyn Store,
    cidr: ServiceCidr,
    object: &mut Value,
) -> Result<Vec<String>, ApiError> {
    let (name, owner) = name_and_owner(object);
    let mut claimed = Vec::new();
    let result = allocate(store, cidr, object, &name, &owner, &mut claimed).await;
    if result.is_err() {
        release(store, &claimed).await;
    }
    result.map(|()| claimed)
}

async fn allocate(
    store: &dyn Store,
    cidr: ServiceCidr,
    object: &mut Value,
    name: &str,
    owner: &str,
    claimed: &mut Vec<String>,
) -> Result<(), ApiError> {
    let spec = &mut object["spec"];
    let kind = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    if kind == "ExternalName" {
        return Ok(());
    }
    match spec["clusterIP"].as_str() {
        Some("None") => {
            spec["clusterIPs"] = json!(["None"]);
        }
        Some(requested) if !requested.is_empty() => {
            let ip: Ipv4Addr = requested.parse().map_err(|_| {
                invalid(
                    "spec.clusterIPs",
                    &json!([requested]),
                    "must be a valid IP address",
                    name,
                )
            })?;
            if !cidr.contains(ip) {
                return Err(invalid(
                    "spec.clusterIPs",
                    &json!([requested]),
                    &format!(
                        "failed to allocate IP {requested}: the provided IP ({requested}) is not in the valid range"
                    ),
                    name,
                ));
            }
            let key = format!("{IP_PREFIX}{ip}");
            if !claim(store, key.clone(), owner).await? {
                return Err(invalid(
                    "spec.clusterIPs",
                    &json!([requested]),
                    &format!("failed to allocate IP {requested}: provided IP is already allocated"),
                    name,
                ));
            }
            claimed.push(key);
            spec["clusterIPs"] = json!([requested]);
        }
        _ => {
            let start = random();
            let mut found = None;
            for n in 0..ATTEMPTS_MAX.min(cidr.size()) {
                let ip = cidr.candidate(start.wrapping_add(n));
                let key = format!("{IP_PREFIX}{ip}");
                if claim(store, key.clone(), owner).await? {
                    claimed.push(key);
                    found = Some(ip);
                    break;
                }
            }
            let ip = found.ok_or_else(|| {
                ApiError::internal("failed to allocate a serviceIP: range is full")
            })?;
            spec["clusterIP"] = json!(ip.to_string());
            spec["clusterIPs"] = json!([ip.to_string()]);
        }
    }
    spec["ipFamilies"] = json!(["IPv4"]);
    spec["ipFamilyPolicy"] = json!("SingleStack");
    if kind == "NodePort" || kind == "LoadBalancer" {
        claimed.extend(node_ports(store, &[], object).await?);
    }
    Ok(())
}

/// On create or update: a Service that is NodePort or LoadBalancer gets node
/// ports for ports without one; one that is not loses them. `held` is what
/// the Service held before. Answers the keys newly claimed.
pub async fn node_ports(
    store: &dyn Store,
    held: &[String],
    object: &mut Value,
) -> Result<Vec<String>, ApiError> {
    let (name, owner) = name_and_owner(object);
    let wants = matches!(
        object["spec"]["type"].as_str(),
        Some("NodePort" | "LoadBalancer")
    );
    let mut claimed = Vec::new();
    let ports = object["spec"]["ports"]
        .as_array_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let mut result = Vec::with_capacity(ports.len());
    let span = u32::from(NODE_PORTS.end() - NODE_PORTS.start()) + 1;
    for (i, mut port) in ports.into_iter().enumerate() {
        if !wants {
            if let Some(port) = port.as_object_mut() {
                port.remove("nodePort");
            }
            result.push(port);
            continue;
        }
        match port["nodePort"].as_u64().filter(|p| *p != 0) {
            Some(requested) => {
                let key = format!("{PORT_PREFIX}{requested}");
                if !held.contains(&key) {
                    let valid = u16::try_from(requested)
                        .ok()
                        .is_some_and(|p| NODE_PORTS.contains(&p));
                    if !valid || !claim(store, key.clone(), &owner).await? {
                        release(store, &claimed).await;
                        let message = if valid {
                            "provided port is already allocated"
                        } else {
                            "provided port is not in the valid range. The range of valid ports is 30000-32767"
                        };
                        return Err(invalid(
                            &format!("spec.ports[{i}].nodePort"),
                            &json!(requested),
                            message,
                            &name,
                        ));
                    }
                    claimed.push(key);
                }
            }
            None => {
                let start = random();
                let mut found = None;
                for n in 0..span {
                    let candidate = NODE_PORTS.start() + (start.wrapping_add(n) % span) as u16;
                    let key = format!("{PORT_PREFIX}{candidate}");
                    if claim(store, key.clone(), &owner).await? {
                        claimed.push(key);
                        found = Some(candidate);
                        break;
                    }
                }
                let Some(found) = found else {
                    release(store, &claimed).await;
                    return Err(ApiError::internal(
                        "failed to allocate a nodePort: range is full",
                    ));
                };
                port["nodePort"] = json!(found);
            }
        }
        result.push(port);
    }
    object["spec"]["ports"] = Value::Array(result);
    if wants {
        set_external_traffic_policy(&mut object["spec"]);
    }
    Ok(claimed)
}

fn set_external_traffic_policy(spec: &mut Value) {
    if spec["externalTrafficPolicy"].is_null() {
        spec["externalTrafficPolicy"] = json!("Cluster");
    }
}

/// The keys a Service holds in the ranges.
pub fn held_by(object: &Value) -> Vec<String> {
    let mut keys: Vec<String> = object["spec"]["clusterIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|ip| *ip != "None")
        .map(|ip| format!("{IP_PREFIX}{ip}"))
        .collect();
    keys.extend(
        object["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["nodePort"].as_u64())
            .map(|port| format!("{PORT_PREFIX}{port}")),
    );
    keys
}

/// Gives back what a Service held. A failure leaves a key behind, which
/// only makes that address unavailable; it is logged, not returned.
pub async fn release(store: &dyn Store, keys: &[String]) {
    for key in keys {
        match store.delete(key, None).await {
            Ok(_) | Err(tug_store::Error::NotFound { .. }) => {}
            Err(err) => tracing::warn!(%key, error = %err, "releasing a service allocation failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_cidr_skips_network_kubernetes_and_broadcast() {
        let cidr = ServiceCidr::parse("10.43.0.0/16").unwrap();
        assert_eq!(cidr.kubernetes_ip(), Ipv4Addr::new(10, 43, 0, 1));
        assert_eq!(cidr.candidate(0), Ipv4Addr::new(10, 43, 0, 2));
        assert_eq!(cidr.candidate(65_532), Ipv4Addr::new(10, 43, 255, 254));
        assert_eq!(cidr.candidate(65_533), Ipv4Addr::new(10, 43, 0, 2));
        assert!(cidr.contains(Ipv4Addr::new(10, 43, 9, 9)));
        assert!(!cidr.contains(Ipv4Addr::new(10, 44, 0, 1)));
        assert!(!cidr.contains(Ipv4Addr::new(10, 43, 255, 255)));
        assert_eq!(ServiceCidr::parse("10.43.7.9/16").unwrap(), cidr);
        assert!(ServiceCidr::parse("fd00::/108").is_err());
        assert!(ServiceCidr::parse("10.43.0.0/31").is_err());
    }

    #[test]
    fn a_service_holds_its_ips_and_node_ports() {
        let service = json!({"spec": {"clusterIPs": ["10.43.0.9"], "ports": [{"port": 80, "nodePort": 30001}, {"port": 81}]}});
        assert_eq!(
            held_by(&service),
            [
                "/registry/ranges/serviceips/10.43.0.9",
                "/registry/ranges/servicenodeports/30001"
            ]
        );
        assert!(held_by(&json!({"spec": {"clusterIPs": ["None"]}})).is_empty());
    }
}
