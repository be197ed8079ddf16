//! Crash safety: the upgrader killed right after its Nth write (the test hook exits with 137),
//! for every N, then rerun: it converges every time, applies no step twice and keeps the
//! pre-upgrade revision.

mod common;

use common::{Env, FAST};

const HOOK: &str = "CCE_GUARD_TEST_EXIT_AFTER_WRITES";

#[tokio::test(flavor = "multi_thread")]
async fn killed_after_every_write_then_rerun_converges() {
    let mut killed_at = Vec::new();
    for n in 1..=40u32 {
        let env = Env::start(|_| {}).await;
        let (revisions, ipam_revision) = (env.controller_revisions(), env.deployment_revision());
        let nth = n.to_string();
        let first = env.upgrade(&["--to", "v1.9.4"], &[(HOOK, &nth)]).await;
        if first.code != 137 {
            assert_eq!(
                first.code, 0,
                "a run with fewer writes than {n} completes: {first}"
            );
            break;
        }
        killed_at.push(n);
        let record = env.record();
        assert!(!record.is_null(), "the record exists after write {n}");
        // The rerun waits for the dead holder's lease to expire, then resumes.
        let rerun = env.upgrade(&["--to", "v1.9.4"], &[]).await;
        assert_eq!(rerun.code, 0, "rerun after a crash at write {n}: {rerun}");
        env.assert_images("v1.9.4", "v1.9.4");
        assert_eq!(
            env.controller_revisions(),
            revisions + 1,
            "crash at write {n}: the agent template changed exactly once"
        );
        assert_eq!(
            env.deployment_revision().parse::<i64>().unwrap(),
            ipam_revision.parse::<i64>().unwrap() + 1,
            "crash at write {n}: the ipam template changed exactly once"
        );
        let record = env.record();
        assert_eq!(record["phase"], "succeeded", "write {n}");
        assert_eq!(
            record["agent"]["revision"].to_string(),
            revisions.to_string(),
            "write {n}: the pre-upgrade revision is kept"
        );
        assert_eq!(record["ipam"]["replicas"], 3, "write {n}");
        let status = env.run(&["status"], &[]).await;
        assert_eq!(status.code, 0, "write {n}: {status}");
    }
    assert!(
        killed_at.len() >= 10,
        "every step was interrupted once: {killed_at:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_during_the_rollback_then_rerun_finishes_it() {
    let mut killed_at = Vec::new();
    for n in 1..=40u32 {
        let env =
            Env::start(|o| o.behaviour.broken_image = Some(r"cce-cni:v1\.9\.4$".into())).await;
        let nth = n.to_string();
        let first = env.upgrade(&["--to", "v1.9.4"], &[(HOOK, &nth)]).await;
        if first.code != 137 {
            assert_eq!(first.code, 1, "{first}");
            break;
        }
        killed_at.push(n);
        let mut args = vec!["upgrade", "--to", "v1.9.4"];
        args.extend_from_slice(FAST);
        let rerun = env.run(&args, &[]).await;
        assert_eq!(
            rerun.code, 1,
            "crash at write {n}: the rerun ends rolled back: {rerun}"
        );
        env.assert_images("v1.9.3", "v1.9.3");
        assert_eq!(env.record()["phase"], "rolled-back", "write {n}");
    }
    assert!(killed_at.len() >= 5, "{killed_at:?}");
}
