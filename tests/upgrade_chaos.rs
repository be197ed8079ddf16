//! Upgrader chaos (issue #8): 50 seeded runs of `upgrade --to v1.9.4` against the simulated
//! cluster with the guard registered. Each seed injects its own API failures (5xx, 409, 429 on
//! chosen verbs and resources, before or after the request is carried out), latency, watch
//! drops, maybe kills after the Nth write or at a moment (each followed by a rerun, as the
//! Job's restart would), for some a guard outage (a run that exits 3, "rerun to converge", is
//! rerun once the guard answers), and for some a broken target image. A seed fixes the plan;
//! the interleaving with the sim's controllers still varies from run to run.
//!
//! Every run must end in one of two states, never in between:
//! - upgraded: all three guarded containers on v1.9.4, both rollouts complete, every pod on it,
//!   each template changed exactly once;
//! - rolled back: both pod templates equal to what they were before, on the recorded
//!   revisions, rollouts complete, every pod on v1.9.3.
//!
//! `CHAOS_SEEDS=7,19` runs only those seeds (to reproduce one).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cce_cni_guard::sim::admission::WebhookAdmission;
use cce_cni_guard::sim::guard::{GUARD_NAMESPACE, GUARD_SERVICE};
use cce_cni_guard::sim::model::Resource;
use cce_cni_guard::sim::server::FaultRule;
use common::{AGENT, Env, FAST, IPAM, NS, image};
use serde_json::Value;

const SEEDS: u64 = 50;
/// Seeds run side by side, each with its own sim, guard and upgrader processes.
const PARALLEL: usize = 3;
const HOOK: &str = "CCE_GUARD_TEST_EXIT_AFTER_WRITES";
const FROM: &str = "v1.9.3";
const TO: &str = "v1.9.4";

/// splitmix64: a seed gives the same chaos on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// How a run is cut short.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// The test hook exits right after the Nth write.
    AfterWrites(u32),
    /// SIGKILL at a moment that may fall in the middle of a request or a wait.
    After(Duration),
}

/// What one seed does to the cluster and the upgrader.
#[derive(Debug, Clone)]
struct Chaos {
    seed: u64,
    /// `METHOD:PATH:STATUS:COUNT[:applied]` rules, each armed at its moment after the start and
    /// consumed as matching requests arrive.
    faults: Vec<(Duration, String)>,
    latency: Duration,
    /// Close every watch this often.
    drop_every: Option<Duration>,
    /// Each entry cuts one run short; the next run resumes from the record.
    kills: Vec<Kill>,
    /// The target image cannot be pulled: the run must end rolled back.
    broken: bool,
    /// The guard is unreachable from this moment for this long: the apiserver refuses the
    /// guarded writes (failurePolicy Fail) as it does with no endpoints behind the Service.
    outage: Option<(Duration, Duration)>,
}

/// Requests the upgrader makes, and what an apiserver may answer them with. A 409 only where
/// the apiserver answers one for a stale write (a precondition, a resourceVersion). Writes
/// may also be carried out with their answer lost (`applied`).
const TARGETS: &[(&str, &str, &[u16], bool)] = &[
    ("PATCH", "/daemonsets/", &[409, 500, 503, 429], true),
    ("PATCH", "/deployments/", &[409, 500, 503, 429], true),
    ("PATCH", "/scale", &[500, 503, 429], true),
    ("PUT", "/leases/", &[409, 500, 503, 429], true),
    ("POST", "/leases", &[500, 503, 429], true),
    ("GET", "/leases/", &[500, 502, 429], false),
    ("GET", "/daemonsets", &[500, 502, 503, 429], false),
    ("GET", "/deployments", &[500, 502, 503, 429], false),
    ("GET", "/pods", &[500, 503, 429], false),
    ("GET", "/controllerrevisions", &[500, 503], false),
    ("GET", "/replicasets", &[500, 503], false),
    ("GET", "/configmaps/", &[500, 429], false),
    ("POST", "/events", &[500, 503, 429], true),
];

fn chaos(seed: u64) -> Chaos {
    let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x8);
    let faults = (0..rng.below(7))
        .map(|_| {
            let (method, path, statuses, writes) = *rng.pick(TARGETS);
            // At most three in a row: fewer than the client's retries and re-plans allow, so
            // faults alone never have to end a run.
            let count = 1 + rng.below(3);
            let rule = if writes && rng.chance(30) {
                let status = *rng.pick(&[500, 503, 504]);
                format!("{method}:{path}:{status}:{count}:applied")
            } else {
                let status = *rng.pick(statuses);
                format!("{method}:{path}:{status}:{count}")
            };
            let at = if rng.chance(40) {
                Duration::ZERO
            } else {
                Duration::from_millis(rng.below(6000))
            };
            (at, rule)
        })
        .collect();
    let latency = Duration::from_millis(*rng.pick(&[0, 0, 2, 10, 25]));
    let drop_every = rng
        .chance(50)
        .then(|| Duration::from_millis(300 + rng.below(1200)));
    let kill = |rng: &mut Rng| {
        if rng.chance(60) {
            Kill::AfterWrites(1 + rng.below(12) as u32)
        } else {
            Kill::After(Duration::from_millis(200 + rng.below(4000)))
        }
    };
    let kills = match rng.below(10) {
        0..=3 => Vec::new(),
        4..=7 => vec![kill(&mut rng)],
        _ => vec![kill(&mut rng), kill(&mut rng)],
    };
    let broken = rng.chance(25);
    let outage = rng.chance(25).then(|| {
        (
            Duration::from_millis(500 + rng.below(4500)),
            Duration::from_millis(1000 + rng.below(15000)),
        )
    });
    Chaos {
        seed,
        faults,
        latency,
        drop_every,
        kills,
        broken,
        outage,
    }
}

/// What a seed ended as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Upgraded,
    RolledBack,
}

#[derive(Debug)]
struct Ran {
    chaos: Chaos,
    outcome: Outcome,
    /// Exit codes of the first run and each rerun.
    codes: Vec<i32>,
    failure: Option<String>,
    seconds: f64,
}

/// The state before the upgrade, to compare the end state with.
struct Before {
    agent_template: Value,
    ipam_template: Value,
    ipam_replicas: Value,
    agent_revisions: usize,
    ipam_revision: i64,
}

fn before(env: &Env) -> Before {
    Before {
        agent_template: env.get(Resource::DaemonSets, AGENT)["spec"]["template"].clone(),
        ipam_template: env.get(Resource::Deployments, IPAM)["spec"]["template"].clone(),
        ipam_replicas: env.get(Resource::Deployments, IPAM)["spec"]["replicas"].clone(),
        agent_revisions: env.controller_revisions(),
        ipam_revision: env.deployment_revision().parse().unwrap_or(0),
    }
}

async fn run_seed(chaos: Chaos) -> Result<Ran, String> {
    let broken = chaos.broken;
    let env = Env::start(|o| {
        if broken {
            o.behaviour.broken_image = Some(r"cce-cni:v1\.9\.4$".into());
        }
    })
    .await;
    let result = exercise(&env, chaos).await;
    // The sim does not stop when dropped: stop it, or finished seeds keep the CPU busy.
    env.sim.clone().shutdown().await;
    result
}

async fn exercise(env: &Env, chaos: Chaos) -> Result<Ran, String> {
    let started = std::time::Instant::now();
    let broken = chaos.broken;
    let before = before(env);
    let mut armed = Vec::new();
    for (at, rule) in &chaos.faults {
        let rule = rule.parse::<FaultRule>()?;
        if at.is_zero() {
            env.sim.fail_next(rule);
        } else {
            let (sim, at) = (env.sim.clone(), *at);
            armed.push(tokio::spawn(async move {
                tokio::time::sleep(at).await;
                sim.fail_next(rule);
            }));
        }
    }
    env.sim.set_latency(chaos.latency);
    let outage = chaos.outage.map(|(at, length)| {
        let down = switchable_guard(env);
        tokio::spawn(async move {
            tokio::time::sleep(at).await;
            down.store(true, Ordering::SeqCst);
            tokio::time::sleep(length).await;
            down.store(false, Ordering::SeqCst);
        })
    });
    let dropper = chaos.drop_every.map(|every| {
        let sim = env.sim.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                sim.drop_watches();
            }
        })
    });
    let mut codes = Vec::new();
    let mut last = None;
    let mut args = vec!["upgrade", "--to", TO, "-o", "json"];
    args.extend_from_slice(FAST);
    // Each kill ends one run; the next run resumes from the record. The last run is not killed.
    for run in 0..=chaos.kills.len() {
        let out = match chaos.kills.get(run) {
            // At debug level, so that the check below reads what the client logs too.
            None => Some(
                env.run_within(
                    Duration::from_secs(240),
                    &args,
                    &[("CCE_GUARD_LOG", "debug")],
                )
                .await,
            ),
            Some(Kill::AfterWrites(n)) => {
                let n = n.to_string();
                Some(
                    env.run_within(Duration::from_secs(240), &args, &[(HOOK, &n)])
                        .await,
                )
            }
            Some(Kill::After(after)) => env.run_killed_after(*after, &args, &[]).await,
        };
        match out {
            // Killed by the deadline: recorded as the hook's code.
            None => codes.push(137),
            Some(out) => {
                codes.push(out.code);
                let killed = out.code == 137;
                last = Some(out);
                if !killed {
                    break;
                }
            }
        }
    }
    // Exit 3 says "the record is kept: rerun to converge"; an operator reruns once the guard
    // answers again.
    if let Some(outage) = outage {
        let _ = outage.await;
    }
    let mut reruns = 0;
    while last.as_ref().is_some_and(|out| out.code == 3) && reruns < 2 {
        reruns += 1;
        let out = env
            .run_within(
                Duration::from_secs(240),
                &args,
                &[("CCE_GUARD_LOG", "debug")],
            )
            .await;
        codes.push(out.code);
        last = Some(out);
    }
    for task in armed {
        task.abort();
    }
    if let Some(dropper) = dropper {
        dropper.abort();
    }
    let last = last.expect("the last run is never killed");
    // The last run logs at debug: its stderr's tail is what explains a failure.
    let stderr: Vec<&str> = last.stderr.lines().collect();
    let tail = stderr[stderr.len().saturating_sub(80)..].join("\n");
    let context = || {
        format!(
            "seed {} {:?}: exit codes {codes:?}\n--- stdout\n{}\n--- stderr (last 80 lines)\n{tail}",
            chaos.seed, chaos, last.stdout
        )
    };
    let outcome = end_state(env, &before).map_err(|why| format!("{why}\n{}", context()))?;
    let expected_code = match outcome {
        Outcome::Upgraded => 0,
        Outcome::RolledBack => 1,
    };
    if last.code != expected_code {
        return Err(format!(
            "ended {outcome:?} but the last run exited {}\n{}",
            last.code,
            context()
        ));
    }
    if broken && outcome != Outcome::RolledBack {
        return Err(format!(
            "the target image is broken, yet {outcome:?}\n{}",
            context()
        ));
    }
    let token = env.sim.admin_token();
    if last.stdout.contains(token) || last.stderr.contains(token) {
        return Err(format!(
            "the upgrader printed its bearer token\n{}",
            context()
        ));
    }
    let denied = guard_denials(env);
    if denied != 0 {
        return Err(format!(
            "the guard denied {denied} of the upgrader's writes\n{}",
            context()
        ));
    }
    let record = env.record();
    let failure = record["failure"].as_str().map(str::to_owned);
    let seconds = started.elapsed().as_secs_f64();
    Ok(Ran {
        chaos,
        outcome,
        codes,
        failure,
        seconds,
    })
}

fn guard_denials(env: &Env) -> u64 {
    env.guard
        .server()
        .metrics()
        .encode()
        .lines()
        .filter(|l| l.starts_with("cce_cni_guard_admission_requests_total{"))
        .filter(|l| l.contains("decision=\"denied\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Classifies the end state; `Err` says what is in between or mismatched.
fn end_state(env: &Env, before: &Before) -> Result<Outcome, String> {
    let (agent, ipam) = env.images();
    let all = |tag: &str| {
        agent.len() == 2 && ipam.len() == 1 && agent.iter().chain(&ipam).all(|i| *i == image(tag))
    };
    let outcome = if all(TO) {
        Outcome::Upgraded
    } else if all(FROM) {
        Outcome::RolledBack
    } else {
        return Err(format!(
            "in between or mismatched: agent {agent:?}, ipam {ipam:?}"
        ));
    };
    let ds = env.get(Resource::DaemonSets, AGENT);
    let deploy = env.get(Resource::Deployments, IPAM);
    rollout_complete(&ds, &deploy)?;
    let tag = if outcome == Outcome::Upgraded {
        TO
    } else {
        FROM
    };
    pods_on(env, tag)?;
    let record = env.record();
    let lease = env.get(Resource::Leases, "cce-cni-guard-upgrade");
    if lock_is_live(&lease["spec"]) {
        return Err(format!("the upgrade lock is still held: {}", lease["spec"]));
    }
    let ipam_revision: i64 = env.deployment_revision().parse().unwrap_or(0);
    match outcome {
        Outcome::Upgraded => {
            if record["phase"] != "succeeded" {
                return Err(format!("upgraded, but the record says {}", record["phase"]));
            }
            // Applied once: one new revision of each workload.
            if env.controller_revisions() != before.agent_revisions + 1 {
                return Err(format!(
                    "the agent template changed {} times",
                    env.controller_revisions() - before.agent_revisions
                ));
            }
            if ipam_revision != before.ipam_revision + 1 {
                return Err(format!(
                    "ipam revision {} after {}: the template changed more than once",
                    ipam_revision, before.ipam_revision
                ));
            }
        }
        Outcome::RolledBack => {
            if record["phase"] != "rolled-back" {
                return Err(format!(
                    "rolled back, but the record says {}",
                    record["phase"]
                ));
            }
            if without_nulls(&ds["spec"]["template"]) != without_nulls(&before.agent_template) {
                return Err(format!(
                    "the agent template differs from before:\n{:#}\nvs\n{:#}",
                    ds["spec"]["template"], before.agent_template
                ));
            }
            if without_nulls(&deploy["spec"]["template"]) != without_nulls(&before.ipam_template) {
                return Err(format!(
                    "the ipam template differs from before:\n{:#}\nvs\n{:#}",
                    deploy["spec"]["template"], before.ipam_template
                ));
            }
            if deploy["spec"]["replicas"] != before.ipam_replicas {
                return Err(format!(
                    "ipam replicas {} (were {})",
                    deploy["spec"]["replicas"], before.ipam_replicas
                ));
            }
            // On the recorded revisions: the newest revision of each is the recorded hash.
            let agent_hash = newest_agent_hash(env);
            if agent_hash.as_deref() != record["agent"]["hash"].as_str() {
                return Err(format!(
                    "the agent runs revision hash {agent_hash:?}, recorded {}",
                    record["agent"]["hash"]
                ));
            }
            let ipam_hash = newest_ipam_hash(env);
            if ipam_hash.as_deref() != record["ipam"]["hash"].as_str() {
                return Err(format!(
                    "ipam runs pod-template-hash {ipam_hash:?}, recorded {}",
                    record["ipam"]["hash"]
                ));
            }
            // At most one forward and one backward change of each.
            if env.controller_revisions() > before.agent_revisions + 1 {
                return Err("more than one new agent revision".into());
            }
            if ipam_revision > before.ipam_revision + 2 {
                return Err(format!(
                    "ipam revision {ipam_revision} after {}: changed more than there and back",
                    before.ipam_revision
                ));
            }
        }
    }
    Ok(outcome)
}

/// The object with null fields left out: `creationTimestamp: null` in a template and no
/// `creationTimestamp` say the same, and a template restored from a revision may differ so.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Whether a holder still claims the Lease. A run killed between its last record write and
/// the release leaves its name behind, which expires like any dead holder's.
fn lock_is_live(spec: &Value) -> bool {
    if spec["holderIdentity"].is_null() {
        return false;
    }
    let renewed = spec["renewTime"]
        .as_str()
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
    let duration = spec["leaseDurationSeconds"].as_i64().unwrap_or(0);
    renewed.is_none_or(|renewed| {
        renewed + k8s_openapi::jiff::SignedDuration::from_secs(duration)
            > k8s_openapi::jiff::Timestamp::now()
    })
}

fn rollout_complete(ds: &Value, deploy: &Value) -> Result<(), String> {
    let n = |v: &Value| v.as_i64().unwrap_or(-1);
    let s = &ds["status"];
    let generation = n(&ds["metadata"]["generation"]);
    if n(&s["observedGeneration"]) < generation
        || n(&s["updatedNumberScheduled"]) != n(&s["desiredNumberScheduled"])
        || n(&s["numberAvailable"]) != n(&s["desiredNumberScheduled"])
        || n(&s["desiredNumberScheduled"]) <= 0
    {
        return Err(format!("the agent rollout is not complete: {s}"));
    }
    let s = &deploy["status"];
    let replicas = n(&deploy["spec"]["replicas"]);
    if n(&s["observedGeneration"]) < n(&deploy["metadata"]["generation"])
        || n(&s["updatedReplicas"]) != replicas
        || n(&s["replicas"]) != replicas
        || n(&s["availableReplicas"]) != replicas
    {
        return Err(format!("the ipam rollout is not complete: {s}"));
    }
    Ok(())
}

/// Every live pod of both workloads runs `tag` in each guarded container.
fn pods_on(env: &Env, tag: &str) -> Result<(), String> {
    let want = image(tag);
    for pod in env.sim.list(Resource::Pods, Some(NS)).iter() {
        let labels = &pod["metadata"]["labels"];
        if labels["name"] != AGENT && labels["app"] != IPAM {
            continue;
        }
        if !pod["metadata"]["deletionTimestamp"].is_null() {
            return Err(format!(
                "pod {} is still terminating",
                pod["metadata"]["name"]
            ));
        }
        let spec = &pod["spec"];
        for list in ["initContainers", "containers"] {
            for c in spec[list].as_array().into_iter().flatten() {
                let name = c["name"].as_str().unwrap_or("");
                if ["cce-cni-node-agent", "install-cni-binary", "cce-eni-ipam"].contains(&name)
                    && c["image"] != want.as_str()
                {
                    return Err(format!(
                        "pod {} container {name} runs {}",
                        pod["metadata"]["name"], c["image"]
                    ));
                }
            }
        }
    }
    Ok(())
}

fn newest_agent_hash(env: &Env) -> Option<String> {
    env.sim
        .list(Resource::ControllerRevisions, Some(NS))
        .iter()
        .filter(|c| c["metadata"]["labels"]["name"] == AGENT)
        .max_by_key(|c| c["revision"].as_i64().unwrap_or(0))
        .and_then(|c| {
            c["metadata"]["labels"]["controller-revision-hash"]
                .as_str()
                .map(str::to_owned)
        })
}

fn newest_ipam_hash(env: &Env) -> Option<String> {
    env.sim
        .list(Resource::ReplicaSets, Some(NS))
        .iter()
        .filter(|r| r["metadata"]["labels"]["app"] == IPAM)
        .max_by_key(|r| {
            r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                .as_str()
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
        })
        .and_then(|r| {
            r["metadata"]["labels"]["pod-template-hash"]
                .as_str()
                .map(str::to_owned)
        })
}

fn seeds() -> Vec<u64> {
    match std::env::var("CHAOS_SEEDS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect(),
        _ => (0..SEEDS).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_seeded_runs_end_upgraded_or_rolled_back() {
    let permits = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    let mut tasks = Vec::new();
    for seed in seeds() {
        let permits = permits.clone();
        tasks.push((
            seed,
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.expect("semaphore open");
                run_seed(chaos(seed)).await
            }),
        ));
    }
    let mut ran = Vec::new();
    let mut failures = Vec::new();
    for (seed, task) in tasks {
        match task.await {
            Ok(Ok(r)) => ran.push(r),
            Ok(Err(why)) => failures.push(why),
            Err(panic) => failures.push(format!("seed {seed} panicked: {panic}")),
        }
    }
    let mut counts: BTreeMap<(Outcome, bool, bool, bool, bool), usize> = BTreeMap::new();
    eprintln!(
        "seed  outcome      exits         s  faults / latency / drops / kills / broken / outage"
    );
    for r in &ran {
        let c = &r.chaos;
        eprintln!(
            "{:>4}  {:<11}  {:<12} {:>3.0}  {:?} / {:?} / {:?} / {:?} / {} / {:?}{}",
            c.seed,
            format!("{:?}", r.outcome),
            format!("{:?}", r.codes),
            r.seconds,
            c.faults,
            c.latency,
            c.drop_every,
            c.kills,
            c.broken,
            c.outage,
            r.failure
                .as_deref()
                .map(|f| format!("\n      failure: {}", f.lines().next().unwrap_or("")))
                .unwrap_or_default()
        );
        let key = (
            r.outcome,
            r.codes.contains(&137),
            r.codes.contains(&3),
            c.broken,
            c.outage.is_some(),
        );
        *counts.entry(key).or_default() += 1;
    }
    eprintln!("summary (outcome, killed, exit 3 then rerun, broken image, guard outage) → seeds:");
    for ((outcome, killed, rerun, broken, outage), n) in &counts {
        eprintln!(
            "  {outcome:?}, killed {killed}, rerun after 3 {rerun}, broken {broken}, outage {outage}: {n}"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    if seeds().len() as u64 == SEEDS {
        // The seeds must exercise both ends and the kills, or they prove little.
        let upgraded = ran
            .iter()
            .filter(|r| r.outcome == Outcome::Upgraded)
            .count();
        let rolled_back = ran.len() - upgraded;
        let killed = ran.iter().filter(|r| r.codes.contains(&137)).count();
        assert!(
            upgraded >= 10 && rolled_back >= 5 && killed >= 10,
            "upgraded {upgraded}, rolled back {rolled_back}, killed {killed}"
        );
    }
}

/// Regressions found by the seeds above, when taking the lock:
/// - a lost answer to the lock's write (the Lease was written, the client was told it failed)
///   made the retry meet its own write and refuse with "another upgrader holds Lease …"
///   naming itself;
/// - a conflict while taking over a dead upgrader's expired Lease refused instead of reading
///   it again and taking it over.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_answer_to_the_lock_write_is_recognised_as_ours() {
    let mut args = vec!["upgrade", "--to", TO];
    args.extend_from_slice(FAST);

    // Taking a fresh lock: the create is carried out, its answer lost.
    let env = Env::start(|_| {}).await;
    env.sim
        .fail_next("POST:/leases:504:1:applied".parse().unwrap());
    let out = env.run(&args, &[]).await;
    assert_eq!(out.code, 0, "{out}");
    env.assert_images(TO, TO);
    env.sim.clone().shutdown().await;

    // Taking over a dead upgrader's lock to resume: the replace is carried out, its answer lost.
    let env = Env::start(|_| {}).await;
    let killed = env.run(&args, &[(HOOK, "1")]).await;
    assert_eq!(killed.code, 137, "{killed}");
    env.sim
        .fail_next("PUT:/leases/:504:1:applied".parse().unwrap());
    let out = env.run(&args, &[]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stderr.contains("resuming"), "{out}");
    env.assert_images(TO, TO);
    env.sim.clone().shutdown().await;

    // Taking over a dead upgrader's lock: the first replace meets a conflict.
    let env = Env::start(|_| {}).await;
    let killed = env.run(&args, &[(HOOK, "1")]).await;
    assert_eq!(killed.code, 137, "{killed}");
    env.sim.fail_next("PUT:/leases/:409:1".parse().unwrap());
    let out = env.run(&args, &[]).await;
    assert_eq!(out.code, 0, "{out}");
    env.assert_images(TO, TO);
    env.sim.clone().shutdown().await;
}

/// The sim's webhook admission again, with a Service whose endpoints vanish while `down` is
/// set (the apiserver then refuses the guarded writes: failurePolicy Fail).
fn switchable_guard(env: &Env) -> Arc<AtomicBool> {
    let down = Arc::new(AtomicBool::new(false));
    let guard = env.guard.addr();
    let resolver_down = down.clone();
    WebhookAdmission::new(Arc::new(move |namespace: &str, name: &str, _port: u16| {
        (namespace == GUARD_NAMESPACE
            && name == GUARD_SERVICE
            && !resolver_down.load(Ordering::SeqCst))
        .then_some(guard)
    }))
    .install(&env.sim);
    down
}

/// Regression found by the seeds above: a run that ended with its rollback failed (exit 3,
/// "rerun to converge") was followed by a rerun that started a new upgrade, took the broken
/// half-upgraded state for the one to come back to, and ended in between. The rerun now
/// finishes the recorded rollback.
#[tokio::test(flavor = "multi_thread")]
async fn a_rerun_after_a_failed_rollback_finishes_the_rollback() {
    let mut args = vec!["upgrade", "--to", TO, "-o", "json"];
    args.extend_from_slice(FAST);
    let env = Env::start(|o| o.behaviour.broken_image = Some(r"cce-cni:v1\.9\.4$".into())).await;
    let was = before(&env);
    let down = switchable_guard(&env);
    // The guard becomes unreachable as soon as the rollback starts.
    let watcher = {
        let (sim, down) = (env.sim.clone(), down.clone());
        tokio::spawn(async move {
            loop {
                let lease = sim.get(Resource::Leases, Some(NS), "cce-cni-guard-upgrade");
                let phase = lease
                    .and_then(|l| {
                        l["metadata"]["annotations"]
                            ["cce-cni-guard.cce.baidubce.com/upgrade-record"]
                            .as_str()
                            .and_then(|r| serde_json::from_str::<Value>(r).ok())
                    })
                    .and_then(|r| r["phase"].as_str().map(str::to_owned));
                if phase.is_some_and(|p| p.starts_with("rollback")) {
                    down.store(true, Ordering::SeqCst);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let first = env.run(&args, &[]).await;
    watcher.abort();
    assert_eq!(first.code, 3, "the rollback cannot write: {first}");
    assert_eq!(env.record()["phase"], "rollback-failed", "{first}");
    let (agent, _) = env.images();
    assert_eq!(agent, vec![image(TO); 2], "left half upgraded: {first}");

    down.store(false, Ordering::SeqCst);
    let rerun = env.run(&args, &[]).await;
    assert_eq!(rerun.code, 1, "{rerun}");
    assert!(rerun.stderr.contains("finishing its rollback"), "{rerun}");
    assert_eq!(end_state(&env, &was), Ok(Outcome::RolledBack), "{rerun}");
    env.sim.clone().shutdown().await;

    // The same after `--no-rollback`: a rerun without it rolls back to the record.
    let env = Env::start(|o| o.behaviour.broken_image = Some(r"cce-cni:v1\.9\.4$".into())).await;
    let was = before(&env);
    let mut no_rollback = args.clone();
    no_rollback.push("--no-rollback");
    let first = env.run(&no_rollback, &[]).await;
    assert_eq!(first.code, 3, "{first}");
    assert_eq!(env.record()["phase"], "failed", "{first}");
    let rerun = env.run(&args, &[]).await;
    assert_eq!(rerun.code, 1, "{rerun}");
    assert_eq!(end_state(&env, &was), Ok(Outcome::RolledBack), "{rerun}");
    env.sim.clone().shutdown().await;
}
