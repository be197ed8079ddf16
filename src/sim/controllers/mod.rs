//! Pure controllers of the simulated cluster: DaemonSet, Deployment, ReplicaSet, scheduler
//! and kubelet. Each reads a [`Snapshot`] and returns the writes it wants.

use super::model::{Behaviour, Reconciled, Snapshot};

/// One pass of every controller over the snapshot.
pub fn reconcile(_snapshot: &Snapshot, _behaviour: &Behaviour) -> Reconciled {
    Reconciled::default()
}
