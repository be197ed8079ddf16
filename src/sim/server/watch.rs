//! Watch streams: one JSON document per line, `{"type":…,"object":…}`, replayed from the
//! history when a resourceVersion is given, kept open until the client hangs up, the timeout
//! passes, or the watches are dropped.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::super::model::{Object, Resource};
use super::super::table;
use super::errors::ApiError;
use super::events;
use super::resources::{ApiResource, View};
use super::selectors::{FieldSelector, LabelSelector};
use super::state::{State, lock};
use super::store::{EventType, WatchEvent};
use super::util;

const BOOKMARK_EVERY: Duration = Duration::from_secs(10);

/// How objects are sent: as stored, as Table rows, or as PartialObjectMetadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Plain,
    Table,
    Metadata,
}

/// An object reduced to a `meta.k8s.io/v1` PartialObjectMetadata.
pub fn partial(object: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({}))})
}

/// What a watch selects.
#[derive(Debug, Clone)]
pub struct WatchFilter {
    pub api: &'static ApiResource,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub shape: Shape,
    /// What Table rows carry (`includeObject`).
    pub include: table::IncludeObject,
}

impl WatchFilter {
    fn matches(&self, object: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                != Some(ns)
        {
            return false;
        }
        self.labels.matches(object) && self.fields.matches(object)
    }

    fn encode(&self, type_: &str, object: &Object, shared: Option<&Bytes>) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        out.put_slice(b"{\"type\":\"");
        out.put_slice(type_.as_bytes());
        out.put_slice(b"\",\"object\":");
        if self.shape == Shape::Metadata {
            out.put_slice(&serde_json::to_vec(&partial(object)).unwrap_or_default());
        } else if self.shape == Shape::Table {
            let t = table::render_with(
                self.api.storage,
                std::slice::from_ref(object),
                object
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                util::now(),
                self.include,
            );
            out.put_slice(&serde_json::to_vec(&t).unwrap_or_default());
        } else if self.api.view == View::EventsV1 {
            out.put_slice(&serde_json::to_vec(&events::core_to_v1(object)).unwrap_or_default());
        } else if let Some(bytes) = shared {
            out.put_slice(bytes);
        } else {
            out.put_slice(&serde_json::to_vec(&**object).unwrap_or_default());
        }
        out.put_slice(b"}\n");
        out.freeze()
    }

    /// The line a store event becomes for this watch, if any (selector transitions included).
    fn line(&self, event: &WatchEvent) -> Option<Bytes> {
        if event.resource != self.api.storage {
            return None;
        }
        let now = self.matches(&event.object);
        let before = event.old.as_deref().is_some_and(|o| self.matches(o));
        let type_ = match event.type_ {
            EventType::Added if now => EventType::Added,
            EventType::Modified if now && before => EventType::Modified,
            EventType::Modified if now => EventType::Added,
            EventType::Modified if before => EventType::Deleted,
            EventType::Deleted if now || before => EventType::Deleted,
            _ => return None,
        };
        let shared = (self.shape == Shape::Plain && self.api.view == View::Native)
            .then(|| event.object_json());
        Some(self.encode(type_.as_str(), &event.object, shared))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object =
            json!({"kind": self.api.kind, "apiVersion": self.api.api_version(), "metadata": meta});
        let mut line =
            serde_json::to_vec(&json!({"type": "BOOKMARK", "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }
}

fn error_line(err: &ApiError) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": "ERROR", "object": err.status()})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

pub struct WatchParams {
    pub filter: WatchFilter,
    /// None: start with the current state (resourceVersion unset or "0").
    pub resource_version: Option<u64>,
    pub send_initial_events: bool,
    pub bookmarks: bool,
    pub timeout: Duration,
}

struct Watch {
    state: Arc<State>,
    filter: WatchFilter,
    pending: VecDeque<Bytes>,
    rx: broadcast::Receiver<Arc<WatchEvent>>,
    dropped: tokio::sync::watch::Receiver<u64>,
    deadline: Instant,
    bookmarks: bool,
    next_bookmark: Instant,
    last_rv: u64,
    done: bool,
}

/// Starts a watch; the stream yields the lines to send.
pub fn start(state: Arc<State>, params: WatchParams) -> impl Stream<Item = Bytes> + Send {
    let filter = params.filter;
    let mut pending = VecDeque::new();
    let mut done = false;
    let (rx, last_rv) = {
        let store = lock(&state.store);
        let current = store.current_rv();
        let resource: Resource = filter.api.storage;
        match params.resource_version {
            Some(rv) if !params.send_initial_events => match store.events_since(resource, rv) {
                Ok(events) => {
                    pending.extend(events.iter().filter_map(|e| filter.line(e)));
                }
                Err(oldest) => {
                    pending.push_back(error_line(&ApiError::expired(rv, oldest)));
                    done = true;
                }
            },
            _ => {
                let ns = filter.namespace.as_deref();
                for object in store.list(resource, ns) {
                    if filter.matches(&object) {
                        pending.push_back(filter.encode("ADDED", &object, None));
                    }
                }
                if params.send_initial_events && params.bookmarks {
                    pending.push_back(filter.bookmark(current, true));
                }
            }
        }
        (store.subscribe(), current)
    };
    let now = Instant::now();
    let watch = Watch {
        dropped: state.watch_epoch.subscribe(),
        state,
        filter,
        pending,
        rx,
        deadline: now + params.timeout,
        bookmarks: params.bookmarks,
        next_bookmark: now + BOOKMARK_EVERY,
        last_rv,
        done,
    };
    futures::stream::unfold(watch, |mut w| async move {
        loop {
            if let Some(line) = w.pending.pop_front() {
                return Some((line, w));
            }
            if w.done {
                return None;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(w.deadline) => return None,
                _ = w.dropped.changed() => return None,
                _ = tokio::time::sleep_until(w.next_bookmark), if w.bookmarks => {
                    w.next_bookmark = Instant::now() + BOOKMARK_EVERY;
                    let line = w.filter.bookmark(w.last_rv, false);
                    w.pending.push_back(line);
                }
                received = w.rx.recv() => match received {
                    Ok(event) => {
                        w.last_rv = event.rv;
                        if let Some(line) = w.filter.line(&event) {
                            w.pending.push_back(line);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Catch up from the history, then follow the broadcast again.
                        let store = lock(&w.state.store);
                        match store.events_since(w.filter.api.storage, w.last_rv) {
                            Ok(events) => {
                                let lines: Vec<Bytes> =
                                    events.iter().filter_map(|e| w.filter.line(e)).collect();
                                w.pending.extend(lines);
                                w.last_rv = store.current_rv();
                                w.rx = store.subscribe();
                            }
                            Err(oldest) => {
                                w.pending.push_back(error_line(&ApiError::expired(w.last_rv, oldest)));
                                w.done = true;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    })
}
