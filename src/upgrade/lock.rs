//! The upgrade lock: a `coordination.k8s.io/v1` Lease renewed by a background task, with the
//! record in an annotation. A holder whose renewTime + leaseDuration has passed is stale and
//! is taken over with a resourceVersion-guarded update.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tokio::sync::Mutex;

use super::record::{RECORD_ANNOTATION, Record};
use crate::cluster::{Cluster, ClusterError};

pub const LEASE_NAME: &str = "cce-cni-guard-upgrade";

/// Who holds the Lease, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub identity: String,
    /// When the holder's claim runs out.
    pub expires: Timestamp,
}

/// The live holder of `lease` at `now`, if any (a stale or released lease has none).
pub fn live_holder(lease: &Lease, now: Timestamp) -> Option<Holder> {
    let spec = lease.spec.as_ref()?;
    let identity = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0)?;
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    let expires = renewed
        .checked_add(SignedDuration::from_secs(duration))
        .ok()?;
    (expires > now).then_some(Holder { identity, expires })
}

fn holder_of(lease: &Lease) -> Option<String> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty())
}

fn record_annotation(lease: Option<&Lease>) -> Option<String> {
    lease?
        .metadata
        .annotations
        .as_ref()?
        .get(RECORD_ANNOTATION)
        .cloned()
}

/// The record kept in the Lease, if any.
pub fn record_of(lease: &Lease) -> Option<Result<Record, String>> {
    lease
        .metadata
        .annotations
        .as_ref()?
        .get(RECORD_ANNOTATION)
        .map(|text| Record::from_json(text))
}

/// A holder identity: host or pod name, pid and a random part.
pub fn identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown-host".into());
    format!(
        "{host}/{}/{}",
        std::process::id(),
        crate::cluster::retry::random_suffix()
    )
}

/// Sets holder, times and record on a Lease (new or as read).
pub fn claim(
    lease: &mut Lease,
    namespace: &str,
    identity: &str,
    duration: i32,
    now: Timestamp,
    record: Option<&Record>,
) {
    lease.metadata.name = Some(LEASE_NAME.into());
    lease.metadata.namespace = Some(namespace.into());
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(identity) {
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.holder_identity = Some(identity.into());
    spec.lease_duration_seconds = Some(duration);
    spec.renew_time = Some(MicroTime(now));
    if let Some(record) = record {
        lease
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(RECORD_ANNOTATION.into(), record.to_json());
    }
}

/// Why the lock could not be taken or kept.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another upgrader holds Lease {namespace}/{LEASE_NAME}: {holder} (until {expires}); \
         wait for it to finish, or rerun once its lease has expired"
    )]
    Held {
        namespace: String,
        holder: String,
        expires: Timestamp,
    },
    #[error("the upgrade lock was lost to {0}; stopping before any further write")]
    Lost(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// A held lock. Dropping it stops the renewal; call [`Lock::release`] to hand it back.
pub struct Lock {
    cluster: Cluster,
    pub identity: String,
    duration: i32,
    lease: Arc<Mutex<Lease>>,
    lost: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Lock {
    /// Takes the lock over `current` (the Lease as read, or `None`), writing `record`.
    /// Fails with `Held` when someone else holds it live.
    pub async fn acquire(
        cluster: &Cluster,
        current: Option<Lease>,
        identity: String,
        duration: i32,
        record: Option<&Record>,
    ) -> Result<Self, LockError> {
        let read_record = record_annotation(current.as_ref());
        let mut current = current;
        let mut attempts = 0;
        let written = loop {
            let now = Timestamp::now();
            if let Some(holder) = current.as_ref().and_then(|l| live_holder(l, now))
                && holder.identity != identity
            {
                return Err(LockError::Held {
                    namespace: cluster.namespace.clone(),
                    holder: holder.identity,
                    expires: holder.expires,
                });
            }
            let mut lease = current.clone().unwrap_or_default();
            claim(
                &mut lease,
                &cluster.namespace,
                &identity,
                duration,
                now,
                record,
            );
            let written = match current {
                None => cluster.create_lease(&lease).await?,
                Some(_) => cluster.replace_lease(&lease, true).await?,
            };
            if let Some(written) = written {
                break written;
            }
            // A conflict: someone wrote the Lease between our read and our write — or we did
            // and the answer was lost, so the retry met our own write. Our identity is unique
            // to this process: a Lease naming it is ours.
            let reread = cluster.lease(LEASE_NAME).await?;
            let holder = reread.as_ref().and_then(holder_of);
            if let Some(lease) = &reread
                && holder.as_deref() == Some(identity.as_str())
            {
                break lease.clone();
            }
            attempts += 1;
            // Another run's record appeared, or conflicts go on: never write over them.
            if attempts >= 5 || record_annotation(reread.as_ref()) != read_record {
                return Err(LockError::Held {
                    namespace: cluster.namespace.clone(),
                    holder: holder.unwrap_or_else(|| "another upgrader".into()),
                    expires: now,
                });
            }
            // The same dead holder (or none) and the same record: take it over as read now.
            current = reread;
        };
        let lease = Arc::new(Mutex::new(written));
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = tokio::spawn(renew_loop(
            cluster.clone(),
            identity.clone(),
            duration,
            lease.clone(),
            lost.clone(),
        ));
        Ok(Self {
            cluster: cluster.clone(),
            identity,
            duration,
            lease,
            lost,
            renewer,
        })
    }

    /// Whether the lock is still ours (checked before every workload write).
    pub fn check(&self) -> Result<(), LockError> {
        if self.lost.load(Ordering::SeqCst) {
            Err(LockError::Lost("another holder".into()))
        } else {
            Ok(())
        }
    }

    /// Writes the record (guarded by the Lease's resourceVersion; a conflict re-reads and
    /// retries as long as the Lease is still ours).
    pub async fn save(&self, record: &Record) -> Result<(), LockError> {
        self.check()?;
        let mut guard = self.lease.lock().await;
        for _ in 0..5 {
            let mut next = guard.clone();
            claim(
                &mut next,
                &self.cluster.namespace,
                &self.identity,
                self.duration,
                Timestamp::now(),
                Some(record),
            );
            if let Some(written) = self.cluster.replace_lease(&next, true).await? {
                *guard = written;
                return Ok(());
            }
            *guard = self.reread_ours().await?;
        }
        Err(LockError::Lost(
            "repeated conflicts while writing the record".into(),
        ))
    }

    async fn reread_ours(&self) -> Result<Lease, LockError> {
        let lease = self.cluster.lease(LEASE_NAME).await?.ok_or_else(|| {
            LockError::Lost(format!(
                "Lease {}/{LEASE_NAME} was deleted",
                self.cluster.namespace
            ))
        })?;
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default();
        if holder != self.identity {
            self.lost.store(true, Ordering::SeqCst);
            return Err(LockError::Lost(holder));
        }
        Ok(lease)
    }

    /// Writes the final record and gives the Lease up (holder cleared, record kept).
    pub async fn release(self, record: &Record) -> Result<(), LockError> {
        self.renewer.abort();
        let mut guard = self.lease.lock().await;
        for _ in 0..5 {
            let mut next = guard.clone();
            claim(
                &mut next,
                &self.cluster.namespace,
                &self.identity,
                self.duration,
                Timestamp::now(),
                Some(record),
            );
            if let Some(spec) = next.spec.as_mut() {
                spec.holder_identity = None;
            }
            if self.cluster.replace_lease(&next, true).await?.is_some() {
                return Ok(());
            }
            *guard = self.reread_ours().await?;
        }
        Err(LockError::Lost(
            "repeated conflicts while releasing the lock".into(),
        ))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

async fn renew_loop(
    cluster: Cluster,
    identity: String,
    duration: i32,
    lease: Arc<Mutex<Lease>>,
    lost: Arc<AtomicBool>,
) {
    let period = Duration::from_millis((u64::try_from(duration).unwrap_or(30) * 1000 / 3).max(200));
    loop {
        tokio::time::sleep(period).await;
        let mut guard = lease.lock().await;
        let mut next = guard.clone();
        claim(
            &mut next,
            &cluster.namespace,
            &identity,
            duration,
            Timestamp::now(),
            None,
        );
        match cluster.replace_lease(&next, false).await {
            Ok(Some(written)) => *guard = written,
            Ok(None) => match cluster.lease(LEASE_NAME).await {
                Ok(Some(current))
                    if current
                        .spec
                        .as_ref()
                        .and_then(|s| s.holder_identity.as_deref())
                        == Some(identity.as_str()) =>
                {
                    *guard = current
                }
                Ok(_) => {
                    tracing::error!("the upgrade lock was taken over by another upgrader");
                    lost.store(true, Ordering::SeqCst);
                    return;
                }
                Err(err) => tracing::warn!("renewing the upgrade lock: {err}"),
            },
            Err(err) => tracing::warn!("renewing the upgrade lock: {err}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed: Timestamp, duration: i32) -> Lease {
        let mut l = Lease::default();
        if let Some(h) = holder {
            claim(&mut l, "kube-system", h, duration, renewed, None);
        }
        l
    }

    #[test]
    fn a_holder_is_live_until_renew_plus_duration() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let l = lease(Some("host/1/a"), t0, 30);
        let at = |s: i64| t0.checked_add(SignedDuration::from_secs(s)).unwrap();
        assert_eq!(live_holder(&l, at(29)).unwrap().identity, "host/1/a");
        assert!(live_holder(&l, at(31)).is_none(), "stale after 30 s");
        assert!(live_holder(&lease(None, t0, 30), at(0)).is_none());
        let mut released = l.clone();
        released.spec.as_mut().unwrap().holder_identity = None;
        assert!(live_holder(&released, at(1)).is_none());
    }

    #[test]
    fn claim_counts_transitions_and_keeps_the_record() {
        let t0 = Timestamp::now();
        let mut l = lease(Some("a"), t0, 30);
        claim(&mut l, "kube-system", "a", 30, t0, None);
        assert_eq!(l.spec.as_ref().unwrap().lease_transitions, Some(1));
        claim(&mut l, "kube-system", "b", 30, t0, None);
        assert_eq!(l.spec.as_ref().unwrap().lease_transitions, Some(2));
        assert!(record_of(&l).is_none());
        l.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(RECORD_ANNOTATION.into(), "not json".into());
        assert!(record_of(&l).unwrap().is_err());
    }

    #[test]
    fn identity_has_host_pid_and_random_part() {
        let id = identity();
        let parts: Vec<&str> = id.split('/').collect();
        assert_eq!(parts.len(), 3, "{id}");
        assert_eq!(parts[1], std::process::id().to_string());
    }
}
