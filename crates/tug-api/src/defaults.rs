//! Defaults set on create, as upstream's `SetDefaults_*` functions set them
//! for the built-in kinds (objects are JSON here).

use serde_json::{Value, json};

fn set(object: &mut Value, field: &str, value: Value) {
    if object.get(field).is_none_or(Value::is_null) {
        object[field] = value;
    }
}

/// The image pull policy upstream picks: Always for `:latest` or no tag.
fn pull_policy(image: &str) -> &'static str {
    let name = image.rsplit('/').next().unwrap_or(image);
    let tag = name
        .split_once('@')
        .map_or(name, |(n, _)| n)
        .split_once(':')
        .map(|(_, t)| t);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match tag {
        None | Some("latest") => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn container(container: &mut Value) {
    set(
        container,
        "terminationMessagePath",
        json!("/dev/termination-log"),
    );
    set(container, "terminationMessagePolicy", json!("File"));
    let image = container["image"].as_str().unwrap_or("").to_string();
    set(container, "imagePullPolicy", json!(pull_policy(&image)));
    set(container, "resources", json!({}));
    for port in container
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        set(port, "protocol", json!("TCP"));
    }
    for kind in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(probe) = container.get_mut(kind).filter(|p| p.is_object()) {
            probe_defaults(probe);
        }
    }
    for handler in ["postStart", "preStop"] {
        if let Some(http) = container
            .get_mut("lifecycle")
            .and_then(|l| l.get_mut(handler))
            .and_then(|h| h.get_mut("httpGet"))
            .filter(|h| h.is_object())
        {
            http_get_defaults(http);
        }
    }
    for env in container
        .get_mut("env")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(field_ref) = env
            .get_mut("valueFrom")
            .and_then(|v| v.get_mut("fieldRef"))
            .filter(|f| f.is_object())
        {
            set(field_ref, "apiVersion", json!("v1"));
        }
    }
}

/// SetDefaults_Probe, SetDefaults_HTTPGetAction and SetDefaults_GRPCAction
/// (kubectl describe needs the gRPC service set, if empty).
fn probe_defaults(probe: &mut Value) {
    set(probe, "timeoutSeconds", json!(1));
    set(probe, "periodSeconds", json!(10));
    set(probe, "successThreshold", json!(1));
    set(probe, "failureThreshold", json!(3));
    if let Some(http) = probe.get_mut("httpGet").filter(|h| h.is_object()) {
        http_get_defaults(http);
    }
    if let Some(grpc) = probe.get_mut("grpc").filter(|g| g.is_object()) {
        set(grpc, "service", json!(""));
    }
}

fn http_get_defaults(http: &mut Value) {
    set(http, "path", json!("/"));
    set(http, "scheme", json!("HTTP"));
}

/// Volume sources' file modes (0644) as upstream's SetDefaults_*VolumeSource.
fn volume_defaults(volume: &mut Value) {
    for source in ["configMap", "secret", "downwardAPI", "projected"] {
        if let Some(source) = volume.get_mut(source).filter(|s| s.is_object()) {
            set(source, "defaultMode", json!(420));
        }
    }
    if let Some(host_path) = volume.get_mut("hostPath").filter(|h| h.is_object()) {
        set(host_path, "type", json!(""));
    }
}

/// A pod spec's defaults, in a pod or in a template.
pub fn pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set(spec, "restartPolicy", json!("Always"));
    set(spec, "dnsPolicy", json!("ClusterFirst"));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set(spec, "schedulerName", json!("default-scheduler"));
    set(spec, "securityContext", json!({}));
    set(spec, "enableServiceLinks", json!(true));
    for volume in spec
        .get_mut("volumes")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        volume_defaults(volume);
    }
    for field in ["containers", "initContainers"] {
        for c in spec
            .get_mut(field)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            container(c);
        }
    }
}

/// The QoS class of a pod spec: Guaranteed when every container limits CPU
/// and memory with requests equal to the limits, BestEffort when none asks
/// for anything, Burstable otherwise.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|f| spec[*f].as_array().into_iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let (requests, limits) = (&c["resources"]["requests"], &c["resources"]["limits"]);
        let has = |v: &Value| v.as_object().is_some_and(|m| !m.is_empty());
        any |= has(requests) || has(limits);
        for resource in ["cpu", "memory"] {
            let limit = &limits[resource];
            let request = if requests[resource].is_null() {
                limit
            } else {
                &requests[resource]
            };
            if limit.is_null() || request != limit {
                guaranteed = false;
            }
        }
    }
    match (guaranteed, any) {
        (true, _) => "Guaranteed",
        (false, true) => "Burstable",
        (false, false) => "BestEffort",
    }
}

/// A pod's containers request what they limit unless they say otherwise
/// (upstream's SetDefaults_Pod; templates are left as written).
fn requests_from_limits(spec: &mut Value) {
    for field in ["containers", "initContainers"] {
        for c in spec[field].as_array_mut().into_iter().flatten() {
            let Some(limits) = c["resources"]["limits"].as_object().cloned() else {
                continue;
            };
            if !c["resources"]["requests"].is_object() {
                c["resources"]["requests"] = json!({});
            }
            for (name, value) in limits {
                if c["resources"]["requests"].get(&name).is_none() {
                    c["resources"]["requests"][name] = value;
                }
            }
        }
    }
}

/// Sets the defaults of a new object of `group`/`plural`.
/// How long a pod stays on a node that is not ready or unreachable when it
/// says nothing itself: the DefaultTolerationSeconds admission plugin's 300 s.
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// What the DefaultTolerationSeconds admission plugin adds: a NoExecute
/// toleration of `node.kubernetes.io/not-ready` and of
/// `node.kubernetes.io/unreachable` for 300 s, each unless a toleration of
/// that key (or of every key) with effect NoExecute (or any) is there.
fn default_toleration_seconds(spec: &mut Value) {
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let tolerations = spec["tolerations"].as_array();
        let tolerated = tolerations.into_iter().flatten().any(|t| {
            let key_matches = matches!(t["key"].as_str(), None | Some("")) || t["key"] == key;
            let effect_matches =
                matches!(t["effect"].as_str(), None | Some("")) || t["effect"] == "NoExecute";
            key_matches && effect_matches
        });
        if tolerated {
            continue;
        }
        if !spec["tolerations"].is_array() {
            spec["tolerations"] = json!([]);
        }
        if let Some(tolerations) = spec["tolerations"].as_array_mut() {
            tolerations.push(json!({
                "key": key,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS,
            }));
        }
    }
}

/// Upstream's job strategy: unless the selector is manual, the pods get
/// the job's name and UID as labels and the selector takes the UID.
fn job_selector(job: &mut Value) {
    if job["spec"]["manualSelector"] == json!(true) {
        return;
    }
    let (name, uid) = (
        job["metadata"]["name"].clone(),
        job["metadata"]["uid"].clone(),
    );
    if !uid.is_string() {
        return;
    }
    let labels = &mut job["spec"]["template"]["metadata"]["labels"];
    if !labels.is_object() {
        *labels = json!({});
    }
    for key in ["job-name", "batch.kubernetes.io/job-name"] {
        set(labels, key, name.clone());
    }
    for key in ["controller-uid", "batch.kubernetes.io/controller-uid"] {
        set(labels, key, uid.clone());
    }
    let selector = &mut job["spec"]["selector"]["matchLabels"];
    if !selector.is_object() {
        *selector = json!({});
    }
    set(selector, "batch.kubernetes.io/controller-uid", uid);
}

pub fn apply(group: &str, plural: &str, object: &mut Value) {
    match (group, plural) {
        ("", "namespaces") => {
            let name = object["metadata"]["name"].clone();
            if !object["metadata"]["labels"].is_object() {
                object["metadata"]["labels"] = json!({});
            }
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
            object["spec"] = json!({"finalizers": ["kubernetes"]});
            object["status"] = json!({"phase": "Active"});
            if let Some(metadata) = object["metadata"].as_object_mut() {
                metadata.remove("generation");
            }
        }
        ("", "secrets") => set(object, "type", json!("Opaque")),
        ("autoscaling", "horizontalpodautoscalers") => {
            set(&mut object["spec"], "minReplicas", json!(1));
            // v2 scales on 80% CPU when given no metric; v1 says nothing.
            let v2 = object["apiVersion"] == "autoscaling/v2";
            if v2
                && object["spec"]["metrics"]
                    .as_array()
                    .is_none_or(Vec::is_empty)
            {
                object["spec"]["metrics"] = json!([{
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
                }]);
            }
        }
        ("", "pods") => {
            pod_spec(&mut object["spec"]);
            requests_from_limits(&mut object["spec"]);
            // What the ServiceAccount admission plugin sets.
            set(&mut object["spec"], "serviceAccountName", json!("default"));
            let account = object["spec"]["serviceAccountName"].clone();
            set(&mut object["spec"], "serviceAccount", account);
            default_toleration_seconds(&mut object["spec"]);
            let qos = qos_class(&object["spec"]);
            object["status"] = json!({"phase": "Pending", "qosClass": qos});
        }
        ("", "services") => {
            let spec = &mut object["spec"];
            if !spec.is_object() {
                *spec = json!({});
            }
            set(spec, "type", json!("ClusterIP"));
            set(spec, "sessionAffinity", json!("None"));
            if spec["type"] != "ExternalName" {
                set(spec, "internalTrafficPolicy", json!("Cluster"));
            }
            for port in spec
                .get_mut("ports")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                set(port, "protocol", json!("TCP"));
                let number = port["port"].clone();
                set(port, "targetPort", number);
            }
            object["status"] = json!({"loadBalancer": {}});
        }
        ("apps", "deployments") => {
            let spec = &mut object["spec"];
            set(spec, "replicas", json!(1));
            // An empty strategy (as kubectl create deployment sends) is a
            // rolling update of 25% / 25%.
            set(spec, "strategy", json!({}));
            set(&mut spec["strategy"], "type", json!("RollingUpdate"));
            if spec["strategy"]["type"] == "RollingUpdate" {
                set(&mut spec["strategy"], "rollingUpdate", json!({}));
                set(
                    &mut spec["strategy"]["rollingUpdate"],
                    "maxUnavailable",
                    json!("25%"),
                );
                set(
                    &mut spec["strategy"]["rollingUpdate"],
                    "maxSurge",
                    json!("25%"),
                );
            }
            set(spec, "revisionHistoryLimit", json!(10));
            set(spec, "progressDeadlineSeconds", json!(600));
            pod_spec(&mut spec["template"]["spec"]);
        }
        ("", "limitranges") => {
            for item in object["spec"]["limits"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                crate::limits::default_item(item);
            }
        }
        ("apps", "replicasets") | ("", "replicationcontrollers") => {
            set(&mut object["spec"], "replicas", json!(1));
            pod_spec(&mut object["spec"]["template"]["spec"]);
        }
        ("apps", "statefulsets") => {
            let spec = &mut object["spec"];
            set(spec, "replicas", json!(1));
            set(spec, "podManagementPolicy", json!("OrderedReady"));
            set(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
            set(spec, "revisionHistoryLimit", json!(10));
            pod_spec(&mut spec["template"]["spec"]);
        }
        ("apps", "daemonsets") => {
            let spec = &mut object["spec"];
            set(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            set(spec, "revisionHistoryLimit", json!(10));
            pod_spec(&mut spec["template"]["spec"]);
        }
        ("batch", "jobs") => {
            job_selector(object);
            let spec = &mut object["spec"];
            if spec["completions"].is_null() && spec["parallelism"].is_null() {
                spec["completions"] = json!(1);
            }
            set(spec, "parallelism", json!(1));
            let replacement = if spec["podFailurePolicy"].is_null() {
                "TerminatingOrFailed"
            } else {
                "Failed"
            };
            set(spec, "podReplacementPolicy", json!(replacement));
            set(spec, "backoffLimit", json!(6));
            set(spec, "completionMode", json!("NonIndexed"));
            set(spec, "suspend", json!(false));
            pod_spec(&mut spec["template"]["spec"]);
        }
        ("batch", "cronjobs") => {
            let spec = &mut object["spec"];
            set(spec, "concurrencyPolicy", json!("Allow"));
            set(spec, "suspend", json!(false));
            set(spec, "successfulJobsHistoryLimit", json!(3));
            set(spec, "failedJobsHistoryLimit", json!(1));
            pod_spec(&mut spec["jobTemplate"]["spec"]["template"]["spec"]);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_gets_one_completion_and_a_selector_on_its_uid() {
        let mut job = json!({"metadata": {"name": "pi", "uid": "u1"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}});
        apply("batch", "jobs", &mut job);
        let spec = &job["spec"];
        assert_eq!(
            (&spec["completions"], &spec["parallelism"]),
            (&json!(1), &json!(1))
        );
        assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(
            spec["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}})
        );
        assert_eq!(
            spec["template"]["metadata"]["labels"],
            json!({
                "batch.kubernetes.io/controller-uid": "u1", "batch.kubernetes.io/job-name": "pi",
                "controller-uid": "u1", "job-name": "pi",
            })
        );
        // A work queue (parallelism alone) has no completions.
        let mut queue = json!({"metadata": {"name": "q", "uid": "u2"}, "spec": {"parallelism": 3,
            "manualSelector": true, "selector": {"matchLabels": {"a": "b"}}, "template": {"spec": {}}}});
        apply("batch", "jobs", &mut queue);
        assert!(queue["spec"]["completions"].is_null());
        assert_eq!(
            queue["spec"]["selector"],
            json!({"matchLabels": {"a": "b"}})
        );
    }

    #[test]
    fn pods_tolerate_not_ready_and_unreachable_nodes_for_300_seconds_unless_they_say() {
        let tolerations = |given: Value| {
            let mut pod = json!({"spec": {"containers": [{"name": "c", "image": "x"}]}});
            if !given.is_null() {
                pod["spec"]["tolerations"] = given;
            }
            apply("", "pods", &mut pod);
            pod["spec"]["tolerations"].clone()
        };
        let default = |key: &str| json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300});
        assert_eq!(
            tolerations(Value::Null),
            json!([
                default("node.kubernetes.io/not-ready"),
                default("node.kubernetes.io/unreachable")
            ])
        );
        let own = json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5});
        assert_eq!(
            tolerations(json!([own.clone()])),
            json!([own, default("node.kubernetes.io/not-ready")])
        );
        // Tolerating every key, or with another effect.
        let all = json!({"operator": "Exists"});
        assert_eq!(tolerations(json!([all.clone()])), json!([all]));
        let soft = json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"});
        assert_eq!(
            tolerations(json!([soft.clone()])),
            json!([
                soft,
                default("node.kubernetes.io/not-ready"),
                default("node.kubernetes.io/unreachable")
            ])
        );
    }

    #[test]
    fn image_pull_policy_follows_the_tag() {
        for (image, policy) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.31", "IfNotPresent"),
            ("localhost:5000/app", "Always"),
            ("localhost:5000/app:v1", "IfNotPresent"),
            ("app@sha256:abc", "IfNotPresent"),
        ] {
            assert_eq!(pull_policy(image), policy, "{image}");
        }
    }

    #[test]
    fn a_pod_gets_upstreams_defaults_and_its_qos_class() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "image": "busybox", "ports": [{"containerPort": 80}]}
        ]}});
        apply("", "pods", &mut pod);
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["serviceAccountName"], "default");
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(spec["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(
            pod["status"],
            json!({"phase": "Pending", "qosClass": "BestEffort"})
        );

        let limited =
            json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(&limited), "Guaranteed");
        let requested = json!({"containers": [{"resources": {"requests": {"cpu": "100m"}}}]});
        assert_eq!(qos_class(&requested), "Burstable");

        let mut limited = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "image": "x:1", "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "1Gi"}}}
        ]}});
        apply("", "pods", &mut limited);
        assert_eq!(
            limited["spec"]["containers"][0]["resources"]["requests"],
            json!({"cpu": "1", "memory": "1Gi"}),
            "a pod requests what it limits"
        );
    }

    #[test]
    fn probes_volumes_and_field_refs_get_upstreams_defaults() {
        let mut spec = json!({
            "containers": [{
                "name": "c", "image": "x:1",
                "livenessProbe": {"httpGet": {"port": 8080}, "periodSeconds": 5},
                "readinessProbe": {"exec": {"command": ["true"]}},
                "startupProbe": {"grpc": {"port": 9000}},
                "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
            }],
            "volumes": [
                {"name": "a", "configMap": {"name": "cm"}},
                {"name": "b", "secret": {"secretName": "s", "defaultMode": 256}},
                {"name": "c", "hostPath": {"path": "/data"}},
                {"name": "d", "emptyDir": {}},
            ],
        });
        pod_spec(&mut spec);
        let container = &spec["containers"][0];
        assert_eq!(
            container["livenessProbe"],
            json!({"httpGet": {"port": 8080, "path": "/", "scheme": "HTTP"}, "periodSeconds": 5,
                   "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(container["readinessProbe"]["periodSeconds"], 10);
        assert_eq!(
            container["startupProbe"]["grpc"],
            json!({"port": 9000, "service": ""})
        );
        assert_eq!(
            container["env"][0]["valueFrom"]["fieldRef"]["apiVersion"],
            "v1"
        );
        assert_eq!(spec["volumes"][0]["configMap"]["defaultMode"], 420);
        assert_eq!(
            spec["volumes"][1]["secret"]["defaultMode"], 256,
            "kept when set"
        );
        assert_eq!(spec["volumes"][2]["hostPath"]["type"], "");
        assert_eq!(spec["volumes"][3], json!({"name": "d", "emptyDir": {}}));
    }

    #[test]
    fn deployments_and_services_get_upstreams_defaults() {
        let mut deployment = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}});
        apply("apps", "deployments", &mut deployment);
        assert_eq!(deployment["spec"]["replicas"], 1);
        assert_eq!(
            deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
            "25%"
        );
        assert_eq!(deployment["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(
            deployment["spec"]["template"]["spec"]["schedulerName"],
            "default-scheduler"
        );
        let mut service = json!({"spec": {"ports": [{"port": 80}]}});
        apply("", "services", &mut service);
        assert_eq!(service["spec"]["type"], "ClusterIP");
        assert_eq!(
            service["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
    }
}
