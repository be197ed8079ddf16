//! Our kube 5 client against the simulated cluster, in-process: list with selectors, watch
//! with `kube::runtime::watcher`, the three patch types, stale replaces, `/scale`, dry runs,
//! cascading deletes, events.k8s.io, per-user request counts and injected faults.

use std::time::Duration;

use cce_cni_guard::sim::model::Resource;
use cce_cni_guard::sim::server::FaultRule;
use cce_cni_guard::sim::{Sim, SimHandle, SimOptions};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::WatchEvent;
use kube::runtime::watcher;
use kube::{Client, Config};
use serde_json::{Value, json};

const NS: &str = "kube-system";

async fn start(options: SimOptions) -> (SimHandle, tempfile::TempDir) {
    cce_cni_guard::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let options = SimOptions {
        kubeconfig: Some(dir.path().join("kubeconfig")),
        ..options
    };
    let handle = Sim::start(options).await.unwrap();
    (handle, dir)
}

async fn client_for(handle: &SimHandle, context: Option<&str>) -> Client {
    let path = handle.kubeconfig_path().unwrap();
    let kubeconfig = Kubeconfig::read_from(path).unwrap();
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

fn ipam_deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {
                "hostNetwork": true,
                "containers": [{"name": name, "image": "registry.example/cce-cni:v1.9.3",
                    "ports": [{"containerPort": 9997}]}]}}}
    }))
    .unwrap()
}

fn configmap(name: &str, labels: Value) -> ConfigMap {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS, "labels": labels}, "data": {"k": "v"}}))
    .unwrap()
}

fn api_code(err: &kube::Error) -> u16 {
    match err {
        kube::Error::Api(status) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_honour_label_and_field_selectors() {
    let (handle, _dir) = start(SimOptions::default()).await;
    let client = client_for(&handle, None).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, NS);
    for (name, labels) in [
        ("sel-a", json!({"tier": "a", "team": "net"})),
        ("sel-b", json!({"tier": "b"})),
        ("sel-c", json!({})),
    ] {
        cms.create(&PostParams::default(), &configmap(name, labels))
            .await
            .unwrap();
    }
    let names = |list: kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        list.items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .filter(|n| n.starts_with("sel-"))
            .collect()
    };
    let cases = [
        ("tier=a", vec!["sel-a"]),
        ("tier==b", vec!["sel-b"]),
        ("tier!=a", vec!["sel-b", "sel-c"]),
        ("tier in (a,b)", vec!["sel-a", "sel-b"]),
        ("tier notin (a)", vec!["sel-b", "sel-c"]),
        ("tier", vec!["sel-a", "sel-b"]),
        ("!tier", vec!["sel-c"]),
        ("tier=a,team=net", vec!["sel-a"]),
    ];
    for (selector, expected) in cases {
        let list = cms
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap();
        assert!(list.metadata.resource_version.is_some(), "{selector}");
        assert_eq!(names(list), expected, "{selector}");
    }
    let list = cms
        .list(&ListParams::default().fields("metadata.name=sel-b"))
        .await
        .unwrap();
    assert_eq!(names(list), vec!["sel-b"]);
    // Tables, with what each row carries chosen by includeObject.
    let table_request = |include: &str| {
        http::Request::get(format!(
            "/api/v1/namespaces/{NS}/configmaps?labelSelector=tier%3Da{include}"
        ))
        .header(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Vec::new())
        .unwrap()
    };
    let raw = cms.clone().into_client();
    let table: Value = raw.request(table_request("")).await.unwrap();
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["rows"][0]["cells"][0], "sel-a");
    assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    let table: Value = raw
        .request(table_request("&includeObject=Object"))
        .await
        .unwrap();
    assert_eq!(table["rows"][0]["object"]["data"]["k"], "v");
    let err = raw
        .request::<Value>(table_request("&includeObject=Everything"))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 400);
    // The metadata-only API answers PartialObjectMetadata.
    let meta = cms
        .list_metadata(&ListParams::default().labels("tier"))
        .await
        .unwrap();
    let meta_names: Vec<String> = meta
        .items
        .iter()
        .filter_map(|m| m.metadata.name.clone())
        .collect();
    assert_eq!(meta_names, vec!["sel-a", "sel-b"]);
    assert_eq!(meta.types.kind, "PartialObjectMetadataList");
    let one = cms.get_metadata("sel-a").await.unwrap();
    assert_eq!(
        one.metadata.labels.unwrap()["team"],
        "net",
        "labels come with the metadata"
    );
    let err = cms
        .list(&ListParams::default().fields("data.k=v"))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 400);
    let err = cms
        .list(&ListParams::default().labels("tier in a"))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 400);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_follows_changes_and_survives_dropped_watches() {
    let (handle, _dir) = start(SimOptions::default()).await;
    let client = client_for(&handle, None).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, NS);
    let stream = watcher(
        cms.clone(),
        watcher::Config::default().labels("watched=yes"),
    );
    let mut stream = Box::pin(stream);
    // The initial list: Init, then InitDone (nothing matches yet).
    let mut seen_init_done = false;
    while !seen_init_done {
        match tokio::time::timeout(Duration::from_secs(10), stream.try_next()).await {
            Ok(Ok(Some(watcher::Event::InitDone))) => seen_init_done = true,
            Ok(Ok(Some(_))) => {}
            other => panic!("watcher ended early: {other:?}"),
        }
    }
    cms.create(
        &PostParams::default(),
        &configmap("w-1", json!({"watched": "yes"})),
    )
    .await
    .unwrap();
    cms.create(&PostParams::default(), &configmap("w-ignored", json!({})))
        .await
        .unwrap();
    async fn next_change<S>(stream: &mut std::pin::Pin<Box<S>>) -> watcher::Event<ConfigMap>
    where
        S: futures::Stream<Item = Result<watcher::Event<ConfigMap>, watcher::Error>>,
    {
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("a watch event within 10s")
                .expect("the watcher keeps running")
                .expect("no watcher error");
            match event {
                watcher::Event::Apply(_) | watcher::Event::Delete(_) => return event,
                watcher::Event::InitApply(o) => return watcher::Event::Apply(o),
                watcher::Event::Init | watcher::Event::InitDone => {}
            }
        }
    }
    match next_change(&mut stream).await {
        watcher::Event::Apply(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("w-1")),
        other => panic!("expected the add of w-1, got {other:?}"),
    }
    cms.patch(
        "w-1",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "changed"}})),
    )
    .await
    .unwrap();
    match next_change(&mut stream).await {
        watcher::Event::Apply(cm) => {
            assert_eq!(cm.data.unwrap()["k"], "changed");
        }
        other => panic!("expected the change of w-1, got {other:?}"),
    }
    // Dropped watches: the watcher re-lists or re-watches and still sees what follows.
    handle.drop_watches();
    cms.create(
        &PostParams::default(),
        &configmap("w-2", json!({"watched": "yes"})),
    )
    .await
    .unwrap();
    let mut saw_w2 = false;
    for _ in 0..5 {
        if let watcher::Event::Apply(cm) = next_change(&mut stream).await
            && cm.metadata.name.as_deref() == Some("w-2")
        {
            saw_w2 = true;
            break;
        }
    }
    assert!(saw_w2, "the watcher saw w-2 after the watch was dropped");
    // Leaving the selector is a delete for this watch.
    cms.patch(
        "w-2",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"watched": "no"}}})),
    )
    .await
    .unwrap();
    match next_change(&mut stream).await {
        watcher::Event::Delete(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("w-2")),
        other => panic!("expected w-2 to leave the watch, got {other:?}"),
    }
    cms.delete("w-1", &DeleteParams::default()).await.unwrap();
    match next_change(&mut stream).await {
        watcher::Event::Delete(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("w-1")),
        other => panic!("expected the delete of w-1, got {other:?}"),
    }
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_resume_from_history_and_expire_when_too_old() {
    let (handle, _dir) = start(SimOptions {
        history: 8,
        ..SimOptions::default()
    })
    .await;
    let client = client_for(&handle, None).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, NS);
    let first = cms
        .create(&PostParams::default(), &configmap("h-0", json!({})))
        .await
        .unwrap();
    let rv = first.metadata.resource_version.clone().unwrap();
    cms.create(&PostParams::default(), &configmap("h-1", json!({})))
        .await
        .unwrap();
    // Resuming from h-0's version replays h-1.
    let mut stream = Box::pin(
        cms.watch(&WatchParams::default().timeout(5), &rv)
            .await
            .unwrap(),
    );
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Added(cm)) => assert_eq!(cm.metadata.name.as_deref(), Some("h-1")),
        other => panic!("expected the replayed add of h-1, got {other:?}"),
    }
    drop(stream);
    for i in 2..20 {
        cms.create(
            &PostParams::default(),
            &configmap(&format!("h-{i}"), json!({})),
        )
        .await
        .unwrap();
    }
    let mut stream = Box::pin(
        cms.watch(&WatchParams::default().timeout(5), &rv)
            .await
            .unwrap(),
    );
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(status)) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
            assert!(status.message.starts_with("too old resource version"));
        }
        other => panic!("expected 410 Expired, got {other:?}"),
    }
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_of_every_type_and_noops_keep_the_resource_version() {
    let (handle, _dir) = start(SimOptions::default()).await;
    let client = client_for(&handle, None).await;
    let deploys: Api<Deployment> = Api::namespaced(client, NS);
    let created = deploys
        .create(&PostParams::default(), &ipam_deployment("patch-me"))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));

    let smp = deploys
        .patch(
            "patch-me",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "patch-me"}],
                "containers": [{"name": "patch-me", "image": "registry.example/cce-cni:v1.9.4"}]}}}})),
        )
        .await
        .unwrap();
    let spec = smp.spec.clone();
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.containers.len(), 1);
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("registry.example/cce-cni:v1.9.4")
    );
    assert_eq!(
        pod.containers[0].ports.as_ref().unwrap().len(),
        1,
        "merged by name"
    );
    assert_eq!(smp.metadata.generation, Some(2));

    let merged = deploys
        .patch(
            "patch-me",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"a": "1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.metadata.generation,
        Some(2),
        "metadata does not bump generation"
    );
    // No-ops keep the resourceVersion (on a ConfigMap, which no controller writes to).
    let cms: Api<ConfigMap> = Api::namespaced(deploys.clone().into_client(), NS);
    cms.create(&PostParams::default(), &configmap("noop", json!({})))
        .await
        .unwrap();
    let first = cms
        .patch(
            "noop",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"annotations": {"a": "1"}}})),
        )
        .await
        .unwrap();
    for patch in [
        Patch::Strategic(json!({"metadata": {"annotations": {"a": "1"}}})),
        Patch::Merge(json!({"data": {"k": "v"}})),
    ] {
        let again = cms
            .patch("noop", &PatchParams::default(), &patch)
            .await
            .unwrap();
        assert_eq!(
            again.metadata.resource_version, first.metadata.resource_version,
            "a no-op keeps the resourceVersion"
        );
    }

    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/replicas", "value": 3},
        {"op": "replace", "path": "/spec/replicas", "value": 4}
    ]))
    .unwrap();
    let jp = deploys
        .patch("patch-me", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .unwrap();
    assert_eq!(jp.spec.replicas, Some(4));
    let failing: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/replicas", "value": 3},
        {"op": "replace", "path": "/spec/replicas", "value": 5}
    ]))
    .unwrap();
    let err = deploys
        .patch(
            "patch-me",
            &PatchParams::default(),
            &Patch::<()>::Json(failing),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 422);
    let missing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/spec/nosuch/x", "value": 1}]))
            .unwrap();
    let err = deploys
        .patch(
            "patch-me",
            &PatchParams::default(),
            &Patch::<()>::Json(missing),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 422);
    // Status is ignored on the object itself.
    let ignored = deploys
        .patch(
            "patch-me",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 42}})),
        )
        .await
        .unwrap();
    assert_ne!(ignored.status.and_then(|s| s.replicas), Some(42));
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_replace_is_a_conflict_with_the_apiservers_message() {
    let (handle, _dir) = start(SimOptions::default()).await;
    let client = client_for(&handle, None).await;
    let deploys: Api<Deployment> = Api::namespaced(client, NS);
    let original = deploys
        .create(&PostParams::default(), &ipam_deployment("stale"))
        .await
        .unwrap();
    deploys
        .patch(
            "stale",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    let err = deploys
        .replace("stale", &PostParams::default(), &original)
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected an API error");
    };
    assert_eq!(status.code, 409);
    assert_eq!(status.reason, "Conflict");
    assert_eq!(
        status.message,
        "Operation cannot be fulfilled on deployments.apps \"stale\": the object has been modified; please apply your changes to the latest version and try again"
    );
    // The current version replaces fine (fetched again if a controller's status write got in
    // between, as on a real cluster), and a create of the same name is 409 too.
    let mut replaced = false;
    for _ in 0..5 {
        handle.settle().await;
        let current = deploys.get("stale").await.unwrap();
        match deploys
            .replace("stale", &PostParams::default(), &current)
            .await
        {
            Ok(_) => {
                replaced = true;
                break;
            }
            Err(err) => assert_eq!(api_code(&err), 409),
        }
    }
    assert!(replaced, "the current version kept conflicting");
    let err = deploys
        .create(&PostParams::default(), &ipam_deployment("stale"))
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected an API error");
    };
    assert_eq!(status.reason, "AlreadyExists");
    assert_eq!(status.message, "deployments.apps \"stale\" already exists");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_subresource_reads_and_writes_replicas() {
    let (handle, _dir) = start(SimOptions::default()).await;
    let client = client_for(&handle, None).await;
    let deploys: Api<Deployment> = Api::namespaced(client, NS);
    deploys
        .create(&PostParams::default(), &ipam_deployment("scaled"))
        .await
        .unwrap();
    let scale = deploys.get_scale("scaled").await.unwrap();
    assert_eq!(scale.spec.as_ref().unwrap().replicas, Some(3));
    assert_eq!(
        scale.status.as_ref().unwrap().selector.as_deref(),
        Some("app=scaled")
    );
    let scale = deploys
        .patch_scale(
            "scaled",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(0));
    let stored = deploys.get("scaled").await.unwrap();
    assert_eq!(stored.spec.replicas, Some(0));
    assert_eq!(stored.metadata.generation, Some(2));
    // A PUT of the Scale carries its resourceVersion; refetch if a status write got in between.
    let mut scale = None;
    for _ in 0..5 {
        handle.settle().await;
        let mut current = deploys.get_scale("scaled").await.unwrap();
        current.spec.as_mut().unwrap().replicas = Some(3);
        match deploys
            .replace_scale("scaled", &PostParams::default(), &current)
            .await
        {
            Ok(replaced) => {
                assert_eq!(replaced.spec.unwrap().replicas, Some(3));
                scale = Some(current);
                break;
            }
            Err(err) => assert_eq!(api_code(&err), 409),
        }
    }
    let scale = scale.expect("the Scale kept conflicting");
    // The old Scale is stale now.
    let err = deploys
        .replace_scale("scaled", &PostParams::default(), &scale)
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 409);
    let err = deploys.get_scale("nosuch").await.unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected an API error");
    };
    assert_eq!(status.message, "deployments.apps \"nosuch\" not found");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_process_everything_and_store_nothing() {
    let (handle, _dir) = start(SimOptions::default()).await;
    let client = client_for(&handle, None).await;
    let deploys: Api<Deployment> = Api::namespaced(client, NS);
    let would_be = deploys
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &ipam_deployment("dry"),
        )
        .await
        .unwrap();
    assert_eq!(would_be.metadata.generation, Some(1));
    assert!(would_be.metadata.uid.is_some());
    assert_eq!(
        would_be.spec.strategy.unwrap().type_.as_deref(),
        Some("RollingUpdate"),
        "defaulted"
    );
    assert!(handle.get(Resource::Deployments, Some(NS), "dry").is_none());

    // A ConfigMap, which no controller touches, shows that dry runs leave the store alone.
    let cms: Api<ConfigMap> = Api::namespaced(deploys.clone().into_client(), NS);
    let created = cms
        .create(&PostParams::default(), &configmap("dry", json!({})))
        .await
        .unwrap();
    let stored_rv = created.metadata.resource_version.clone();
    let patched = cms
        .patch(
            "dry",
            &PatchParams::default().dry_run(),
            &Patch::Merge(json!({"data": {"k": "changed"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["k"], "changed");
    cms.delete(
        "dry",
        &DeleteParams {
            dry_run: true,
            ..DeleteParams::default()
        },
    )
    .await
    .unwrap();
    let stored = handle.get(Resource::ConfigMaps, Some(NS), "dry").unwrap();
    assert_eq!(stored["data"]["k"], "v");
    assert_eq!(
        stored["metadata"]["resourceVersion"].as_str(),
        stored_rv.as_deref(),
        "dry runs stored nothing"
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_owner_deletes_what_it_owns() {
    let (handle, _dir) = start(SimOptions::default()).await;
    let client = client_for(&handle, None).await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let owner = deploys
        .create(&PostParams::default(), &ipam_deployment("owner"))
        .await
        .unwrap();
    let uid = owner.metadata.uid.unwrap();
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "owner-abc", "namespace": NS, "labels": {"app": "owner"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "owner",
                "uid": uid, "controller": true}]},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "owner"}},
            "template": {"metadata": {"labels": {"app": "owner"}},
                "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}
    }))
    .unwrap();
    let rs = rss.create(&PostParams::default(), &rs).await.unwrap();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"generateName": "owner-abc-", "namespace": NS, "labels": {"app": "owner"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "owner-abc",
                "uid": rs.metadata.uid.unwrap(), "controller": true}]},
        "spec": {"containers": [{"name": "c", "image": "x:1"}]}
    }))
    .unwrap();
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    let pod_name = pod.metadata.name.unwrap();
    assert!(pod_name.starts_with("owner-abc-") && pod_name.len() == "owner-abc-".len() + 5);
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Pending"));
    deploys
        .delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        handle
            .get(Resource::ReplicaSets, Some(NS), "owner-abc")
            .is_none()
    );
    assert!(handle.get(Resource::Pods, Some(NS), &pod_name).is_none());
    let err = deploys.get("owner").await.unwrap_err();
    assert_eq!(api_code(&err), 404);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_k8s_io_is_a_view_of_core_events() {
    let (handle, _dir) = start(SimOptions::default()).await;
    let client = client_for(&handle, None).await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let deploy = deploys
        .create(&PostParams::default(), &ipam_deployment("evented"))
        .await
        .unwrap();
    let recorder = kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: "cce-cni-guard".into(),
            instance: None,
        },
    );
    let reference = kube::Resource::object_ref(&deploy, &());
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Normal,
        reason: "UpgradeStarted".into(),
        note: Some("upgrading to v1.9.4".into()),
        action: "Upgrade".into(),
        secondary: None,
    };
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();
    let core: Api<CoreEvent> = Api::namespaced(client, NS);
    let list = core.list(&ListParams::default()).await.unwrap();
    let ours: Vec<&CoreEvent> = list
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("UpgradeStarted"))
        .collect();
    assert_eq!(ours.len(), 1, "the repeat patched the same event");
    assert_eq!(ours[0].message.as_deref(), Some("upgrading to v1.9.4"));
    assert_eq!(ours[0].involved_object.name.as_deref(), Some("evented"));
    assert_eq!(
        ours[0].reporting_component.as_deref(),
        Some("cce-cni-guard")
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_fail_matching_requests_then_clear() {
    let (handle, _dir) = start(SimOptions::default()).await;
    let client = client_for(&handle, None).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, NS);
    cms.create(&PostParams::default(), &configmap("faulty", json!({})))
        .await
        .unwrap();
    handle.fail_next(FaultRule {
        method: Some("GET".into()),
        path_contains: "/configmaps/faulty".into(),
        status: 500,
        count: 2,
        applied: false,
    });
    assert_eq!(api_code(&cms.get("faulty").await.unwrap_err()), 500);
    assert_eq!(api_code(&cms.get("faulty").await.unwrap_err()), 500);
    cms.get("faulty").await.unwrap();
    handle.fail_next("PATCH:/configmaps/:409:1".parse().unwrap());
    let err = cms
        .patch(
            "faulty",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"x": "y"}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 409);
    // kube's client retries a 429 (Retry-After: 1), so the list succeeds on the second try.
    handle.fail_next("*:/configmaps:429:1".parse().unwrap());
    cms.list(&ListParams::default()).await.unwrap();
    let log = handle.requests();
    let statuses: Vec<u16> = log.iter().rev().take(2).map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 429]);
    handle.fail_next("*:/configmaps:503:5".parse().unwrap());
    handle.clear_faults();
    handle.set_latency(Duration::from_millis(20));
    cms.list(&ListParams::default()).await.unwrap();
    handle.set_latency(Duration::ZERO);
    let stored = handle
        .get(Resource::ConfigMaps, Some(NS), "faulty")
        .unwrap();
    assert!(
        stored["data"].get("x").is_none(),
        "the failed patch was not applied"
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_per_user_and_bad_tokens_get_401() {
    let (handle, _dir) = start(SimOptions {
        users: vec!["alice:cce-operators".parse().unwrap()],
        ..SimOptions::default()
    })
    .await;
    let alice = client_for(&handle, Some("alice@cce-sim")).await;
    let cms: Api<ConfigMap> = Api::namespaced(alice, NS);
    for _ in 0..3 {
        cms.list(&ListParams::default()).await.unwrap();
    }
    assert_eq!(handle.request_count("alice"), 3);
    assert!(handle.token_of("alice").is_some());
    assert_ne!(handle.token_of("alice"), Some(handle.admin_token()));

    let text = handle
        .kubeconfig()
        .replace(handle.admin_token(), "not-a-token");
    let kubeconfig = Kubeconfig::from_yaml(&text).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let bad: Api<ConfigMap> = Api::namespaced(Client::try_from(config).unwrap(), NS);
    let err = bad.list(&ListParams::default()).await.unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected an API error");
    };
    assert_eq!(status.code, 401);
    assert_eq!(status.reason, "Unauthorized");
    assert!(
        handle
            .requests()
            .iter()
            .any(|r| r.status == 401 && r.user.is_empty())
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_in_missing_namespaces_and_bad_bodies_are_clear_errors() {
    let (handle, _dir) = start(SimOptions::default()).await;
    let client = client_for(&handle, None).await;
    let elsewhere: Api<ConfigMap> = Api::namespaced(client.clone(), "nosuch");
    let mut cm = configmap("x", json!({}));
    cm.metadata.namespace = Some("nosuch".into());
    let err = elsewhere
        .create(&PostParams::default(), &cm)
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected an API error");
    };
    assert_eq!(status.code, 404);
    assert_eq!(status.message, "namespaces \"nosuch\" not found");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let err = cms
        .patch("missing", &PatchParams::default(), &Patch::Merge(json!({})))
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), 404);
    // A raw request with a malformed body.
    let request = http::Request::post(format!("/api/v1/namespaces/{NS}/configmaps"))
        .header("Content-Type", "application/json")
        .body(b"{not json".to_vec())
        .unwrap();
    let err = client.request::<ConfigMap>(request).await.unwrap_err();
    assert_eq!(api_code(&err), 400);
    // Bodies over the apiserver's 3 MiB limit are refused, not read to the end.
    let huge = format!(
        "{{\"metadata\":{{\"name\":\"huge\"}},\"data\":{{\"k\":\"{}\"}}}}",
        "x".repeat(4 * 1024 * 1024)
    );
    let request = http::Request::post(format!("/api/v1/namespaces/{NS}/configmaps"))
        .header("Content-Type", "application/json")
        .body(huge.into_bytes())
        .unwrap();
    let err = client.request::<ConfigMap>(request).await.unwrap_err();
    assert_eq!(api_code(&err), 413);
    // A body of the wrong kind for the endpoint.
    let request = http::Request::post(format!("/api/v1/namespaces/{NS}/configmaps"))
        .header("Content-Type", "application/json")
        .body(br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"}}"#.to_vec())
        .unwrap();
    let err = client.request::<ConfigMap>(request).await.unwrap_err();
    assert_eq!(api_code(&err), 400);
    // Deleting a namespace deletes what is in it.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "scratch-ns"}})).unwrap(),
        )
        .await
        .unwrap();
    let scratch: Api<ConfigMap> = Api::namespaced(client, "scratch-ns");
    let mut cm = configmap("inside", json!({}));
    cm.metadata.namespace = Some("scratch-ns".into());
    scratch.create(&PostParams::default(), &cm).await.unwrap();
    namespaces
        .delete("scratch-ns", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        handle
            .get(Resource::ConfigMaps, Some("scratch-ns"), "inside")
            .is_none()
    );
    handle.shutdown().await;
}

/// Denies images tagged `:bad`, warns on everything else it sees, and records what it was asked.
struct RecordingHook {
    seen: std::sync::Mutex<Vec<cce_cni_guard::sim::server::AdmissionRequest>>,
}

impl cce_cni_guard::sim::server::AdmissionHook for RecordingHook {
    fn admit(
        &self,
        request: cce_cni_guard::sim::server::AdmissionRequest,
    ) -> futures::future::BoxFuture<'static, cce_cni_guard::sim::server::AdmissionVerdict> {
        use cce_cni_guard::sim::server::AdmissionVerdict;
        let bad = request
            .object
            .as_ref()
            .is_some_and(|o| o.to_string().contains(":bad\""));
        self.seen.lock().unwrap().push(request);
        Box::pin(async move {
            if bad {
                AdmissionVerdict::Deny {
                    status: json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "reason": "Forbidden", "code": 403,
                        "message": "admission webhook \"test.example.com\" denied the request: bad image"}),
                    warnings: vec!["test: denied".into()],
                }
            } else {
                AdmissionVerdict::Allow {
                    warnings: vec!["test: looked at it".into()],
                }
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_hook_sees_every_write_and_can_deny() {
    use cce_cni_guard::sim::server::Operation;
    let hook = std::sync::Arc::new(RecordingHook {
        seen: std::sync::Mutex::new(Vec::new()),
    });
    let (handle, _dir) = start(SimOptions {
        admission: Some(hook.clone()),
        users: vec!["alice:cce-operators".parse().unwrap()],
        ..SimOptions::default()
    })
    .await;
    let alice = client_for(&handle, Some("alice@cce-sim")).await;
    let deploys: Api<Deployment> = Api::namespaced(alice, NS);
    deploys
        .create(&PostParams::default(), &ipam_deployment("admitted"))
        .await
        .unwrap();
    let mut bad = ipam_deployment("refused");
    bad.spec.template.spec.as_mut().unwrap().containers[0].image =
        Some("registry.example/cce-cni:bad".into());
    let err = deploys
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected an API error");
    };
    assert_eq!(status.code, 403);
    assert_eq!(status.reason, "Forbidden");
    assert_eq!(
        status.message,
        "admission webhook \"test.example.com\" denied the request: bad image"
    );
    assert!(
        handle
            .get(Resource::Deployments, Some(NS), "refused")
            .is_none()
    );
    deploys
        .patch_scale(
            "admitted",
            &PatchParams::default().dry_run(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    deploys
        .delete("admitted", &DeleteParams::default())
        .await
        .unwrap();

    let seen = hook.seen.lock().unwrap().clone();
    let by_alice: Vec<_> = seen.iter().filter(|r| r.user.username == "alice").collect();
    assert_eq!(by_alice.len(), 4);
    let create = by_alice[0];
    assert_eq!(create.operation, Operation::Create);
    assert_eq!(
        (create.group.as_str(), create.plural.as_str()),
        ("apps", "deployments")
    );
    assert_eq!(create.namespace.as_deref(), Some(NS));
    assert_eq!(create.name, "admitted");
    assert!(create.user.groups.contains(&"cce-operators".to_string()));
    let object = create.object.as_ref().unwrap();
    assert_eq!(
        object["spec"]["strategy"]["type"], "RollingUpdate",
        "after defaulting"
    );
    assert!(create.old_object.is_none());
    let scale = by_alice[2];
    assert_eq!(scale.operation, Operation::Update);
    assert_eq!(scale.subresource.as_deref(), Some("scale"));
    assert_eq!(scale.kind, "Scale");
    assert!(scale.dry_run);
    assert_eq!(scale.object.as_ref().unwrap()["spec"]["replicas"], 1);
    assert_eq!(scale.old_object.as_ref().unwrap()["spec"]["replicas"], 3);
    let delete = by_alice[3];
    assert_eq!(delete.operation, Operation::Delete);
    assert!(delete.object.is_none() && delete.old_object.is_some());
    handle.shutdown().await;
}
