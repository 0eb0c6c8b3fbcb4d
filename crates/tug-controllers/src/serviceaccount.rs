//! The service account controller: every active namespace has a
//! `default` ServiceAccount, made again if deleted.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

use crate::informer::Informer;
use crate::workqueue::WorkQueue;

pub const COMPONENT: &str = "serviceaccount-controller";
const DEFAULT: &str = "default";

struct Controller {
    client: Client,
    namespaces: Informer<Namespace>,
    accounts: Informer<ServiceAccount>,
    queue: WorkQueue,
}

impl Controller {
    async fn sync(&self, namespace: &str) -> anyhow::Result<Option<std::time::Duration>> {
        let Some(ns) = self.namespaces.get(namespace) else {
            return Ok(None);
        };
        let active = ns.metadata.deletion_timestamp.is_none()
            && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating");
        if !active
            || self
                .accounts
                .get(&format!("{namespace}/{DEFAULT}"))
                .is_some()
        {
            return Ok(None);
        }
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(DEFAULT.into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match api.create(&PostParams::default(), &account).await {
            Ok(_) => Ok(None),
            // There already, or the namespace is going: nothing to do.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 || s.code == 404 => Ok(None),
            Err(err) => Err(err.into()),
        }
    }
}

pub(crate) fn start(ctx: &crate::Context) -> crate::Running {
    let controller = Arc::new(Controller {
        client: ctx.client.clone(),
        namespaces: ctx.namespaces.clone(),
        accounts: ctx.service_accounts.clone(),
        queue: WorkQueue::default(),
    });
    let c = controller.clone();
    ctx.namespaces.subscribe(Box::new(move |_, new| {
        if let Some(ns) = new {
            c.queue.add(&ns.name_any());
        }
    }));
    let c = controller.clone();
    ctx.service_accounts.subscribe(Box::new(move |old, new| {
        if let (Some(account), None) = (old, new)
            && account.name_any() == DEFAULT
        {
            c.queue.add(&account.namespace().unwrap_or_default());
        }
    }));
    crate::Running::workers(COMPONENT, controller.queue.clone(), 1, move |ns| {
        let c = controller.clone();
        async move { c.sync(&ns).await }
    })
}
