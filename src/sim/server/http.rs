//! HTTP: authentication, fault injection, routing of apiserver paths, content negotiation,
//! and the JSON, Table and watch responses.

use std::convert::Infallible;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::Value;

use super::super::table;
use super::admission::UserInfo;
use super::discovery;
use super::errors::{ApiError, ApiResult};
use super::events;
use super::resources::{self, ApiResource, View};
use super::selectors::{FieldSelector, LabelSelector};
use super::state::{RequestRecord, State, lock};
use super::util;
use super::watch::{self, Shape, WatchFilter, WatchParams, partial};
use super::write::{Change, PatchKind, Sub, WriteRequest};

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The largest request body accepted, as the apiserver's 3 MiB limit.
pub const MAX_BODY: usize = 3 * 1024 * 1024;
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

fn json_response(status: u16, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(full(bytes));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error_response(err: &ApiError) -> Response<Body> {
    let mut response = json_response(err.code, &err.status());
    if let Some(secs) = err.retry_after_seconds
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        response.headers_mut().insert("Retry-After", v);
    }
    add_warnings(&mut response, &err.warnings);
    response
}

fn add_warnings(response: &mut Response<Body>, warnings: &[String]) {
    for warning in warnings {
        let text: String = warning
            .chars()
            .map(|c| {
                if c.is_ascii() && !c.is_ascii_control() {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            response.headers_mut().append("Warning", v);
        }
    }
}

/// Query parameters, percent-decoded.
struct Query(Vec<(String, String)>);

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Query {
    fn parse(raw: Option<&str>) -> Self {
        Self(
            raw.unwrap_or_default()
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (percent_decode(k), percent_decode(v)),
                    None => (percent_decode(p), String::new()),
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    fn dry_run(&self) -> ApiResult<bool> {
        match self.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
            ))),
        }
    }

    fn check_field_validation(&self) -> ApiResult<()> {
        match self.get("fieldValidation") {
            None | Some("" | "Strict" | "Warn" | "Ignore") => Ok(()),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

/// A resource path: `/api/v1/...` or `/apis/<g>/<v>/...`.
struct Target {
    api: &'static ApiResource,
    namespace: Option<String>,
    name: Option<String>,
    sub: Sub,
    legacy_watch: bool,
}

fn parse_target(segments: &[&str]) -> ApiResult<Option<Target>> {
    let (group, version, mut rest) = match segments {
        ["api", "v1", rest @ ..] if !rest.is_empty() => ("", "v1", rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return Ok(None),
    };
    let mut legacy_watch = false;
    if rest.first() == Some(&"watch") {
        legacy_watch = true;
        rest = &rest[1..];
    }
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] if *plural != "status" && *plural != "finalize" => {
            (Some((*ns).to_string()), {
                let mut v = vec![*plural];
                v.extend_from_slice(tail);
                v
            })
        }
        other => (None, other.to_vec()),
    };
    let Some(plural) = rest.first() else {
        return Err(ApiError::no_such_resource());
    };
    let api = resources::lookup(group, version, plural).ok_or_else(ApiError::no_such_resource)?;
    if namespace.is_some() && !api.namespaced {
        return Err(ApiError::no_such_resource());
    }
    let name = rest.get(1).map(|s| (*s).to_string());
    if name.is_some() && api.namespaced && namespace.is_none() {
        return Err(ApiError::no_such_resource());
    }
    let sub = match rest.get(2) {
        None => Sub::Main,
        Some(&"status") if api.status => Sub::Status,
        Some(&"scale") if api.scale => Sub::Scale,
        Some(_) => return Err(ApiError::no_such_resource()),
    };
    if rest.len() > 3 {
        return Err(ApiError::no_such_resource());
    }
    Ok(Some(Target {
        api,
        namespace,
        name,
        sub,
        legacy_watch,
    }))
}

/// What the Accept header asks objects to be shaped as (the first range that says wins).
fn shape(accept: &str) -> Shape {
    for range in accept.split(',') {
        let params: Vec<&str> = range.split(';').map(str::trim).collect();
        if params.contains(&"as=Table") {
            return Shape::Table;
        }
        if params.contains(&"as=PartialObjectMetadata")
            || params.contains(&"as=PartialObjectMetadataList")
        {
            return Shape::Metadata;
        }
    }
    Shape::Plain
}

fn acceptable(accept: &str) -> bool {
    accept.is_empty()
        || accept.split(',').any(|range| {
            let media = range.split(';').next().unwrap_or_default().trim();
            matches!(
                media,
                "application/json" | "*/*" | "application/*" | "application/yaml" | ""
            )
        })
}

/// Handles one request end to end (never fails: errors become Status responses).
pub async fn handle(state: Arc<State>, request: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query_text = request.uri().query().unwrap_or_default().to_string();
    let header = |name: http::header::HeaderName| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let user_agent = header(USER_AGENT);
    let authorization = header(AUTHORIZATION);

    let latency = lock(&state.faults).latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let public = matches!(
        path.as_str(),
        "/version" | "/healthz" | "/livez" | "/readyz"
    );
    let token = authorization
        .strip_prefix("Bearer ")
        .or_else(|| authorization.strip_prefix("bearer "))
        .map(str::trim);
    let user = match token {
        Some(t) => state.users.authenticate(t).cloned(),
        None if public => Some(UserInfo {
            username: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
        }),
        None => None,
    };

    let response = match &user {
        None => error_response(&ApiError::unauthorized()),
        Some(user) => {
            let fault = lock(&state.faults).take(method.as_str(), &path);
            let injected = |code: u16| {
                error_response(&ApiError::with_code(
                    code,
                    format!("injected fault: {code}"),
                ))
            };
            match fault {
                Some(f) if !f.applied => injected(f.status),
                _ => {
                    let response = match route(&state, request, user).await {
                        Ok(response) => response,
                        Err(err) => error_response(&err),
                    };
                    // Carried out; the client is told it failed (a lost response).
                    match fault {
                        Some(f) => injected(f.status),
                        None => response,
                    }
                }
            }
        }
    };
    let status = response.status().as_u16();
    let username = user.map(|u| u.username).unwrap_or_default();
    tracing::debug!(
        method = %method,
        path = %path,
        query = %query_text,
        status,
        user = %username,
        user_agent = %user_agent,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    lock(&state.stats).record(RequestRecord {
        method: method.to_string(),
        path,
        query: query_text,
        user_agent,
        user: username,
        status,
    });
    response
}

/// Past the limit, this much more is read and dropped so the client sees the 413 instead of
/// a connection closed under its feet; beyond it the connection is closed.
const MAX_DRAINED: usize = 32 * 1024 * 1024;

/// How long a request body may take to arrive, as the apiserver's request timeout.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

async fn read_body(request: Request<Incoming>) -> ApiResult<Bytes> {
    match tokio::time::timeout(BODY_TIMEOUT, read_body_within_limits(request)).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::new(
            504,
            "Timeout",
            "Timeout: request did not complete within requested timeout - context deadline exceeded",
        )),
    }
}

async fn read_body_within_limits(request: Request<Incoming>) -> ApiResult<Bytes> {
    let mut body = request.into_body();
    let mut collected = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|err| ApiError::bad_request(format!("cannot read the request body: {err}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen <= MAX_BODY {
            collected.extend_from_slice(&data);
        } else if seen > MAX_BODY + MAX_DRAINED {
            break;
        }
    }
    if seen > MAX_BODY {
        return Err(ApiError::too_large(MAX_BODY));
    }
    Ok(collected.freeze())
}

fn parse_document(bytes: &[u8], content_type: &str) -> ApiResult<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    // kubectl 1.32+ typed clients send protobuf bodies; read the kinds they create.
    if media == "application/vnd.kubernetes.protobuf" {
        return super::protobuf::decode(bytes).map_err(|e| match e {
            super::protobuf::ProtobufError::Malformed(_) => ApiError::bad_request(e.to_string()),
            _ => {
                let mut err = ApiError::unsupported_media_type(content_type);
                err.message = e.to_string();
                err
            }
        });
    }
    if media.contains("protobuf") || media.contains("cbor") {
        return Err(ApiError::unsupported_media_type(content_type));
    }
    if media.ends_with("yaml") {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
        return serde_saphyr::from_str::<Value>(text)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("error decoding the request body as JSON: {e}")))
}

async fn route(
    state: &Arc<State>,
    request: Request<Incoming>,
    user: &UserInfo,
) -> ApiResult<Response<Body>> {
    let path = request.uri().path().to_string();
    let query = Query::parse(request.uri().query());
    let accept = request
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = request.method().clone();

    let get_only = |value: Value| -> ApiResult<Response<Body>> {
        if method != Method::GET {
            return Err(ApiError::method_not_allowed());
        }
        Ok(json_response(200, &value))
    };
    match segments.as_slice() {
        ["version"] => return get_only(state.version.version_json()),
        ["healthz" | "livez" | "readyz"] => {
            let mut r = Response::new(full("ok"));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            return Ok(r);
        }
        ["openapi", "v2"] => {
            // An empty protobuf Document: kubectl validates against no schema at all.
            let mut r = Response::new(full(Bytes::new()));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                ),
            );
            return Ok(r);
        }
        ["api"] | ["apis"] => {
            let core = segments[0] == "api";
            if let Some(version) = discovery::aggregated_version(&accept) {
                let mut r = get_only(discovery::aggregated(core, version))?;
                if let Ok(v) = HeaderValue::from_str(&discovery::aggregated_content_type(version)) {
                    r.headers_mut().insert(CONTENT_TYPE, v);
                }
                r.headers_mut()
                    .insert("Vary", HeaderValue::from_static("Accept"));
                return Ok(r);
            }
            let address = state
                .server_address
                .read()
                .map(|a| a.clone())
                .unwrap_or_default();
            let body = if core {
                discovery::api_versions(&address)
            } else {
                discovery::group_list()
            };
            return get_only(body);
        }
        ["api", "v1"] => {
            return get_only(
                discovery::resource_list("", "v1").ok_or_else(ApiError::no_such_resource)?,
            );
        }
        ["apis", g] => {
            return get_only(discovery::group(g).ok_or_else(ApiError::no_such_resource)?);
        }
        ["apis", g, v] => {
            return get_only(
                discovery::resource_list(g, v).ok_or_else(ApiError::no_such_resource)?,
            );
        }
        _ => {}
    }
    let Some(target) = parse_target(&segments)? else {
        return Err(ApiError::no_such_resource());
    };
    if !acceptable(&accept) {
        return Err(ApiError::not_acceptable());
    }
    let api = target.api;
    let shape = shape(&accept);
    let include = match query.get("includeObject") {
        None | Some("") => table::IncludeObject::default(),
        Some(value) => table::IncludeObject::parse(value).ok_or_else(|| {
            ApiError::bad_request(format!(
                "includeObject: Unsupported value: \"{value}\": supported values: \"Metadata\", \"None\", \"Object\""
            ))
        })?,
    };
    match (method.clone(), target.name.clone()) {
        (Method::GET, None) if target.sub == Sub::Main => {
            let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or_default())
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let fields =
                FieldSelector::parse(query.get("fieldSelector").unwrap_or_default(), api.storage)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
            if target.legacy_watch || query.flag("watch") {
                return watch_response(state, &target, &query, labels, fields, shape, include);
            }
            Ok(list_response(
                state, &target, &labels, &fields, shape, include,
            ))
        }
        (Method::GET, Some(name)) => {
            if target.legacy_watch {
                let fields = FieldSelector::parse(&format!("metadata.name={name}"), api.storage)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                return watch_response(
                    state,
                    &target,
                    &query,
                    LabelSelector::default(),
                    fields,
                    shape,
                    include,
                );
            }
            let key = (target.namespace.clone().unwrap_or_default(), name.clone());
            let object = lock(&state.store)
                .get(api.storage, &key)
                .ok_or_else(|| ApiError::not_found(api, &name))?;
            if shape == Shape::Metadata && target.sub == Sub::Main {
                return Ok(json_response(200, &partial(&object)));
            }
            if shape == Shape::Table && target.sub == Sub::Main && api.view == View::Native {
                let rv = object
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                return Ok(json_response(
                    200,
                    &table::render_with(
                        api.storage,
                        std::slice::from_ref(&object),
                        &rv,
                        util::now(),
                        include,
                    ),
                ));
            }
            Ok(json_response(
                200,
                &super::write::to_view(api, target.sub, &object),
            ))
        }
        (Method::POST, None) if target.sub == Sub::Main => {
            if api.namespaced && target.namespace.is_none() {
                return Err(ApiError::method_not_allowed());
            }
            query.check_field_validation()?;
            let dry_run = query.dry_run()?;
            let body = read_body(request).await?;
            let body = parse_document(&body, &content_type)?;
            let outcome = state
                .write(
                    WriteRequest {
                        api,
                        namespace: target.namespace,
                        sub: Sub::Main,
                        change: Change::Create { body },
                        dry_run,
                        preserve: false,
                    },
                    user,
                    true,
                )
                .await?;
            let mut r = json_response(201, &outcome.body);
            add_warnings(&mut r, &outcome.warnings);
            Ok(r)
        }
        (Method::PUT, Some(name)) => {
            query.check_field_validation()?;
            let dry_run = query.dry_run()?;
            let body = read_body(request).await?;
            let body = parse_document(&body, &content_type)?;
            let outcome = state
                .write(
                    WriteRequest {
                        api,
                        namespace: target.namespace,
                        sub: target.sub,
                        change: Change::Replace { name, body },
                        dry_run,
                        preserve: false,
                    },
                    user,
                    true,
                )
                .await?;
            let mut r = json_response(if outcome.created { 201 } else { 200 }, &outcome.body);
            add_warnings(&mut r, &outcome.warnings);
            Ok(r)
        }
        (Method::PATCH, Some(name)) => {
            query.check_field_validation()?;
            let dry_run = query.dry_run()?;
            let media = content_type
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            let kind = match media.as_str() {
                "application/strategic-merge-patch+json" => PatchKind::Strategic,
                "application/merge-patch+json" => PatchKind::Merge,
                "application/json-patch+json" => PatchKind::Json,
                _ => return Err(ApiError::unsupported_media_type(&content_type)),
            };
            let body = read_body(request).await?;
            let patch = parse_document(&body, "application/json")?;
            let outcome = state
                .write(
                    WriteRequest {
                        api,
                        namespace: target.namespace,
                        sub: target.sub,
                        change: Change::Patch { name, kind, patch },
                        dry_run,
                        preserve: false,
                    },
                    user,
                    true,
                )
                .await?;
            let mut r = json_response(200, &outcome.body);
            add_warnings(&mut r, &outcome.warnings);
            Ok(r)
        }
        (Method::DELETE, Some(name)) if target.sub == Sub::Main => {
            let body = read_body(request).await?;
            let mut options = if body.iter().all(u8::is_ascii_whitespace) {
                Value::Object(Default::default())
            } else {
                parse_document(&body, "application/json")?
            };
            // DeleteOptions may carry dryRun in the body instead of the query.
            let dry_run = query.dry_run()?
                || options
                    .get("dryRun")
                    .and_then(Value::as_array)
                    .is_some_and(|d| d.iter().any(|v| v == "All"));
            if let Some(policy) = query.get("propagationPolicy")
                && let Some(map) = options.as_object_mut()
            {
                map.insert(
                    "propagationPolicy".into(),
                    Value::String(policy.to_string()),
                );
            }
            let outcome = state
                .write(
                    WriteRequest {
                        api,
                        namespace: target.namespace,
                        sub: Sub::Main,
                        change: Change::Delete { name, options },
                        dry_run,
                        preserve: false,
                    },
                    user,
                    true,
                )
                .await?;
            let mut r = json_response(200, &outcome.body);
            add_warnings(&mut r, &outcome.warnings);
            Ok(r)
        }
        (Method::DELETE, None) if target.sub == Sub::Main => {
            let dry_run = query.dry_run()?;
            let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or_default())
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let fields =
                FieldSelector::parse(query.get("fieldSelector").unwrap_or_default(), api.storage)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let objects = selected(state, &target, &labels, &fields);
            let mut items = Vec::new();
            for object in objects {
                let name = super::store::key_of(&object).1;
                let outcome = state
                    .write(
                        WriteRequest {
                            api,
                            namespace: target.namespace.clone(),
                            sub: Sub::Main,
                            change: Change::Delete {
                                name,
                                options: Value::Object(Default::default()),
                            },
                            dry_run,
                            preserve: false,
                        },
                        user,
                        true,
                    )
                    .await;
                if outcome.is_ok() {
                    items.push(super::write::to_view(api, Sub::Main, &object));
                }
            }
            let rv = lock(&state.store).current_rv().to_string();
            Ok(json_response(
                200,
                &serde_json::json!({"kind": api.list_kind(), "apiVersion": api.api_version(),
                    "metadata": {"resourceVersion": rv}, "items": items}),
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn selected(
    state: &State,
    target: &Target,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> Vec<super::super::model::Object> {
    let store = lock(&state.store);
    let api = target.api;
    let ns = target.namespace.as_deref();
    if let Some(name) = fields.pinned_name() {
        let key = (ns.unwrap_or_default().to_string(), name.to_string());
        return match (ns, api.namespaced) {
            (Some(_), true) | (None, false) => store
                .get(api.storage, &key)
                .into_iter()
                .filter(|o| labels.matches(o) && fields.matches(o))
                .collect(),
            _ => store
                .list(api.storage, None)
                .into_iter()
                .filter(|o| labels.matches(o) && fields.matches(o))
                .collect(),
        };
    }
    store
        .list(api.storage, ns)
        .into_iter()
        .filter(|o| labels.matches(o) && fields.matches(o))
        .collect()
}

fn list_response(
    state: &State,
    target: &Target,
    labels: &LabelSelector,
    fields: &FieldSelector,
    shape: Shape,
    include: table::IncludeObject,
) -> Response<Body> {
    let api = target.api;
    let rv = lock(&state.store).current_rv().to_string();
    let objects = selected(state, target, labels, fields);
    if shape == Shape::Table && api.view == View::Native {
        return json_response(
            200,
            &table::render_with(api.storage, &objects, &rv, util::now(), include),
        );
    }
    if shape == Shape::Metadata {
        let items: Vec<Value> = objects.iter().map(|o| partial(o)).collect();
        return json_response(
            200,
            &serde_json::json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": rv}, "items": items}),
        );
    }
    // Written by hand so stored objects are serialised in place, never cloned.
    let mut out = Vec::with_capacity(256 + objects.len() * 1024);
    let _ = write!(
        out,
        "{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{{\"resourceVersion\":\"{rv}\"}},\"items\":[",
        api.list_kind(),
        api.api_version()
    );
    for (i, object) in objects.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = if api.view == View::EventsV1 {
            serde_json::to_writer(&mut out, &events::core_to_v1(object))
        } else {
            serde_json::to_writer(&mut out, &**object)
        };
    }
    out.extend_from_slice(b"]}");
    let mut response = Response::new(full(out));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn watch_response(
    state: &Arc<State>,
    target: &Target,
    query: &Query,
    labels: LabelSelector,
    fields: FieldSelector,
    shape: Shape,
    include: table::IncludeObject,
) -> ApiResult<Response<Body>> {
    let resource_version = match query.get("resourceVersion") {
        None | Some("" | "0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?,
        ),
    };
    // Zero or absent means the server's own timeout, as the apiserver treats it.
    let timeout = match query.get("timeoutSeconds").map(str::parse::<u64>) {
        None | Some(Ok(0)) => DEFAULT_WATCH_TIMEOUT,
        Some(Ok(secs)) => Duration::from_secs(secs),
        Some(Err(_)) => {
            return Err(ApiError::bad_request(
                "invalid timeoutSeconds: not a whole number",
            ));
        }
    };
    let params = WatchParams {
        filter: WatchFilter {
            api: target.api,
            namespace: target.namespace.clone(),
            labels,
            fields,
            include,
            shape: match shape {
                Shape::Table if target.api.view != View::Native => Shape::Plain,
                other => other,
            },
        },
        resource_version,
        send_initial_events: query.flag("sendInitialEvents"),
        bookmarks: query.flag("allowWatchBookmarks"),
        timeout,
    };
    let stream =
        watch::start(state.clone(), params).map(|line| Ok::<_, Infallible>(Frame::data(line)));
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(
        "Cache-Control",
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_queries() {
        let q = Query::parse(Some("labelSelector=app%3Dcce-eni-ipam&limit=500&watch=1&x"));
        assert_eq!(q.get("labelSelector"), Some("app=cce-eni-ipam"));
        assert!(q.flag("watch"));
        assert_eq!(q.get("x"), Some(""));
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("a+b%20c"), "a b c");
    }

    #[test]
    fn parses_resource_paths() {
        let t = parse_target(&[
            "apis",
            "apps",
            "v1",
            "namespaces",
            "kube-system",
            "deployments",
            "x",
            "scale",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(t.api.plural, "deployments");
        assert_eq!(t.namespace.as_deref(), Some("kube-system"));
        assert_eq!(t.sub, Sub::Scale);
        let t = parse_target(&["api", "v1", "namespaces", "kube-system"])
            .unwrap()
            .unwrap();
        assert_eq!(t.api.plural, "namespaces");
        assert_eq!(t.name.as_deref(), Some("kube-system"));
        let t = parse_target(&["api", "v1", "namespaces", "a", "status"])
            .unwrap()
            .unwrap();
        assert_eq!(t.sub, Sub::Status);
        assert!(parse_target(&["api", "v1", "foos"]).is_err());
        assert!(parse_target(&["api", "v1", "configmaps", "x", "scale"]).is_err());
        assert!(parse_target(&["apis", "apps", "v1", "deployments", "x"]).is_err());
        let t = parse_target(&["api", "v1", "watch", "namespaces", "a", "pods"])
            .unwrap()
            .unwrap();
        assert!(t.legacy_watch);
    }

    #[test]
    fn negotiates() {
        assert_eq!(
            shape("application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"),
            Shape::Metadata
        );
        assert!(
            Shape::Table == shape("application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
        );
        assert_eq!(shape("application/json, */*"), Shape::Plain);
        assert!(acceptable(
            "application/vnd.kubernetes.protobuf,application/json"
        ));
        assert!(!acceptable("application/vnd.kubernetes.protobuf"));
    }
}
