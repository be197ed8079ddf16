//! The read-only commands: `status` (the SOP's checks in one table) and `history` (the
//! revisions of both workloads with their guarded images).

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::jiff::Timestamp;

use super::lock::{LEASE_NAME, live_holder, record_of};
use super::plan::{Targets, deploy_spec, ds_spec};
use super::report::{HistoryRow, Status, StatusRollout, StatusWebhook, history_json, history_text};
use super::revisions::{self, selector_string};
use crate::cluster::{Cluster, ClusterError};
use crate::offline::OutputFormat;
use crate::policy::Config;

/// The objects every command starts from.
#[derive(Debug, Clone)]
pub struct ClusterObjects {
    /// The ConfigMap that marks the v1 network exists.
    pub configmap: bool,
    pub agent: Option<DaemonSet>,
    pub ipam: Option<Deployment>,
}

pub async fn observe(cluster: &Cluster, targets: &Targets) -> Result<ClusterObjects, ClusterError> {
    let (a, i) = (&targets.agent, &targets.ipam);
    Ok(ClusterObjects {
        configmap: cluster.configmap(&a.namespace, &a.name).await?.is_some(),
        agent: cluster.daemonset(&a.namespace, &a.name).await?,
        ipam: cluster.deployment(&i.namespace, &i.name).await?,
    })
}

fn ds_rollout(ds: &DaemonSet) -> StatusRollout {
    let s = ds.status.clone().unwrap_or_default();
    StatusRollout {
        desired: s.desired_number_scheduled,
        current: s.current_number_scheduled,
        ready: s.number_ready,
        updated: s.updated_number_scheduled.unwrap_or(0),
        available: s.number_available.unwrap_or(0),
        generation: ds.metadata.generation.unwrap_or(0),
        observed_generation: s.observed_generation.unwrap_or(0),
        in_progress: super::plan::ds_rollout_in_progress(ds),
    }
}

fn deploy_rollout(d: &Deployment) -> StatusRollout {
    let s = d.status.clone().unwrap_or_default();
    StatusRollout {
        desired: d.spec.replicas.unwrap_or(1),
        current: s.replicas.unwrap_or(0),
        ready: s.ready_replicas.unwrap_or(0),
        updated: s.updated_replicas.unwrap_or(0),
        available: s.available_replicas.unwrap_or(0),
        generation: d.metadata.generation.unwrap_or(0),
        observed_generation: s.observed_generation.unwrap_or(0),
        in_progress: super::plan::deploy_rollout_in_progress(d),
    }
}

/// `status`: exit 0 healthy, 1 not.
pub async fn status(
    cluster: &Cluster,
    targets: &Targets,
    config: &Config,
    output: OutputFormat,
) -> u8 {
    let objects = match observe(cluster, targets).await {
        Ok(o) => o,
        Err(err) => {
            eprintln!("error: {err}");
            return 1;
        }
    };
    let webhook = match cluster.webhook_configurations().await {
        Ok(Some(configs)) => {
            let found: Vec<String> = configs
                .iter()
                .filter(|c| {
                    c.webhooks
                        .iter()
                        .flatten()
                        .any(|w| w.name.contains("cce-cni-guard"))
                        || c.metadata
                            .name
                            .as_deref()
                            .is_some_and(|n| n.contains("cce-cni-guard"))
                })
                .map(|c| {
                    let policy = c
                        .webhooks
                        .iter()
                        .flatten()
                        .find(|w| w.name.contains("cce-cni-guard"))
                        .and_then(|w| w.failure_policy.clone())
                        .unwrap_or_else(|| "Fail".into());
                    format!(
                        "{} (failurePolicy {policy})",
                        c.metadata.name.clone().unwrap_or_default()
                    )
                })
                .collect();
            if found.is_empty() {
                StatusWebhook::NotRegistered
            } else {
                StatusWebhook::Registered(found)
            }
        }
        Ok(None) => StatusWebhook::NotVisible,
        Err(err) => {
            eprintln!("warning: {err}");
            StatusWebhook::NotVisible
        }
    };
    let lock = match cluster.lease(LEASE_NAME).await {
        Ok(Some(lease)) => {
            let holder = live_holder(&lease, Timestamp::now()).map(|h| h.identity);
            let record = record_of(&lease).and_then(Result::ok);
            Some((holder, record))
        }
        Ok(None) => None,
        Err(err) => {
            eprintln!("warning: {err}");
            None
        }
    };
    let status = Status::new(
        targets,
        config,
        objects.configmap,
        objects.agent.as_ref().map(|d| (ds_spec(d), ds_rollout(d))),
        objects
            .ipam
            .as_ref()
            .map(|d| (deploy_spec(d), deploy_rollout(d))),
        webhook,
        lock,
    );
    match output {
        OutputFormat::Json => println!("{}", status.json()),
        OutputFormat::Text => print!("{}", status.text()),
    }
    if status.healthy() { 0 } else { 1 }
}

/// `history`: exit 0 (2 when the cluster cannot be read).
pub async fn history(cluster: &Cluster, targets: &Targets, output: OutputFormat) -> u8 {
    let rows = match history_rows(cluster, targets).await {
        Ok(rows) => rows,
        Err(err) => {
            eprintln!("error: {err}");
            return 2;
        }
    };
    match output {
        OutputFormat::Json => println!("{}", history_json(&rows)),
        OutputFormat::Text => print!("{}", history_text(&rows)),
    }
    0
}

async fn history_rows(
    cluster: &Cluster,
    targets: &Targets,
) -> Result<Vec<HistoryRow>, ClusterError> {
    let (a, i) = (&targets.agent, &targets.ipam);
    let mut rows = Vec::new();
    if let Some(ds) = cluster.daemonset(&a.namespace, &a.name).await? {
        let crs = cluster
            .controller_revisions(&a.namespace, &selector_string(Some(&ds.spec.selector)))
            .await?;
        let revs = revisions::ds_revisions(&ds, &crs);
        let current = revisions::current(&revs, None).map(|r| r.number);
        rows.extend(
            revs.iter()
                .map(|r| HistoryRow::new(a, r, current == Some(r.number))),
        );
    }
    if let Some(d) = cluster.deployment(&i.namespace, &i.name).await? {
        let rss = cluster
            .replica_sets(&i.namespace, &selector_string(Some(&d.spec.selector)))
            .await?;
        let revs = revisions::deploy_revisions(&d, &rss);
        let current =
            revisions::current(&revs, revisions::deployment_revision(&d)).map(|r| r.number);
        rows.extend(
            revs.iter()
                .map(|r| HistoryRow::new(i, r, current == Some(r.number))),
        );
    }
    Ok(rows)
}
