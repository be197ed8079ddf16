//! The upgrader (design §3): `upgrade`, `rollback`, and the read-only `status` and
//! `history`. Pure logic lives in `plan`, `record`, `wait`, `revisions` and `report`; `apply`
//! and `lock` do the I/O.

pub mod apply;
pub mod inspect;
pub mod lock;
pub mod plan;
pub mod record;
pub mod report;
pub mod revisions;
pub mod wait;

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use crate::cluster::{Cluster, ClusterArgs};
use crate::offline::{ConfigArg, OutputFormat};
use crate::policy::Config;
use apply::{Executor, WaitOptions};
use lock::{LEASE_NAME, Lock, LockError, live_holder, record_of};
use plan::{Observed, Preflight, Refusal, Target, Targets, deploy_spec, ds_spec, locate};
use record::{Operation, Phase, Record, Snapshot};
use revisions::selector_string;

/// Exit codes of `upgrade` (design §2).
pub const EXIT_OK: u8 = 0;
pub const EXIT_ROLLED_BACK: u8 = 1;
pub const EXIT_REFUSED: u8 = 2;
pub const EXIT_ROLLBACK_FAILED: u8 = 3;

/// Parses `90`, `90s`, `5m`, `1h`, `1m30s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for ch in text.chars() {
        if ch.is_ascii_digit() {
            number.push(ch);
            continue;
        }
        let n: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration (e.g. 90s, 5m, 1m30s)"))?;
        number.clear();
        total += match ch {
            'h' => n * 3600,
            'm' => n * 60,
            's' => n,
            _ => return Err(format!("{text:?} is not a duration (e.g. 90s, 5m, 1m30s)")),
        };
    }
    if !number.is_empty() || text.is_empty() {
        return Err(format!("{text:?} is not a duration (e.g. 90s, 5m, 1m30s)"));
    }
    Ok(Duration::from_secs(total))
}

/// Flags shared by `upgrade` and `rollback`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub config: ConfigArg,
    /// Deadline of the agent DaemonSet's rollout (default 5m + 30s per node).
    #[arg(long, env = "CCE_GUARD_TIMEOUT", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Deadline of the ipam Deployment's rollout.
    #[arg(long, env = "CCE_GUARD_IPAM_TIMEOUT", value_parser = parse_duration, default_value = "10m")]
    pub ipam_timeout: Duration,
    /// How long new ipam pods stay unschedulable for free host ports before the SOP's remedy
    /// (scale to 0 and back), done once.
    #[arg(long, env = "CCE_GUARD_STUCK_AFTER", value_parser = parse_duration, default_value = "15s")]
    pub stuck_after: Duration,
    /// Lease duration of the upgrade lock, in seconds (renewed every third of it).
    #[arg(long, env = "CCE_GUARD_LEASE_DURATION", default_value_t = 30)]
    pub lease_duration: i32,
    /// Wait up to this long for another upgrader's lock to be released or to expire.
    #[arg(long, env = "CCE_GUARD_LOCK_WAIT", value_parser = parse_duration, default_value = "0s")]
    pub lock_wait: Duration,
    /// A progress line at least this often while waiting.
    #[arg(long, env = "CCE_GUARD_PROGRESS_EVERY", value_parser = parse_duration, default_value = "10s")]
    pub progress_every: Duration,
    #[arg(short = 'o', long, env = "CCE_GUARD_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// Flags of `cce-cni-guard upgrade`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpgradeArgs {
    /// Target version (the running repository with this tag), e.g. v1.9.4.
    #[arg(
        long,
        env = "CCE_GUARD_TO",
        conflicts_with = "image",
        required_unless_present = "image"
    )]
    pub to: Option<String>,
    /// Target image as a full reference.
    #[arg(long, env = "CCE_GUARD_IMAGE")]
    pub image: Option<String>,
    /// Print the plan and stop: nothing is written.
    #[arg(long, env = "CCE_GUARD_DRY_RUN")]
    pub dry_run: bool,
    /// Allow a target lower than the running version.
    #[arg(long, env = "CCE_GUARD_ALLOW_DOWNGRADE")]
    pub allow_downgrade: bool,
    /// On failure leave everything as it is (for debugging) instead of rolling back.
    #[arg(long, env = "CCE_GUARD_NO_ROLLBACK")]
    pub no_rollback: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ComponentArg {
    Agent,
    Ipam,
    All,
}

/// Flags of `cce-cni-guard rollback`.
#[derive(Debug, Clone, clap::Args)]
pub struct RollbackArgs {
    /// Revision to go back to (see `cce-cni-guard history`); needs --component agent or ipam.
    /// Without it: the revision before the current one.
    #[arg(long, env = "CCE_GUARD_TO_REVISION")]
    pub to_revision: Option<i64>,
    /// Which workload to roll back; `all` does ipam first, then the agent (SOP §3).
    #[arg(long, env = "CCE_GUARD_COMPONENT", value_enum, default_value_t = ComponentArg::All)]
    pub component: ComponentArg,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Flags of `status` and `history`.
#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub config: ConfigArg,
    #[arg(short = 'o', long, env = "CCE_GUARD_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// The guard configuration with the workloads in `--namespace` when no file names them.
pub fn load_config(config: &ConfigArg, namespace: &str) -> Result<Config, String> {
    let mut loaded = config.load().map_err(|e| e.to_string())?;
    if config.config.is_none() {
        for w in &mut loaded.workloads {
            w.namespace = namespace.to_owned();
        }
    }
    Ok(loaded)
}

struct Context {
    cluster: Cluster,
    config: Config,
    targets: Targets,
}

async fn context(cluster: &ClusterArgs, config: &ConfigArg) -> Result<Context, String> {
    let config = load_config(config, &cluster.namespace)?;
    let targets = Targets::from_config(&config)?;
    let cluster = Cluster::connect(cluster).await.map_err(|e| e.to_string())?;
    Ok(Context {
        cluster,
        config,
        targets,
    })
}

fn refuse(output: OutputFormat, refusal: &Refusal) -> u8 {
    match output {
        OutputFormat::Json => println!(
            "{}",
            json!({"outcome": "refused", "exitCode": EXIT_REFUSED, "reason": refusal.reason, "wayForward": refusal.way_forward})
        ),
        OutputFormat::Text => eprintln!("refused: {refusal}"),
    }
    EXIT_REFUSED
}

fn refuse_msg(output: OutputFormat, reason: String, way_forward: &str) -> u8 {
    refuse(
        output,
        &Refusal {
            reason,
            way_forward: way_forward.into(),
        },
    )
}

/// Reads the Lease; waits (up to `--lock-wait`) while someone else holds it live.
async fn read_lock(
    ctx: &Context,
    run: &RunArgs,
) -> Result<Option<k8s_openapi::api::coordination::v1::Lease>, Refusal> {
    let give_up = tokio::time::Instant::now() + run.lock_wait;
    loop {
        let lease = ctx.cluster.lease(LEASE_NAME).await.map_err(|e| Refusal {
            reason: e.to_string(),
            way_forward: "check access to Leases in the namespace".into(),
        })?;
        let holder = lease
            .as_ref()
            .and_then(|l| live_holder(l, Timestamp::now()));
        let Some(holder) = holder else {
            return Ok(lease);
        };
        let now = tokio::time::Instant::now();
        if now >= give_up {
            let err = LockError::Held {
                namespace: ctx.cluster.namespace.clone(),
                holder: holder.identity,
                expires: holder.expires,
            };
            return Err(Refusal {
                reason: err.to_string(),
                way_forward:
                    "one upgrader at a time: let the other finish (`cce-cni-guard status`)".into(),
            });
        }
        // Sleep until its claim would run out (or our patience does), then look again.
        let until_expiry = holder
            .expires
            .duration_since(Timestamp::now())
            .try_into()
            .unwrap_or(Duration::from_millis(200))
            + Duration::from_millis(100);
        tokio::time::sleep(until_expiry.min(give_up - now)).await;
    }
}

fn wait_options(run: &RunArgs, no_rollback: bool) -> WaitOptions {
    WaitOptions {
        agent_timeout: run.timeout,
        ipam_timeout: run.ipam_timeout,
        stuck_after: run.stuck_after,
        progress_every: run.progress_every,
        no_rollback,
    }
}

/// Runs a record to its end under a held lock, then reports and releases.
async fn drive(
    ctx: &Context,
    run: &RunArgs,
    lock: Lock,
    record: Record,
    no_rollback: bool,
    started: std::time::Instant,
) -> u8 {
    let options = wait_options(run, no_rollback);
    let mut executor = Executor::new(
        &ctx.cluster,
        &ctx.targets,
        &ctx.config,
        &lock,
        &options,
        record,
    );
    let result = executor.run().await;
    let record = executor.record.clone();
    let log = executor.log.clone();
    drop(executor);
    let phase = match result {
        Ok(phase) => phase,
        Err(err) => {
            eprintln!(
                "error: {err}; the record in Lease {}/{LEASE_NAME} is kept: rerun to converge",
                ctx.cluster.namespace
            );
            return EXIT_ROLLBACK_FAILED;
        }
    };
    if let Err(err) = lock.release(&record).await {
        eprintln!("warning: releasing the upgrade lock: {err}");
    }
    let code = exit_code(record.operation, phase);
    let observed = inspect::observe(&ctx.cluster, &ctx.targets).await.ok();
    let report = report::RunReport::new(
        &record,
        phase,
        code,
        &log,
        started.elapsed(),
        ctx.cluster.writes.count(),
        observed.as_ref(),
        &ctx.targets,
    );
    match run.output {
        OutputFormat::Json => println!("{}", report.json()),
        OutputFormat::Text => print!("{}", report.text()),
    }
    code
}

pub fn exit_code(operation: Operation, phase: Phase) -> u8 {
    match (operation, phase) {
        (_, Phase::Succeeded) => EXIT_OK,
        (Operation::Upgrade, Phase::RolledBack) => EXIT_ROLLED_BACK,
        (Operation::Rollback, Phase::RolledBack) => EXIT_OK,
        (Operation::Rollback, _) => EXIT_ROLLED_BACK,
        (Operation::Upgrade, _) => EXIT_ROLLBACK_FAILED,
    }
}

/// Resumes an interrupted run found in the Lease, if any. `None`: nothing to resume.
async fn resume(
    ctx: &Context,
    run: &RunArgs,
    lease: &Option<k8s_openapi::api::coordination::v1::Lease>,
    no_rollback: bool,
    started: std::time::Instant,
) -> Option<u8> {
    let lease = lease.as_ref()?;
    let mut record = match record_of(lease)? {
        Ok(record) => record,
        Err(err) => {
            return Some(refuse_msg(
                run.output,
                err,
                "inspect the Lease annotation; delete the Lease once the workloads are verified by hand",
            ));
        }
    };
    let mut restarted = false;
    if record.rollback_to_resume(no_rollback) {
        eprintln!(
            "the {} recorded in Lease {}/{LEASE_NAME} ended at phase {} ({}): finishing its rollback to the recorded revisions",
            match record.operation {
                Operation::Upgrade => format!("upgrade to {}", record.target),
                Operation::Rollback => "rollback".into(),
            },
            ctx.cluster.namespace,
            record.phase.as_str(),
            record
                .rollback_failure
                .as_deref()
                .or(record.failure.as_deref())
                .unwrap_or("no reason recorded")
        );
        record.restart_rollback(&Timestamp::now().to_string());
        restarted = true;
    } else if record.phase.is_terminal() {
        return None;
    }
    eprintln!(
        "resuming the interrupted {} recorded in Lease {}/{LEASE_NAME} (phase {}, started {} by {})",
        match record.operation {
            Operation::Upgrade => format!("upgrade to {}", record.target),
            Operation::Rollback => "rollback".into(),
        },
        ctx.cluster.namespace,
        record.phase.as_str(),
        record.started_at,
        record.started_by
    );
    let lock = match Lock::acquire(
        &ctx.cluster,
        Some(lease.clone()),
        lock::identity(),
        run.lease_duration,
        // A restarted rollback is recorded as such at once; a resumed run keeps its record.
        restarted.then_some(&record),
    )
    .await
    {
        Ok(lock) => lock,
        Err(err) => {
            return Some(refuse_msg(
                run.output,
                err.to_string(),
                "one upgrader at a time",
            ));
        }
    };
    Some(drive(ctx, run, lock, record, no_rollback, started).await)
}

/// `cce-cni-guard upgrade`.
pub async fn upgrade(args: UpgradeArgs) -> u8 {
    let started = std::time::Instant::now();
    let output = args.run.output;
    let ctx = match context(&args.run.cluster, &args.run.config).await {
        Ok(ctx) => ctx,
        Err(err) => return refuse_msg(output, err, "check --kubeconfig, --context and --config"),
    };
    let lease = match read_lock(&ctx, &args.run).await {
        Ok(lease) => lease,
        Err(refusal) => return refuse(output, &refusal),
    };
    if args.dry_run
        && let Some(Ok(record)) = lease.as_ref().and_then(record_of)
        && (!record.phase.is_terminal() || record.rollback_to_resume(args.no_rollback))
    {
        eprintln!(
            "dry run: an interrupted {} is recorded at phase {}; a rerun without --dry-run resumes it",
            record.target,
            record.phase.as_str()
        );
        return EXIT_OK;
    }
    if let Some(code) = resume(&ctx, &args.run, &lease, args.no_rollback, started).await {
        return code;
    }
    let observed = match inspect::observe(&ctx.cluster, &ctx.targets).await {
        Ok(o) => o,
        Err(err) => return refuse_msg(output, err.to_string(), "check access to the cluster"),
    };
    let target = match (&args.to, &args.image) {
        (Some(v), _) => Target::Version(v.clone()),
        (None, Some(i)) => Target::Image(i.clone()),
        (None, None) => {
            return refuse_msg(
                output,
                "give --to VERSION or --image REF".into(),
                "e.g. --to v1.9.4",
            );
        }
    };
    let preflight = plan::preflight(
        Observed {
            v1_configmap: observed.configmap,
            agent: observed.agent.as_ref(),
            ipam: observed.ipam.as_ref(),
        },
        &ctx.targets,
        &target,
        args.allow_downgrade,
        &ctx.config,
    );
    let plan = match preflight {
        Err(refusal) => return refuse(output, &refusal),
        Ok(Preflight::NothingToDo { image }) => {
            match output {
                OutputFormat::Json => println!(
                    "{}",
                    json!({"outcome": "nothing-to-do", "exitCode": EXIT_OK, "image": image})
                ),
                OutputFormat::Text => {
                    println!("nothing to do: both workloads already run {image}")
                }
            }
            return EXIT_OK;
        }
        Ok(Preflight::Go(plan)) => plan,
    };
    let (Some(ds), Some(deploy)) = (observed.agent.as_ref(), observed.ipam.as_ref()) else {
        return refuse_msg(output, "a workload vanished".into(), "rerun");
    };
    let change_cause = match (&args.to, &args.image) {
        (Some(_), _) => format!("cce-cni-guard upgrade --to {}", plan.to_version),
        _ => format!("cce-cni-guard upgrade --image {}", plan.target),
    };
    if args.dry_run {
        let text = report::plan_text(&plan, &ctx.targets, &change_cause);
        match output {
            OutputFormat::Json => {
                println!("{}", report::plan_json(&plan, &ctx.targets, &change_cause))
            }
            OutputFormat::Text => print!("{text}"),
        }
        return EXIT_OK;
    }
    // Record the pre-upgrade state: revisions (with their hashes), replicas, Ready counts.
    let snapshots = match snapshots(&ctx, ds, deploy, &plan).await {
        Ok(s) => s,
        Err(err) => {
            return refuse_msg(
                output,
                err,
                "check access to ControllerRevisions and ReplicaSets",
            );
        }
    };
    let identity = lock::identity();
    let now = Timestamp::now().to_string();
    let record = Record {
        operation: Operation::Upgrade,
        target: plan.target.clone(),
        change_cause,
        phase: if plan.agent.change {
            Phase::AgentPatch
        } else {
            Phase::IpamPatch
        },
        agent: snapshots.0,
        ipam: snapshots.1,
        remedy_used: false,
        skip_agent: false,
        skip_ipam: false,
        failure: None,
        rollback_failure: None,
        started_at: now.clone(),
        updated_at: now,
        started_by: identity.clone(),
    };
    let lock = match Lock::acquire(
        &ctx.cluster,
        lease,
        identity,
        args.run.lease_duration,
        Some(&record),
    )
    .await
    {
        Ok(lock) => lock,
        Err(err) => return refuse_msg(output, err.to_string(), "one upgrader at a time"),
    };
    eprintln!(
        "upgrading {} and {} from {} to {}",
        ctx.targets.agent.display_name(),
        ctx.targets.ipam.display_name(),
        plan.agent.from,
        plan.target
    );
    for (w, kind, uid) in [
        (&ctx.targets.agent, "DaemonSet", ds.metadata.uid.clone()),
        (&ctx.targets.ipam, "Deployment", deploy.metadata.uid.clone()),
    ] {
        let message = format!("upgrading from {} to {}", plan.agent.from, plan.target);
        ctx.cluster
            .event(&apply::event(
                w,
                kind,
                uid,
                "UpgradeStarted",
                &message,
                false,
                &lock.identity,
            ))
            .await;
    }
    drive(&ctx, &args.run, lock, record, args.no_rollback, started).await
}

async fn snapshots(
    ctx: &Context,
    ds: &k8s_openapi::api::apps::v1::DaemonSet,
    deploy: &k8s_openapi::api::apps::v1::Deployment,
    plan: &plan::Plan,
) -> Result<(Snapshot, Snapshot), String> {
    let (a, i) = (&ctx.targets.agent, &ctx.targets.ipam);
    let crs = ctx
        .cluster
        .controller_revisions(&a.namespace, &selector_string(Some(&ds.spec.selector)))
        .await
        .map_err(|e| e.to_string())?;
    let rss = ctx
        .cluster
        .replica_sets(&i.namespace, &selector_string(Some(&deploy.spec.selector)))
        .await
        .map_err(|e| e.to_string())?;
    let ds_revs = revisions::ds_revisions(ds, &crs);
    let d_revs = revisions::deploy_revisions(deploy, &rss);
    let ds_cur = revisions::current(&ds_revs, None);
    let d_cur = revisions::current(&d_revs, revisions::deployment_revision(deploy));
    let snap =
        |slots: Vec<plan::Slot>, rev: Option<&revisions::Revision>, desired, ready, replicas| {
            Snapshot {
                slots,
                revision_name: rev.map(|r| r.name.clone()).unwrap_or_default(),
                revision: rev.map(|r| r.number).unwrap_or(0),
                hash: rev.map(|r| r.hash.clone()).unwrap_or_default(),
                desired,
                ready,
                replicas,
            }
        };
    Ok((
        snap(
            plan.agent.slots.clone(),
            ds_cur,
            plan.agent.desired,
            plan.agent.ready,
            None,
        ),
        snap(
            plan.ipam.slots.clone(),
            d_cur,
            plan.ipam.desired,
            plan.ipam.ready,
            Some(plan.ipam.desired),
        ),
    ))
}

/// `cce-cni-guard rollback` (SOP §3 and §3.1).
pub async fn rollback(args: RollbackArgs) -> u8 {
    let started = std::time::Instant::now();
    let output = args.run.output;
    let ctx = match context(&args.run.cluster, &args.run.config).await {
        Ok(ctx) => ctx,
        Err(err) => return refuse_msg(output, err, "check --kubeconfig, --context and --config"),
    };
    if args.to_revision.is_some() && args.component == ComponentArg::All {
        return refuse_msg(
            output,
            "--to-revision needs --component agent or --component ipam: the two workloads number their revisions separately".into(),
            "see `cce-cni-guard history` for each workload's revisions",
        );
    }
    let lease = match read_lock(&ctx, &args.run).await {
        Ok(lease) => lease,
        Err(refusal) => return refuse(output, &refusal),
    };
    if let Some(code) = resume(&ctx, &args.run, &lease, false, started).await {
        return code;
    }
    let observed = match inspect::observe(&ctx.cluster, &ctx.targets).await {
        Ok(o) => o,
        Err(err) => return refuse_msg(output, err.to_string(), "check access to the cluster"),
    };
    let (Some(ds), Some(deploy)) = (observed.agent.as_ref(), observed.ipam.as_ref()) else {
        return refuse_msg(
            output,
            "both guarded workloads must exist".into(),
            "check --namespace and --config",
        );
    };
    let chosen = match rollback_plan(&ctx, ds, deploy, &args).await {
        Ok(c) => c,
        Err(refusal) => return refuse(output, &refusal),
    };
    if chosen.skip_agent && chosen.skip_ipam {
        println!("nothing to do: the chosen revisions' images already run");
        return EXIT_OK;
    }
    let identity = lock::identity();
    let now = Timestamp::now().to_string();
    let record = Record {
        operation: Operation::Rollback,
        target: String::new(),
        change_cause: "cce-cni-guard rollback".into(),
        phase: Phase::RollbackIpam,
        agent: chosen.agent,
        ipam: chosen.ipam,
        remedy_used: false,
        skip_agent: chosen.skip_agent,
        skip_ipam: chosen.skip_ipam,
        failure: None,
        rollback_failure: None,
        started_at: now.clone(),
        updated_at: now,
        started_by: identity.clone(),
    };
    let lock = match Lock::acquire(
        &ctx.cluster,
        lease,
        identity,
        args.run.lease_duration,
        Some(&record),
    )
    .await
    {
        Ok(lock) => lock,
        Err(err) => return refuse_msg(output, err.to_string(), "one upgrader at a time"),
    };
    for (w, kind, uid) in [
        (&ctx.targets.agent, "DaemonSet", ds.metadata.uid.clone()),
        (&ctx.targets.ipam, "Deployment", deploy.metadata.uid.clone()),
    ] {
        ctx.cluster
            .event(&apply::event(
                w,
                kind,
                uid,
                "RollbackStarted",
                "rollback requested",
                false,
                &lock.identity,
            ))
            .await;
    }
    drive(&ctx, &args.run, lock, record, false, started).await
}

struct RollbackChoice {
    agent: Snapshot,
    ipam: Snapshot,
    skip_agent: bool,
    skip_ipam: bool,
}

/// Picks the revision per component and checks with the guard that it may be moved to.
async fn rollback_plan(
    ctx: &Context,
    ds: &k8s_openapi::api::apps::v1::DaemonSet,
    deploy: &k8s_openapi::api::apps::v1::Deployment,
    args: &RollbackArgs,
) -> Result<RollbackChoice, Refusal> {
    let (a, i) = (&ctx.targets.agent, &ctx.targets.ipam);
    let err = |e: crate::cluster::ClusterError| Refusal {
        reason: e.to_string(),
        way_forward: "check access to the cluster".into(),
    };
    let crs = ctx
        .cluster
        .controller_revisions(&a.namespace, &selector_string(Some(&ds.spec.selector)))
        .await
        .map_err(err)?;
    let rss = ctx
        .cluster
        .replica_sets(&i.namespace, &selector_string(Some(&deploy.spec.selector)))
        .await
        .map_err(err)?;
    let ds_revs = revisions::ds_revisions(ds, &crs);
    let d_revs = revisions::deploy_revisions(deploy, &rss);
    let want_agent = args.component != ComponentArg::Ipam;
    let want_ipam = args.component != ComponentArg::Agent;
    let ds_status = ds.status.clone().unwrap_or_default();
    let d_status = deploy.status.clone().unwrap_or_default();
    let replicas = deploy.spec.replicas.unwrap_or(1);
    let mut choice = RollbackChoice {
        agent: Snapshot {
            slots: locate(a, ds_spec(ds)).map_err(|e| Refusal {
                reason: e,
                way_forward: "check --config".into(),
            })?,
            desired: ds_status.desired_number_scheduled,
            ready: ds_status.number_ready,
            ..Default::default()
        },
        ipam: Snapshot {
            slots: locate(i, deploy_spec(deploy)).map_err(|e| Refusal {
                reason: e,
                way_forward: "check --config".into(),
            })?,
            desired: replicas,
            ready: d_status.ready_replicas.unwrap_or(0),
            replicas: Some(replicas),
            ..Default::default()
        },
        skip_agent: !want_agent,
        skip_ipam: !want_ipam,
    };
    let agent_now = ds_spec(ds).map(crate::policy::PodTemplateImages::from_pod_spec);
    let mut ipam_after = deploy_spec(deploy).map(crate::policy::PodTemplateImages::from_pod_spec);
    // ipam first (SOP order): judged against the agent as it is; the agent then against ipam
    // as it will be.
    if want_ipam {
        let current = revisions::current(&d_revs, revisions::deployment_revision(deploy));
        let chosen = choose_revision(
            ChosenFor {
                workload: i,
                sibling: (a, agent_now.as_ref()),
                object: serde_json::to_value(deploy).unwrap_or_default(),
                has_annotations: deploy.metadata.annotations.is_some(),
            },
            &d_revs,
            current,
            args.to_revision,
            &mut choice.ipam,
            &ctx.config,
        )?;
        choice.skip_ipam = chosen.0;
        ipam_after = chosen.1;
    }
    if want_agent {
        let current = revisions::current(&ds_revs, None);
        choice.skip_agent = choose_revision(
            ChosenFor {
                workload: a,
                sibling: (i, ipam_after.as_ref()),
                object: serde_json::to_value(ds).unwrap_or_default(),
                has_annotations: ds.metadata.annotations.is_some(),
            },
            &ds_revs,
            current,
            args.to_revision,
            &mut choice.agent,
            &ctx.config,
        )?
        .0;
    }
    Ok(choice)
}

/// The workload a rollback revision is chosen for, as read.
struct ChosenFor<'a> {
    workload: &'a crate::policy::GuardedWorkload,
    sibling: (
        &'a crate::policy::GuardedWorkload,
        Option<&'a crate::policy::PodTemplateImages>,
    ),
    object: serde_json::Value,
    has_annotations: bool,
}

/// Picks the rollback revision of one workload, asks the guard whether moving to it would
/// be allowed, and fills `snapshot` with it. Returns whether the workload already runs its
/// images (nothing to do) and its guarded images after the move.
fn choose_revision(
    w: ChosenFor<'_>,
    revisions: &[revisions::Revision],
    current: Option<&revisions::Revision>,
    to_revision: Option<i64>,
    snapshot: &mut Snapshot,
    config: &Config,
) -> Result<(bool, Option<crate::policy::PodTemplateImages>), Refusal> {
    let name = w.workload.display_name();
    let target =
        revisions::rollback_target(revisions, current, to_revision).map_err(|e| Refusal {
            reason: format!("{name}: {e}"),
            way_forward: "see `cce-cni-guard history`".into(),
        })?;
    let patch = plan::template_patch(
        &snapshot.slots,
        &target.template,
        "cce-cni-guard rollback",
        w.has_annotations,
    );
    let (next, _) = plan::guard_check(w.workload, &w.object, &patch, w.sibling, config).map_err(|m| Refusal {
        reason: format!("the guard would refuse moving {name} to revision {}:\n{m}", target.number),
        way_forward: "pick another revision (`cce-cni-guard history`); minor versions change through the helm chart".into(),
    })?;
    let target_slots = target
        .pod_template()
        .and_then(|t| t.spec)
        .map(|s| locate(w.workload, Some(&s)))
        .transpose()
        .map_err(|e| Refusal {
            reason: e,
            way_forward: "pick another revision".into(),
        })?
        .unwrap_or_default();
    let already = record_same(&snapshot.slots, &target_slots);
    snapshot.slots = target_slots;
    snapshot.revision_name = target.name.clone();
    snapshot.revision = target.number;
    snapshot.hash = target.hash.clone();
    Ok((
        already,
        crate::policy::PodTemplateImages::from_workload(&next).ok(),
    ))
}

fn record_same(now: &[plan::Slot], target: &[plan::Slot]) -> bool {
    now.len() == target.len()
        && now.iter().all(|n| {
            target
                .iter()
                .any(|t| t.container == n.container && plan::same_image(&t.image, &n.image))
        })
}

/// `cce-cni-guard status`.
pub async fn status(args: InspectArgs) -> u8 {
    match context(&args.cluster, &args.config).await {
        Ok(ctx) => inspect::status(&ctx.cluster, &ctx.targets, &ctx.config, args.output).await,
        Err(err) => {
            eprintln!("error: {err}");
            1
        }
    }
}

/// `cce-cni-guard history`.
pub async fn history(args: InspectArgs) -> u8 {
    match context(&args.cluster, &args.config).await {
        Ok(ctx) => inspect::history(&ctx.cluster, &ctx.targets, args.output).await,
        Err(err) => {
            eprintln!("error: {err}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_people_write_them() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["", "m", "5x", "1.5m", "5m3"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exit_codes_follow_the_contract() {
        assert_eq!(exit_code(Operation::Upgrade, Phase::Succeeded), 0);
        assert_eq!(exit_code(Operation::Upgrade, Phase::RolledBack), 1);
        assert_eq!(exit_code(Operation::Upgrade, Phase::RollbackFailed), 3);
        assert_eq!(exit_code(Operation::Upgrade, Phase::Failed), 3);
        assert_eq!(exit_code(Operation::Rollback, Phase::RolledBack), 0);
        assert_eq!(exit_code(Operation::Rollback, Phase::RollbackFailed), 1);
    }
}
