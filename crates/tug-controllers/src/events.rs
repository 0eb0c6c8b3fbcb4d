//! Events about objects, as the controllers of kube-controller-manager
//! record them (core/v1, `source.component` the controller's name): the
//! same event again on the same object within the cache's memory raises
//! its `count` and `lastTimestamp` instead of making another. Writes go
//! through a bounded queue and are dropped when it is full, as upstream's
//! broadcaster drops, so no controller ever waits on an event.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde_json::json;
use tokio::sync::mpsc;

const QUEUE: usize = 1000;
/// Events remembered for aggregation.
const REMEMBERED: usize = 4096;

pub const NORMAL: &str = "Normal";
pub const WARNING: &str = "Warning";

struct Pending {
    component: &'static str,
    object: ObjectReference,
    type_: &'static str,
    reason: &'static str,
    message: String,
}

/// Cheap to clone; every controller gets one with its component name.
#[derive(Clone)]
pub struct Recorder {
    component: &'static str,
    queue: mpsc::Sender<Pending>,
}

/// A reference to `object`, as events and owner checks want it.
pub fn reference<K: Resource<DynamicType = ()>>(object: &K) -> ObjectReference {
    let meta = object.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}

impl Recorder {
    /// Starts the writer; it ends when every recorder is dropped.
    pub fn start(client: Client, host: String) -> Recorder {
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(write(client, host, receiver));
        Recorder {
            component: "",
            queue,
        }
    }

    pub fn for_component(&self, component: &'static str) -> Recorder {
        Recorder {
            component,
            queue: self.queue.clone(),
        }
    }

    pub fn event(
        &self,
        object: ObjectReference,
        type_: &'static str,
        reason: &'static str,
        message: String,
    ) {
        let _ = self.queue.try_send(Pending {
            component: self.component,
            object,
            type_,
            reason,
            message,
        });
    }
}

/// What makes two events the same: the object's UID, type, reason and
/// message.
type Sameness = (String, &'static str, &'static str, String);
/// An event written: its namespace, name and count.
type Written = (String, String, i32);

async fn write(client: Client, host: String, mut receiver: mpsc::Receiver<Pending>) {
    let mut seen: HashMap<Sameness, Written> = HashMap::new();
    while let Some(pending) = receiver.recv().await {
        let namespace = pending
            .object
            .namespace
            .clone()
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
        let now = Time(Timestamp::now());
        let key = (
            pending.object.uid.clone().unwrap_or_default(),
            pending.type_,
            pending.reason,
            pending.message.clone(),
        );
        if let Some((ns, name, count)) = seen.get_mut(&key)
            && *ns == namespace
        {
            *count += 1;
            let patch = json!({"count": *count, "lastTimestamp": now});
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => continue,
                Err(err) => {
                    tracing::debug!(error = %err, "event: could not raise its count");
                    seen.remove(&key);
                }
            }
        }
        let object_name = pending.object.name.clone().unwrap_or_default();
        let nanos = now.0.as_nanosecond();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{object_name}.{nanos:x}")),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: pending.object,
            reason: Some(pending.reason.into()),
            message: Some(pending.message),
            type_: Some(pending.type_.into()),
            source: Some(EventSource {
                component: Some(pending.component.into()),
                host: None,
            }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            reporting_component: Some(pending.component.into()),
            reporting_instance: Some(host.clone()),
            ..Event::default()
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(created) => {
                if seen.len() >= REMEMBERED {
                    seen.clear();
                }
                seen.insert(
                    key,
                    (namespace, created.metadata.name.unwrap_or_default(), 1),
                );
            }
            Err(err) => tracing::debug!(error = %err, "event: could not record"),
        }
    }
}
