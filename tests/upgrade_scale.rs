//! A 1,000-node upgrade completes, and the upgrader's request count does not grow with the
//! node count: waits are watches (events stream in one response), lists are one page.

mod common;

use std::time::{Duration, Instant};

use cce_cni_guard::sim::model::{IpamStrategy, Resource};
use common::{AGENT, Env};

struct Measured {
    requests: u64,
    /// PUTs of the upgrade Lease: renewals every third of the lease duration and the
    /// record's phase changes; they grow with wall time, not with nodes.
    lease_writes: u64,
    /// From the DaemonSet's rollout being complete in the store to the upgrader's next
    /// recorded phase (it noticed and moved on to ipam).
    noticed_after: Duration,
    elapsed: Duration,
}

async fn measure(workers: usize) -> Measured {
    let env = Env::start(|o| {
        o.cluster.workers = workers;
        o.cluster.ipam_strategy = IpamStrategy::Recreate;
        o.behaviour.pod_ready_delay = Duration::ZERO;
    })
    .await;
    // Large clusters roll the agent out in batches: 10 % of the nodes at a time.
    {
        use k8s_openapi::api::apps::v1::DaemonSet;
        use kube::api::{Api, Patch, PatchParams};
        let api: Api<DaemonSet> = Api::namespaced(env.client().await, common::NS);
        let patch = serde_json::json!({"spec": {"updateStrategy": {"rollingUpdate": {"maxUnavailable": "10%"}}}});
        api.patch(AGENT, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .unwrap();
        env.sim.settle().await;
    }
    let started = Instant::now();
    let watcher = {
        let sim = env.sim.clone();
        tokio::spawn(async move {
            let mut completed_at = None;
            loop {
                let ds = sim.get(Resource::DaemonSets, Some(common::NS), AGENT);
                let lease = sim.get(Resource::Leases, Some(common::NS), "cce-cni-guard-upgrade");
                let phase = lease
                    .as_ref()
                    .and_then(|l| {
                        l["metadata"]["annotations"]["cce-cni-guard.cce.baidubce.com/upgrade-record"]
                            .as_str()
                            .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
                    })
                    .map(|r| r["phase"].as_str().unwrap_or("").to_owned())
                    .unwrap_or_default();
                if let Some(ds) = ds {
                    let s = &ds["status"];
                    let done = ds["metadata"]["generation"].as_i64()
                        == s["observedGeneration"].as_i64()
                        && s["updatedNumberScheduled"] == s["desiredNumberScheduled"]
                        && s["numberAvailable"] == s["desiredNumberScheduled"]
                        && ds["spec"]["template"]["spec"]["containers"][0]["image"]
                            .as_str()
                            .is_some_and(|i| i.ends_with("v1.9.4"));
                    if done && completed_at.is_none() {
                        completed_at = Some(Instant::now());
                    }
                }
                if let Some(at) = completed_at
                    && phase != "agent-wait"
                    && phase != "agent-patch"
                {
                    return at.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let out = env
        .run_within(
            Duration::from_secs(1500),
            &[
                "upgrade",
                "--to",
                "v1.9.4",
                "--timeout",
                "20m",
                "--stuck-after",
                "1s",
            ],
            &[],
        )
        .await;
    assert_eq!(out.code, 0, "{workers} workers: {out}");
    env.assert_images("v1.9.4", "v1.9.4");
    let noticed_after = watcher.await.unwrap();
    let lease_writes = env
        .upgrader_writes()
        .iter()
        .filter(|w| w.starts_with("PUT ") && w.contains("/leases/"))
        .count() as u64;
    Measured {
        requests: env.upgrader_requests(),
        lease_writes,
        noticed_after,
        elapsed: started.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_node_upgrade_costs_no_more_requests_than_five() {
    let small = measure(2).await;
    let large = measure(997).await;
    eprintln!(
        "upgrader requests: 5 nodes {} ({} Lease PUTs; {:?}, noticed {:?} after completion); \
         1,000 nodes {} ({} Lease PUTs; {:?}, noticed {:?} after completion)",
        small.requests,
        small.lease_writes,
        small.elapsed,
        small.noticed_after,
        large.requests,
        large.lease_writes,
        large.elapsed,
        large.noticed_after
    );
    // Beyond the Lease, a longer rollout may only add a re-watch or two (watch timeouts).
    let (small_rest, large_rest) = (
        small.requests - small.lease_writes,
        large.requests - large.lease_writes,
    );
    assert!(
        large_rest <= small_rest + 4,
        "requests grow with nodes: 5 → {small_rest}, 1,000 → {large_rest} (Lease PUTs aside)"
    );
}
