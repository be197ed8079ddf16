//! Watch-based waits: one watcher on the workload (field selector `metadata.name=`) and one
//! on its pods (label selector), merged, with the pure condition evaluated on every event.
//! A dropped watch re-lists after a backoff (kube-runtime's watcher); there is no poll loop,
//! only a slow timer that re-evaluates the cached state (progress lines, "stuck for N s").

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

/// Page size of the watchers' lists: large enough that a 1,000-node cluster's pods are one
/// request.
pub const LIST_PAGE_SIZE: u32 = 10_000;

/// What the evaluator decided after an event.
#[derive(Debug)]
pub enum Control<T> {
    /// Keep waiting; the line is the current progress (printed when it changes).
    Continue(String),
    Break(T),
}

/// The cached view of one wait.
#[derive(Debug)]
pub struct View<W> {
    pub workload: Option<W>,
    pub pods: BTreeMap<String, Pod>,
    /// Whether both initial lists have arrived.
    pub synced: bool,
}

enum Update<W> {
    Workload(watcher::Result<watcher::Event<W>>),
    Pods(Box<watcher::Result<watcher::Event<Pod>>>),
    Tick,
}

fn config(selector: watcher::Config) -> watcher::Config {
    watcher::Config {
        page_size: Some(LIST_PAGE_SIZE),
        ..selector
    }
}

fn pod_key(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// Watches workload `name` and the pods matching `pod_selector` until `evaluate` breaks.
/// `evaluate` also runs every `tick` on the cached view, with the current instant.
pub async fn watch_until<W, T, F>(
    api: Api<W>,
    pods: Api<Pod>,
    name: &str,
    pod_selector: &str,
    tick: Duration,
    mut evaluate: F,
) -> T
where
    W: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    F: FnMut(&View<W>, Instant) -> Control<T>,
{
    let workload_stream = watcher(
        api,
        config(watcher::Config::default().fields(&format!("metadata.name={name}"))),
    )
    .default_backoff()
    .map(Update::Workload);
    let pod_stream = watcher(
        pods,
        config(watcher::Config::default().labels(pod_selector)),
    )
    .default_backoff()
    .map(|e| Update::Pods(Box::new(e)));
    let ticks = tokio_stream_interval(tick).map(|_| Update::Tick);
    let mut merged = futures::stream::select(
        futures::stream::select(Box::pin(workload_stream), Box::pin(pod_stream)),
        Box::pin(ticks),
    );
    let mut view = View {
        workload: None,
        pods: BTreeMap::new(),
        synced: false,
    };
    let (mut workload_synced, mut pods_synced) = (false, false);
    let mut pod_buffer: Option<BTreeMap<String, Pod>> = None;
    let mut workload_seen = false;
    loop {
        let Some(update) = merged.next().await else {
            // The watch streams never end; be safe anyway.
            tokio::time::sleep(tick).await;
            continue;
        };
        match update {
            Update::Workload(Ok(event)) => match event {
                watcher::Event::Init => workload_seen = false,
                watcher::Event::InitApply(w) | watcher::Event::Apply(w) => {
                    workload_seen = true;
                    view.workload = Some(w);
                }
                watcher::Event::InitDone => {
                    if !workload_seen {
                        view.workload = None;
                    }
                    workload_synced = true;
                }
                watcher::Event::Delete(_) => view.workload = None,
            },
            Update::Pods(boxed) => match *boxed {
                Ok(watcher::Event::Init) => pod_buffer = Some(BTreeMap::new()),
                Ok(watcher::Event::InitApply(p)) => {
                    pod_buffer
                        .get_or_insert_with(BTreeMap::new)
                        .insert(pod_key(&p), p);
                }
                Ok(watcher::Event::InitDone) => {
                    view.pods = pod_buffer.take().unwrap_or_default();
                    pods_synced = true;
                }
                Ok(watcher::Event::Apply(p)) => {
                    view.pods.insert(pod_key(&p), p);
                }
                Ok(watcher::Event::Delete(p)) => {
                    view.pods.remove(&pod_key(&p));
                }
                Err(err) => {
                    tracing::warn!("watch of the pods of {name} interrupted ({err}); re-listing");
                    continue;
                }
            },
            Update::Workload(Err(err)) => {
                tracing::warn!("watch of {name} interrupted ({err}); re-listing");
                continue;
            }
            Update::Tick => {}
        }
        view.synced = workload_synced && pods_synced;
        if !view.synced {
            continue;
        }
        if let Control::Break(out) = evaluate(&view, Instant::now()) {
            return out;
        }
    }
}

fn tokio_stream_interval(period: Duration) -> impl Stream<Item = ()> {
    futures::stream::unfold(
        tokio::time::interval_at(Instant::now() + period, period),
        |mut interval| async move {
            interval.tick().await;
            Some(((), interval))
        },
    )
}
