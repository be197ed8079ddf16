//! A watch-backed cache of exactly the guarded workloads, so rule 3 (siblings agree) can be
//! judged without a request to the apiserver on the admission path.
//!
//! One reflector per guarded workload, each with a `metadata.name=` field selector in the
//! workload's namespace: the RBAC role can then name the workloads by `resourceNames`.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::task::JoinHandle;

use crate::policy::{
    Config, GuardedWorkload, PodTemplateImages, SiblingLookup, SiblingState, WorkloadKind,
};

use super::metrics::Metrics;

/// The store of one guarded workload, typed by its kind.
#[derive(Clone)]
enum WorkloadStore {
    DaemonSet(Store<DaemonSet>),
    Deployment(Store<Deployment>),
}

impl WorkloadStore {
    /// `None` before the first complete list; then the workload's images or its absence.
    fn state(&self, name: &str) -> Option<SiblingState> {
        fn find<K: kube::Resource + Clone>(
            store: &Store<K>,
            name: &str,
            spec: impl Fn(&K) -> Option<PodTemplateImages>,
        ) -> SiblingState
        where
            K::DynamicType: Eq + std::hash::Hash + Clone,
        {
            match store.find(|o| o.meta().name.as_deref() == Some(name)) {
                Some(object) => match spec(&object) {
                    Some(images) => SiblingState::Present(images),
                    None => SiblingState::Present(PodTemplateImages::default()),
                },
                None => SiblingState::Absent,
            }
        }
        match self {
            Self::DaemonSet(store) => store.is_ready().then(|| {
                find(store, name, |d: &DaemonSet| {
                    let spec = d.spec.template.spec.as_ref()?;
                    Some(PodTemplateImages::from_pod_spec(spec))
                })
            }),
            Self::Deployment(store) => store.is_ready().then(|| {
                find(store, name, |d: &Deployment| {
                    let spec = d.spec.template.spec.as_ref()?;
                    Some(PodTemplateImages::from_pod_spec(spec))
                })
            }),
        }
    }
}

/// Readiness of a reflector store without waiting.
trait Ready {
    fn is_ready(&self) -> bool;
}

impl<K> Ready for Store<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn is_ready(&self) -> bool {
        // `wait_until_ready` resolves at once when the first list has completed.
        futures::FutureExt::now_or_never(self.wait_until_ready()).is_some_and(|r| r.is_ok())
    }
}

struct Entry {
    workload: GuardedWorkload,
    store: WorkloadStore,
}

/// The cache: lookups never block; a workload not yet listed is `Unknown`.
pub struct SiblingCache {
    entries: Vec<Entry>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for SiblingCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiblingCache")
            .field(
                "workloads",
                &self
                    .entries
                    .iter()
                    .map(|e| e.workload.display_name())
                    .collect::<Vec<_>>(),
            )
            .field("synced", &self.synced())
            .finish()
    }
}

impl SiblingCache {
    /// Starts one watch per guarded workload; `metrics` learns when all have synced.
    pub fn start(client: Client, config: &Config, metrics: Arc<Metrics>) -> Self {
        let mut entries = Vec::new();
        let mut tasks = Vec::new();
        let mut readiness: Vec<futures::future::BoxFuture<'static, ()>> = Vec::new();
        for workload in &config.workloads {
            let selector = format!("metadata.name={}", workload.name);
            let watch_config = watcher::Config::default().fields(&selector);
            let label = workload.display_name();
            let store = match workload.kind {
                WorkloadKind::DaemonSet => {
                    let api: Api<DaemonSet> = Api::namespaced(client.clone(), &workload.namespace);
                    let (store, task) = spawn_reflector(api, watch_config, label);
                    tasks.push(task);
                    readiness.push(futures::FutureExt::boxed(ready_future(store.clone())));
                    WorkloadStore::DaemonSet(store)
                }
                WorkloadKind::Deployment => {
                    let api: Api<Deployment> = Api::namespaced(client.clone(), &workload.namespace);
                    let (store, task) = spawn_reflector(api, watch_config, label);
                    tasks.push(task);
                    readiness.push(futures::FutureExt::boxed(ready_future(store.clone())));
                    WorkloadStore::Deployment(store)
                }
            };
            entries.push(Entry {
                workload: workload.clone(),
                store,
            });
        }
        metrics.set_sibling_cache_synced(false);
        tasks.push(tokio::spawn(async move {
            futures::future::join_all(readiness).await;
            metrics.set_sibling_cache_synced(true);
            tracing::info!("sibling cache synced: the guarded workloads are listed");
        }));
        Self { entries, tasks }
    }

    /// A cache over stores filled by hand (tests).
    #[cfg(test)]
    fn from_stores(entries: Vec<(GuardedWorkload, WorkloadStore)>) -> Self {
        Self {
            entries: entries
                .into_iter()
                .map(|(workload, store)| Entry { workload, store })
                .collect(),
            tasks: Vec::new(),
        }
    }

    /// Whether every guarded workload has been listed at least once.
    pub fn synced(&self) -> bool {
        self.entries.iter().all(|e| e.store.state("").is_some())
    }

    /// Stops the watches.
    pub fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for SiblingCache {
    fn drop(&mut self) {
        self.stop();
    }
}

impl SiblingLookup for SiblingCache {
    fn sibling(&self, workload: &GuardedWorkload) -> SiblingState {
        self.entries
            .iter()
            .find(|e| e.workload == *workload)
            .and_then(|e| e.store.state(&workload.name))
            .unwrap_or(SiblingState::Unknown)
    }
}

async fn ready_future<K>(store: Store<K>)
where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let _ = store.wait_until_ready().await;
}

fn spawn_reflector<K>(
    api: Api<K>,
    config: watcher::Config,
    label: String,
) -> (Store<K>, JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut failing = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    if failing {
                        tracing::info!(workload = %label, "sibling watch recovered");
                        failing = false;
                    }
                }
                Err(err) => {
                    // The backoff retries; say it once per outage, not once per attempt.
                    if !failing {
                        tracing::warn!(workload = %label, error = %err, "sibling watch failed, retrying");
                        failing = true;
                    }
                }
            }
        }
    });
    (store, task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
    use kube::api::ObjectMeta;

    fn deployment(name: &str, image: &str) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("kube-system".into()),
                ..Default::default()
            },
            spec: k8s_openapi::api::apps::v1::DeploymentSpec {
                template: PodTemplateSpec {
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: name.into(),
                            image: Some(image.into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn unknown_before_sync_then_present_then_absent() {
        let config = Config::default();
        let ipam = config
            .workload(WorkloadKind::Deployment, "kube-system", "cce-eni-ipam")
            .unwrap()
            .clone();
        let (store, mut writer) = reflector::store::<Deployment>();
        let cache =
            SiblingCache::from_stores(vec![(ipam.clone(), WorkloadStore::Deployment(store))]);
        assert_eq!(cache.sibling(&ipam), SiblingState::Unknown);
        assert!(!cache.synced());

        let object = deployment("cce-eni-ipam", "registry.example/cce-cni:v1.9.3");
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitApply(object.clone()));
        writer.apply_watcher_event(&watcher::Event::InitDone);
        assert!(cache.synced());
        match cache.sibling(&ipam) {
            SiblingState::Present(images) => {
                assert_eq!(images.containers.len(), 1);
                assert_eq!(
                    images.containers[0].image,
                    "registry.example/cce-cni:v1.9.3"
                );
            }
            other => panic!("expected Present, got {other:?}"),
        }

        writer.apply_watcher_event(&watcher::Event::Delete(object));
        assert_eq!(cache.sibling(&ipam), SiblingState::Absent);

        let agent = config.workloads[0].clone();
        assert_eq!(cache.sibling(&agent), SiblingState::Unknown);
    }
}
