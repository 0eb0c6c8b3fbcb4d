//! The controller-manager: controllers that make what the cluster runs
//! what its objects ask for, each a client of the API as upstream's are.
//!
//! Every kind a controller reads is watched once ([`informer`]), and its
//! changes are handed to each controller that subscribed; a controller
//! turns them into keys on its own [`workqueue`], and its workers sync
//! one key at a time: read the cache, plan (pure functions, unit-tested
//! without I/O), write through the API. Controllers are listed once, in
//! [`CONTROLLERS`].

pub mod claim;
pub mod cron;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod events;
pub mod expectations;
pub mod gc;
pub mod history;
pub mod informer;
pub mod ipam;
pub mod job;
pub mod nodelifecycle;
pub mod pods;
pub mod replicaset;
pub mod resourcequota;
pub mod serviceaccount;
pub mod statefulset;
pub mod ttl;
pub mod workqueue;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Endpoints, Namespace, Node, PersistentVolumeClaim, Pod, ReplicationController, ResourceQuota,
    Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Client;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use informer::Informer;
use workqueue::WorkQueue;

/// What starts a controller over the shared informers.
pub type Start = fn(&Context) -> Running;

/// Every controller: its name (as `--controllers` would take it) and
/// what starts it.
pub const CONTROLLERS: &[(&str, Start)] = &[
    ("replicaset", replicaset::start),
    ("replicationcontroller", replicaset::start_replication),
    ("deployment", deployment::start),
    ("garbage-collector", gc::start),
    ("node-lifecycle", nodelifecycle::start),
    ("taint-eviction", nodelifecycle::start_eviction),
    ("node-ipam", ipam::start),
    ("endpointslice", endpoints::start),
    ("serviceaccount", serviceaccount::start),
    ("job", job::start),
    ("cronjob", cronjob::start),
    ("ttl-after-finished", ttl::start),
    ("daemonset", daemonset::start),
    ("statefulset", statefulset::start),
    ("resourcequota", resourcequota::start),
    ("disruption", disruption::start),
];

/// What the controllers are configured with.
#[derive(Clone, Debug)]
pub struct Config {
    /// The range nodes get their pod CIDRs from.
    pub cluster_cidr: String,
    pub nodes: nodelifecycle::Config,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cluster_cidr: "10.42.0.0/16".into(),
            nodes: nodelifecycle::Config::default(),
        }
    }
}

/// What controllers share: the client, the informers, the recorder.
pub struct Context {
    pub client: Client,
    pub pods: Informer<Pod>,
    pub replica_sets: Informer<ReplicaSet>,
    pub deployments: Informer<Deployment>,
    pub nodes: Informer<Node>,
    /// Leases; the nodes' are in kube-node-lease.
    pub leases: Informer<Lease>,
    pub services: Informer<Service>,
    pub endpoint_slices: Informer<EndpointSlice>,
    pub endpoints: Informer<Endpoints>,
    pub namespaces: Informer<Namespace>,
    pub service_accounts: Informer<ServiceAccount>,
    pub jobs: Informer<Job>,
    pub cronjobs: Informer<CronJob>,
    pub daemon_sets: Informer<DaemonSet>,
    pub replication_controllers: Informer<ReplicationController>,
    pub budgets: Informer<PodDisruptionBudget>,
    pub stateful_sets: Informer<StatefulSet>,
    /// The template histories of StatefulSets and DaemonSets.
    pub revisions: Informer<ControllerRevision>,
    pub claims: Informer<PersistentVolumeClaim>,
    pub quotas: Informer<ResourceQuota>,
    pub config: Config,
    pub recorder: events::Recorder,
}

impl Context {
    /// Every informer, to start and wait for.
    fn sources(&self) -> [&dyn informer::Source; 19] {
        [
            &self.pods,
            &self.replica_sets,
            &self.deployments,
            &self.nodes,
            &self.leases,
            &self.services,
            &self.endpoint_slices,
            &self.endpoints,
            &self.namespaces,
            &self.service_accounts,
            &self.jobs,
            &self.cronjobs,
            &self.daemon_sets,
            &self.replication_controllers,
            &self.budgets,
            &self.stateful_sets,
            &self.revisions,
            &self.claims,
            &self.quotas,
        ]
    }
}

type Starter = Box<dyn FnOnce(&mut JoinSet<()>) + Send>;
/// Starts a controller's own watches; the future ends once they listed.
type Watches = Box<dyn FnOnce(&mut JoinSet<()>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A controller ready to start its workers once the caches are synced.
pub struct Running {
    queue: WorkQueue,
    start: Starter,
    /// Watches beyond the shared informers (the garbage collector's).
    watch: Option<Watches>,
    /// Called every monitor period once running.
    ticker: Option<Box<dyn Fn() + Send + Sync>>,
}

impl Running {
    /// `workers` tasks that each take a key from `queue` and `sync` it: a
    /// failure is retried later with back-off, a duration returned asks
    /// for the key again after it.
    pub fn workers<F, Fut>(name: &'static str, queue: WorkQueue, workers: usize, sync: F) -> Running
    where
        F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<Option<Duration>>> + Send + 'static,
    {
        let q = queue.clone();
        let start: Starter = Box::new(move |tasks: &mut JoinSet<()>| {
            for _ in 0..workers {
                let queue = q.clone();
                let sync = sync.clone();
                tasks.spawn(async move {
                    while let Some(key) = queue.next().await {
                        match sync(key.clone()).await {
                            Ok(again) => {
                                queue.forget(&key);
                                if let Some(after) = again {
                                    queue.add_after(&key, after);
                                }
                            }
                            Err(err) => {
                                tracing::debug!(controller = name, key, error = %format!("{err:#}"), "sync failed; retrying");
                                queue.add_rate_limited(&key);
                            }
                        }
                        queue.done(&key);
                    }
                });
            }
        });
        Running {
            queue,
            start,
            watch: None,
            ticker: None,
        }
    }
}

/// Runs every controller until `shutdown`.
pub async fn run(
    client: Client,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let context = Context {
        client: client.clone(),
        pods: Informer::new(&[informer::by_controller::<Pod>, informer::pod_node]),
        replica_sets: Informer::new(&[informer::by_controller::<ReplicaSet>]),
        deployments: Informer::new(&[]),
        nodes: Informer::new(&[]),
        leases: Informer::new(&[]),
        services: Informer::new(&[]),
        endpoint_slices: Informer::new(&[endpoints::by_service]),
        endpoints: Informer::new(&[]),
        namespaces: Informer::new(&[]),
        service_accounts: Informer::new(&[]),
        jobs: Informer::new(&[]),
        cronjobs: Informer::new(&[]),
        daemon_sets: Informer::new(&[]),
        replication_controllers: Informer::new(&[]),
        budgets: Informer::new(&[]),
        stateful_sets: Informer::new(&[]),
        revisions: Informer::new(&[informer::by_controller::<ControllerRevision>]),
        claims: Informer::new(&[]),
        quotas: Informer::new(&[]),
        config,
        recorder: events::Recorder::start(client.clone(), host),
    };
    let mut controllers: Vec<Running> = CONTROLLERS
        .iter()
        .map(|(_, start)| start(&context))
        .collect();
    let mut tasks = JoinSet::new();
    let own_watches: Vec<_> = controllers
        .iter_mut()
        .filter_map(|c| c.watch.take())
        .map(|watch| watch(&mut tasks))
        .collect();
    for source in context.sources() {
        source.spawn(&client, &mut tasks);
    }
    let synced = async {
        for source in context.sources() {
            source.wait_synced().await;
        }
        futures::future::join_all(own_watches).await;
    };
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        _ = synced => {}
    }
    tracing::info!("controllers: caches synced, reconciling");
    let mut queues = Vec::new();
    let mut tickers = Vec::new();
    for controller in controllers {
        queues.push(controller.queue.clone());
        tickers.extend(controller.ticker);
        (controller.start)(&mut tasks);
    }
    if !tickers.is_empty() {
        tasks.spawn(async move {
            let mut every = tokio::time::interval(nodelifecycle::MONITOR_PERIOD);
            loop {
                every.tick().await;
                for tick in &tickers {
                    tick();
                }
            }
        });
    }
    shutdown.cancelled().await;
    for queue in queues {
        queue.close();
    }
    tasks.abort_all();
    Ok(())
}
