//! The running sim's shared state and its single write pipeline: prepare against the store,
//! admit, then commit if nothing changed in between. API requests and controller actions
//! both go through it, so resourceVersion, generation and watch events behave the same.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;

use super::super::controllers;
use super::super::model::{Action, Behaviour, EventRecord, Object, Resource, Snapshot};
use super::admission::{AdmissionHook, AdmissionRequest, AdmissionVerdict, Operation, UserInfo};
use super::auth::Users;
use super::discovery::K8sVersion;
use super::errors::{ApiError, ApiResult};
use super::events;
use super::faults::Faults;
use super::resources;
use super::store::{Key, Store};
use super::util;
use super::write::{self, Change, Prepared, Sub, WriteRequest};

/// One request as the request log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub query: String,
    pub user_agent: String,
    /// Empty when the request was not authenticated.
    pub user: String,
    pub status: u16,
}

const REQUEST_LOG_LIMIT: usize = 100_000;

#[derive(Debug, Default)]
pub struct Stats {
    pub log: std::collections::VecDeque<RequestRecord>,
    pub by_user: HashMap<String, u64>,
    pub by_user_agent: HashMap<String, u64>,
    pub total: u64,
}

impl Stats {
    pub fn record(&mut self, record: RequestRecord) {
        self.total += 1;
        *self.by_user.entry(record.user.clone()).or_default() += 1;
        *self
            .by_user_agent
            .entry(record.user_agent.clone())
            .or_default() += 1;
        self.log.push_back(record);
        while self.log.len() > REQUEST_LOG_LIMIT {
            self.log.pop_front();
        }
    }
}

/// The result of a successful write.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    /// The object as the endpoint serves it (or a `Status` for delete).
    pub body: Value,
    pub created: bool,
    pub warnings: Vec<String>,
    /// Whether the store changed.
    pub changed: bool,
}

pub struct State {
    pub store: Mutex<Store>,
    pub users: Users,
    pub version: K8sVersion,
    /// How the simulated kubelet behaves; tests may change it while running.
    pub behaviour: RwLock<Behaviour>,
    pub hook: RwLock<Option<Arc<dyn AdmissionHook>>>,
    pub faults: Mutex<Faults>,
    pub stats: Mutex<Stats>,
    /// Wakes the controller loop after a write.
    pub reconcile: Notify,
    /// Bumped to end every open watch.
    pub watch_epoch: tokio::sync::watch::Sender<u64>,
    pub server_address: RwLock<String>,
    event_names: Mutex<HashMap<String, Key>>,
    /// One reconcile at a time: two concurrent passes could both create the same pod.
    reconciling: tokio::sync::Mutex<()>,
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn controller_user() -> UserInfo {
    UserInfo {
        username: "system:kube-controller-manager".into(),
        groups: vec!["system:authenticated".into()],
    }
}

const WRITE_ATTEMPTS: usize = 16;
/// A bound on passes without quiet, against controllers that never settle.
const MAX_PASSES: usize = 200_000;

impl State {
    pub fn new(
        users: Users,
        version: K8sVersion,
        behaviour: Behaviour,
        history: usize,
        hook: Option<Arc<dyn AdmissionHook>>,
    ) -> Self {
        let (watch_epoch, _) = tokio::sync::watch::channel(0);
        Self {
            store: Mutex::new(Store::new(history)),
            users,
            version,
            behaviour: RwLock::new(behaviour),
            hook: RwLock::new(hook),
            faults: Mutex::new(Faults::default()),
            stats: Mutex::new(Stats::default()),
            reconcile: Notify::new(),
            watch_epoch,
            server_address: RwLock::new(String::new()),
            event_names: Mutex::new(HashMap::new()),
            reconciling: tokio::sync::Mutex::new(()),
        }
    }

    fn hook(&self) -> Option<Arc<dyn AdmissionHook>> {
        self.hook
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn admit(
        &self,
        request: &WriteRequest,
        prepared: &Prepared,
        user: &UserInfo,
    ) -> ApiResult<Vec<String>> {
        let Some(hook) = self.hook() else {
            return Ok(Vec::new());
        };
        let api = request.api;
        let (kind_group, kind_version, kind) = if request.sub == Sub::Scale {
            (
                "autoscaling".to_string(),
                "v1".to_string(),
                "Scale".to_string(),
            )
        } else {
            (api.group.into(), api.version.into(), api.kind.into())
        };
        let admission = AdmissionRequest {
            operation: prepared.operation,
            resource: api.storage,
            group: api.group.into(),
            version: api.version.into(),
            plural: api.plural.into(),
            kind,
            kind_group,
            kind_version,
            subresource: request.sub.name().map(str::to_string),
            namespace: api
                .namespaced
                .then(|| prepared.key.0.clone())
                .filter(|ns| !ns.is_empty()),
            name: prepared.key.1.clone(),
            old_object: prepared.view_old.clone(),
            object: prepared.view_new.clone(),
            dry_run: request.dry_run,
            user: user.clone(),
        };
        match hook.admit(admission).await {
            AdmissionVerdict::Allow { warnings } => Ok(warnings),
            AdmissionVerdict::Deny { status, warnings } => {
                let mut err = ApiError::from_status(&status);
                err.warnings = warnings;
                Err(err)
            }
        }
    }

    /// Runs one write through prepare → admission → commit.
    pub async fn write(
        &self,
        request: WriteRequest,
        user: &UserInfo,
        notify: bool,
    ) -> ApiResult<WriteOutcome> {
        let api = request.api;
        for _ in 0..WRITE_ATTEMPTS {
            let now = util::rfc3339(util::now());
            let prepared = {
                let store = lock(&self.store);
                write::prepare(&store, &request, &now)?
            };
            let warnings = self.admit(&request, &prepared, user).await?;
            let created = prepared.operation == Operation::Create;
            if request.dry_run || prepared.noop {
                let body = match (&prepared.operation, &prepared.view_new, &prepared.old) {
                    (Operation::Delete, _, Some(old)) => write::delete_status(api, old),
                    (_, Some(view), _) if request.dry_run => view.clone(),
                    (_, _, Some(old)) => write::to_view(api, request.sub, old),
                    _ => json!({}),
                };
                return Ok(WriteOutcome {
                    body,
                    created,
                    warnings,
                    changed: false,
                });
            }
            let body = {
                let mut store = lock(&self.store);
                let current = store.get(api.storage, &prepared.key);
                let unchanged = match (&current, &prepared.old) {
                    (None, None) => true,
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    _ => false,
                };
                if !unchanged {
                    continue;
                }
                match prepared.new {
                    Some(new) => {
                        let stored = store.put(api.storage, new);
                        write::to_view(api, request.sub, &stored)
                    }
                    None => {
                        let deleted =
                            cascade_delete(&mut store, api.storage, &prepared.key, prepared.orphan);
                        match deleted {
                            Some(d) => write::delete_status(api, &d),
                            None => continue,
                        }
                    }
                }
            };
            if notify {
                self.reconcile.notify_one();
            }
            return Ok(WriteOutcome {
                body,
                created,
                warnings,
                changed: true,
            });
        }
        let name = match &request.change {
            Change::Create { .. } => String::new(),
            Change::Replace { name, .. }
            | Change::Patch { name, .. }
            | Change::Delete { name, .. } => name.clone(),
        };
        Err(ApiError::conflict(api, &name))
    }

    /// Seeds an object as the cluster's starting state (keeps creationTimestamp and status).
    pub async fn seed(&self, resource: Resource, object: Value) -> ApiResult<()> {
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_string);
        let request = WriteRequest {
            api: resources::native(resource),
            namespace,
            sub: Sub::Main,
            change: Change::Create { body: object },
            dry_run: false,
            preserve: true,
        };
        self.write(request, &controller_user(), false)
            .await
            .map(|_| ())
    }

    fn snapshot(&self) -> Snapshot {
        let store = lock(&self.store);
        Snapshot {
            now: Some(util::now()),
            nodes: store.list(Resource::Nodes, None),
            pods: store.list(Resource::Pods, None),
            daemonsets: store.list(Resource::DaemonSets, None),
            deployments: store.list(Resource::Deployments, None),
            replicasets: store.list(Resource::ReplicaSets, None),
            controllerrevisions: store.list(Resource::ControllerRevisions, None),
        }
    }

    /// Reconciles until the controllers have nothing more to do; returns when to run again.
    pub async fn reconcile_until_quiet(&self) -> Option<Duration> {
        let _one_at_a_time = self.reconciling.lock().await;
        let mut passes = 0;
        loop {
            let snapshot = self.snapshot();
            let behaviour = self
                .behaviour
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let result = controllers::reconcile(&snapshot, &behaviour);
            drop(snapshot);
            if result.actions.is_empty() {
                return result.requeue_after;
            }
            let mut changed = false;
            for action in result.actions {
                changed |= self.apply_action(action).await;
            }
            passes += 1;
            if !changed {
                return result.requeue_after;
            }
            // Long rollouts must not starve request handling on the same runtime thread.
            tokio::task::yield_now().await;
            if passes >= MAX_PASSES {
                tracing::warn!("controllers did not settle after {passes} passes");
                return Some(Duration::from_millis(100));
            }
        }
    }

    /// Applies one controller action; true when it changed the store or lost a race.
    async fn apply_action(&self, action: Action) -> bool {
        let user = controller_user();
        let (resource, namespace, sub, change) = match action {
            Action::Create { resource, object } => {
                let ns = object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                (resource, ns, Sub::Main, Change::Create { body: object })
            }
            Action::Update { resource, object } => replace(resource, Sub::Main, object),
            Action::UpdateStatus { resource, object } => replace(resource, Sub::Status, object),
            Action::Delete {
                resource,
                namespace,
                name,
            } => (
                resource,
                namespace,
                Sub::Main,
                Change::Delete {
                    name,
                    options: json!({}),
                },
            ),
            Action::Event(record) => return self.record_event(&record).await,
        };
        self.apply_write(resource, namespace, sub, change, &user)
            .await
    }

    async fn apply_write(
        &self,
        resource: Resource,
        namespace: Option<String>,
        sub: Sub,
        change: Change,
        user: &UserInfo,
    ) -> bool {
        let request = WriteRequest {
            api: resources::native(resource),
            namespace,
            sub,
            change,
            dry_run: false,
            preserve: false,
        };
        match self.write(request, user, false).await {
            Ok(outcome) => outcome.changed,
            // A lost race: the next pass sees the newer state.
            Err(err) if err.code == 409 => true,
            Err(err) if err.code == 404 => false,
            Err(err) => {
                tracing::warn!(error = %err, "controller write rejected");
                false
            }
        }
    }

    /// Records a controller's event as a core/v1 Event, counting repeats.
    pub async fn record_event(&self, record: &EventRecord) -> bool {
        let now = util::rfc3339(util::now());
        let key = events::aggregation_key(record);
        let existing_key = lock(&self.event_names).get(&key).cloned();
        let existing = existing_key.and_then(|k| lock(&self.store).get(Resource::Events, &k));
        let user = controller_user();
        if let Some(existing) = existing {
            let body = events::repeated(&existing, &now);
            let (ns, name) = super::store::key_of(&existing);
            return self
                .apply_write(
                    Resource::Events,
                    Some(ns),
                    Sub::Main,
                    Change::Replace { name, body },
                    &user,
                )
                .await;
        }
        let involved = record
            .involved_object
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("event");
        let mut suffix = [0u8; 8];
        util::random_bytes(&mut suffix);
        let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        let name = format!("{involved}.{hex}");
        let body = events::new_event(record, &name, &now);
        let ns = body
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        lock(&self.event_names).insert(key, (ns.clone(), name));
        self.apply_write(
            Resource::Events,
            Some(ns),
            Sub::Main,
            Change::Create { body },
            &user,
        )
        .await
    }

    /// The stored object, as its native endpoint serves it.
    pub fn get(&self, resource: Resource, namespace: Option<&str>, name: &str) -> Option<Object> {
        let api = resources::native(resource);
        let ns = if api.namespaced {
            namespace.unwrap_or_default()
        } else {
            ""
        };
        lock(&self.store).get(resource, &(ns.to_string(), name.to_string()))
    }
}

fn replace(resource: Resource, sub: Sub, object: Value) -> (Resource, Option<String>, Sub, Change) {
    let ns = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_string);
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    (resource, ns, sub, Change::Replace { name, body: object })
}

/// Deletes an object and, unless orphaning, everything it owns (transitively).
fn cascade_delete(
    store: &mut Store,
    resource: Resource,
    key: &Key,
    orphan: bool,
) -> Option<Object> {
    let deleted = store.remove(resource, key)?;
    if resource == Resource::Namespaces {
        // The namespace controller empties a deleted namespace.
        for api in resources::natives().filter(|a| a.namespaced) {
            for object in store.list(api.storage, Some(&key.1)) {
                cascade_delete(store, api.storage, &super::store::key_of(&object), false);
            }
        }
    }
    let uid = deleted
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut work = vec![uid];
    while let Some(uid) = work.pop() {
        for (r, k) in store.dependents_of(&uid) {
            if orphan {
                if let Some(obj) = store.get(r, &k) {
                    let mut updated = (*obj).clone();
                    if let Some(Value::Array(refs)) =
                        updated.pointer_mut("/metadata/ownerReferences")
                    {
                        refs.retain(|o| o.get("uid").and_then(Value::as_str) != Some(&uid));
                    }
                    store.put(r, updated);
                }
            } else if let Some(removed) = store.remove(r, &k)
                && let Some(child) = removed.pointer("/metadata/uid").and_then(Value::as_str)
            {
                work.push(child.to_string());
            }
        }
        if orphan {
            break;
        }
    }
    Some(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State::new(
            Users::new(&[]),
            "1.32".parse().unwrap(),
            Behaviour::default(),
            1000,
            None,
        )
    }

    fn admin() -> UserInfo {
        UserInfo {
            username: "admin".into(),
            groups: vec![],
        }
    }

    async fn create(state: &State, resource: Resource, object: Value) -> Value {
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_string);
        state
            .write(
                WriteRequest {
                    api: resources::native(resource),
                    namespace,
                    sub: Sub::Main,
                    change: Change::Create { body: object },
                    dry_run: false,
                    preserve: false,
                },
                &admin(),
                false,
            )
            .await
            .unwrap()
            .body
    }

    #[tokio::test]
    async fn repeated_events_are_counted_on_one_object() {
        let state = state();
        state
            .seed(
                Resource::Namespaces,
                json!({"metadata": {"name": "kube-system"}}),
            )
            .await
            .unwrap();
        let record = EventRecord {
            involved_object: json!({"kind": "Pod", "namespace": "kube-system", "name": "p", "uid": "u"}),
            type_: "Warning".into(),
            reason: "Failed".into(),
            message: "ErrImagePull".into(),
            component: "kubelet".into(),
            host: Some("node-1".into()),
        };
        assert!(state.record_event(&record).await);
        assert!(state.record_event(&record).await);
        let events = lock(&state.store).list(Resource::Events, Some("kube-system"));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["count"], 2);
        assert_eq!(
            events[0]["source"],
            json!({"component": "kubelet", "host": "node-1"})
        );
    }

    #[tokio::test]
    async fn orphaning_keeps_dependents_and_drops_their_owner_reference() {
        let state = state();
        state
            .seed(
                Resource::Namespaces,
                json!({"metadata": {"name": "kube-system"}}),
            )
            .await
            .unwrap();
        let owner = create(
            &state,
            Resource::ConfigMaps,
            json!({"metadata": {"name": "owner", "namespace": "kube-system"}}),
        )
        .await;
        let uid = owner["metadata"]["uid"].as_str().unwrap().to_string();
        create(
            &state,
            Resource::ConfigMaps,
            json!({"metadata": {"name": "child", "namespace": "kube-system",
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]}}),
        )
        .await;
        let outcome = state
            .write(
                WriteRequest {
                    api: resources::native(Resource::ConfigMaps),
                    namespace: Some("kube-system".into()),
                    sub: Sub::Main,
                    change: Change::Delete {
                        name: "owner".into(),
                        options: json!({"propagationPolicy": "Orphan"}),
                    },
                    dry_run: false,
                    preserve: false,
                },
                &admin(),
                false,
            )
            .await
            .unwrap();
        assert_eq!(outcome.body["status"], "Success");
        let child = state
            .get(Resource::ConfigMaps, Some("kube-system"), "child")
            .unwrap();
        assert_eq!(child["metadata"]["ownerReferences"], json!([]));
    }
}
