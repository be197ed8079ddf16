//! The offline commands: `review` (one AdmissionReview, answered as `serve` would) and
//! `check` (a change between two manifests, for people and for CI pipelines).

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use crate::manifest::{Manifest, ManifestError, ManifestSiblings, read_input};
use crate::policy::{
    Config, Decision, Operation, Request, UserIdentity, Verdict, decide, object_labels,
};

/// Exit codes of the offline commands (design §2).
pub const EXIT_ALLOWED: u8 = 0;
pub const EXIT_DENIED: u8 = 1;
pub const EXIT_INVALID: u8 = 2;

/// Why an offline command could not judge its input (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Invalid(String),
}

/// The guard's configuration file, shared by every command that judges.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// Guard configuration (YAML): guarded workloads, repository aliases, exemptions.
    /// Without it the embedded defaults guard kube-system/cce-cni-node-agent and cce-eni-ipam.
    #[arg(long, env = "CCE_GUARD_CONFIG")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    pub fn load(&self) -> Result<Config, OfflineError> {
        let Some(path) = &self.config else {
            return Ok(Config::default());
        };
        let (name, bytes) = read_input(path)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| OfflineError::Config(format!("{name} is not valid UTF-8")))?;
        Config::from_yaml(&text).map_err(|e| OfflineError::Config(format!("{name}: {e}")))
    }
}

/// Flags of `cce-cni-guard review`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReviewArgs {
    /// AdmissionReview JSON (admission.k8s.io/v1 or v1beta1); `-` or nothing reads standard input.
    #[arg(default_value = "-")]
    pub file: PathBuf,
    /// Manifest (YAML or JSON) of the other guarded workload, standing in for the cluster.
    #[arg(long, env = "CCE_GUARD_SIBLING")]
    pub sibling: Vec<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// Flags of `cce-cni-guard check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The manifest as it is now (YAML or JSON). Without it the change is judged as a CREATE.
    #[arg(long, env = "CCE_GUARD_OLD")]
    pub old: Option<PathBuf>,
    /// The manifest as it would be after the change.
    #[arg(long, env = "CCE_GUARD_NEW")]
    pub new: PathBuf,
    /// Manifest of the other guarded workload, standing in for the cluster.
    #[arg(long, env = "CCE_GUARD_SIBLING")]
    pub sibling: Vec<PathBuf>,
    /// Namespace for manifests that do not name one (as `kubectl -n`).
    #[arg(
        short = 'n',
        long,
        env = "CCE_GUARD_NAMESPACE",
        default_value = "default"
    )]
    pub namespace: String,
    /// Judge as this user (exemptions are by identity).
    #[arg(long, env = "CCE_GUARD_AS", default_value = "")]
    pub as_user: String,
    /// Judge as a member of these groups.
    #[arg(long = "as-group", env = "CCE_GUARD_AS_GROUP", value_delimiter = ',')]
    pub as_groups: Vec<String>,
    #[arg(short = 'o', long, env = "CCE_GUARD_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub config: ConfigArg,
}

fn load_siblings(paths: &[PathBuf], config: &Config) -> Result<ManifestSiblings, OfflineError> {
    let mut siblings = ManifestSiblings::default();
    for path in paths {
        let manifest = Manifest::load(path)?;
        siblings
            .add(&manifest, config)
            .map_err(OfflineError::Invalid)?;
    }
    Ok(siblings)
}

/// `review`: prints the response AdmissionReview exactly as `serve` would answer.
pub fn review(args: &ReviewArgs) -> Result<ExitCode, OfflineError> {
    let config = args.config.load()?;
    let siblings = load_siblings(&args.sibling, &config)?;
    let (_, body) = read_input(&args.file)?;
    let outcome = crate::review::review(&body, &config, &siblings);
    if outcome.http_status != 200 {
        return Err(OfflineError::Invalid(
            outcome
                .error
                .unwrap_or_else(|| "invalid AdmissionReview".into()),
        ));
    }
    println!("{}", String::from_utf8_lossy(&outcome.body));
    Ok(ExitCode::from(match outcome.verdict() {
        Some(Verdict::Denied) => EXIT_DENIED,
        _ => EXIT_ALLOWED,
    }))
}

/// `check`: judges the change from `--old` to `--new`.
pub fn check(args: &CheckArgs) -> Result<ExitCode, OfflineError> {
    let config = args.config.load()?;
    let siblings = load_siblings(&args.sibling, &config)?;
    let new = Manifest::load(&args.new)?;
    let old = args.old.as_deref().map(Manifest::load).transpose()?;
    let namespace = new
        .namespace
        .clone()
        .unwrap_or_else(|| args.namespace.clone());
    if let Some(old) = &old {
        let old_ns = old
            .namespace
            .clone()
            .unwrap_or_else(|| args.namespace.clone());
        if (old.kind.as_str(), old.name.as_str(), old_ns.as_str())
            != (new.kind.as_str(), new.name.as_str(), namespace.as_str())
        {
            return Err(OfflineError::Invalid(format!(
                "--old is {} {}/{} but --new is {} {}/{}: they must be the same object",
                old.kind, old_ns, old.name, new.kind, namespace, new.name
            )));
        }
    }
    let new_template = new.template();
    let old_template = old.as_ref().map(Manifest::template);
    let new_t = new_template.as_ref().map_err(template_error);
    let old_t = old_template
        .as_ref()
        .map(|t| t.as_ref().map_err(template_error));
    let user = UserIdentity {
        username: args.as_user.clone(),
        groups: args.as_groups.clone(),
    };
    // The template errors are owned by ManifestError; the policy wants TemplateError.
    let new_err;
    let old_err;
    let object = match new_t {
        Ok(t) => Ok(t),
        Err(e) => {
            new_err = e;
            Err(&new_err)
        }
    };
    let old_object = match old_t {
        Some(Ok(t)) => Some(Ok(t)),
        Some(Err(e)) => {
            old_err = e;
            Some(Err(&old_err))
        }
        None => None,
    };
    let labels = object_labels(&new.object);
    let old_labels = old.as_ref().map(|o| object_labels(&o.object));
    let request = Request {
        operation: if old.is_some() {
            Operation::Update
        } else {
            Operation::Create
        },
        group: new.group(),
        kind: &new.kind,
        sub_resource: None,
        namespace: &namespace,
        name: &new.name,
        object: Some(object),
        old_object,
        labels: Some(&labels),
        old_labels: old_labels.as_ref(),
        user: &user,
    };
    let decision = decide(&request, &siblings, &config);
    let what = format!("{} {namespace}/{}", new.kind, new.name);
    match args.output {
        OutputFormat::Json => println!("{}", decision_json(&decision, &what)),
        OutputFormat::Text => print!("{}", decision_text(&decision, &what)),
    }
    Ok(ExitCode::from(if decision.allowed() {
        EXIT_ALLOWED
    } else {
        EXIT_DENIED
    }))
}

fn template_error(e: &ManifestError) -> crate::policy::TemplateError {
    match e {
        ManifestError::Template { error, .. } => error.clone(),
        other => crate::policy::TemplateError::Unreadable(other.to_string()),
    }
}

/// The decision as machines read it (`--output json`).
pub fn decision_json(decision: &Decision, object: &str) -> serde_json::Value {
    json!({
        "object": object,
        "allowed": decision.allowed(),
        "verdict": decision.verdict.as_str(),
        "workload": decision.workload.as_ref().map(|w| w.display_name()),
        "rules": decision.violations.iter().map(|v| v.rule.as_str()).collect::<Vec<_>>(),
        "violations": decision.violations.iter().map(|v| json!({
            "rule": v.rule.as_str(),
            "container": v.container,
            "detail": v.detail,
        })).collect::<Vec<_>>(),
        "message": decision.message,
        "warnings": decision.warnings,
        "auditAnnotations": decision.audit_annotations,
    })
}

/// The decision as a person reads it.
pub fn decision_text(decision: &Decision, object: &str) -> String {
    let mut out = match decision.verdict {
        Verdict::NotGuarded => {
            format!("ALLOWED  {object}: not a guarded workload, nothing to judge\n")
        }
        Verdict::Allowed => format!("ALLOWED  {object}\n"),
        Verdict::Exempted => format!("ALLOWED  {object} (exempted by identity)\n"),
        Verdict::Denied => format!("DENIED   {object}\n{}\n", decision.message),
    };
    for w in &decision.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}
