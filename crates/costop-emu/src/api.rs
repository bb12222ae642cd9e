//! The HTTP face of the emulator: discovery, CRUD, list/watch, patches,
//! evictions and token reviews, with Kubernetes Status errors.

use crate::kinds::{idx, kind_at, KINDS};
use crate::patch::{self, PatchKind};
use crate::select::{FieldSelector, LabelSelector};
use crate::store::{meta_mut, name_of, Change, IndexBy, StoreError};
use crate::table;
use crate::EmuState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A failure to answer with a Kubernetes `Status`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP code.
    pub code: u16,
    /// Status reason, e.g. `Invalid`.
    pub reason: &'static str,
    /// What was wrong.
    pub message: String,
    /// The Status `details` (the object's name and kind; for 422 the causes).
    pub details: Option<Value>,
}

impl ApiError {
    /// A new error.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: None }
    }

    /// With Status `details`.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self.details {
            Some(d) => status_details(self.code, self.reason, self.message, d),
            None => status(self.code, self.reason, self.message),
        }
    }
}

/// A Kubernetes `Status` failure.
pub fn status(code: u16, reason: &str, message: impl Into<String>) -> Response {
    let message = message.into();
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    reply(code, &body)
}

/// A Kubernetes `Status` failure with `details` (what the real API server
/// sends for 404, 409 and 422: the object's name and kind, and causes).
pub fn status_details(code: u16, reason: &str, message: impl Into<String>, details: Value) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message.into(), "reason": reason, "details": details, "code": code,
    });
    reply(code, &body)
}

/// The real API server's answer to a path outside every API group it serves.
fn page_not_found() -> Response {
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "404 page not found\n")
        .into_response()
}

/// A `resourceVersion` that is not a number: the real API server (1.20)
/// answers 500 with no reason.
fn bad_resource_version(rv: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 500,
        "message": format!("resourceVersion: Invalid value: \"{rv}\": strconv.ParseUint: parsing \"{rv}\": invalid syntax")});
    reply(500, &body)
}

/// Fields a field selector may name, by kind (the rest get 400 as on a real
/// API server); every kind takes `metadata.name` and `metadata.namespace`.
fn selectable_field(kind: &str, field: &str) -> bool {
    let extra: &[&str] = match kind {
        "Pod" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
        "Node" => &["spec.unschedulable"],
        "Namespace" => &["status.phase"],
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        _ => &[],
    };
    field == "metadata.name" || field == "metadata.namespace" || extra.contains(&field)
}

/// Media types a body may be sent as (the real server also takes YAML and
/// protobuf; the emulator reads JSON only, and refuses the others as 400).
fn body_media_type_ok(headers: &HeaderMap) -> bool {
    match headers.get(header::CONTENT_TYPE).and_then(|h| h.to_str().ok()) {
        None => true,
        Some(ct) => {
            let media = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            matches!(
                media.as_str(),
                "" | "application/json" | "application/yaml" | "application/vnd.kubernetes.protobuf" | "*/*"
            )
        }
    }
}

fn unsupported_media_type() -> Response {
    status(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf",
    )
}

/// A list page: the items after the `continue` token, at most `limit`, and
/// the token for the next page (items are in namespace/name order).
fn page(
    items: Vec<Value>,
    query: &HashMap<String, String>,
) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let key = |o: &Value| {
        format!(
            "{}/{}",
            o["metadata"]["namespace"].as_str().unwrap_or(""),
            o["metadata"]["name"].as_str().unwrap_or("")
        )
    };
    let after = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => Some(decode_continue(token).ok_or_else(|| {
            ApiError::new(
                400,
                "BadRequest",
                "continue key is not valid: the token was not issued by this server",
            )
        })?),
        None => None,
    };
    let mut items: Vec<Value> = match &after {
        Some(a) => items.into_iter().filter(|o| key(o).as_str() > a.as_str()).collect(),
        None => items,
    };
    let limit = query.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
    match limit {
        Some(limit) if items.len() > limit => {
            items.truncate(limit);
            let next = items.last().map(|o| encode_continue(&key(o)));
            Ok((items, next))
        }
        _ => Ok((items, None)),
    }
}

fn encode_continue(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Option<String> {
    if !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..token.len()).step_by(2).map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

fn reply(code: u16, body: &Value) -> Response {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn store_error(e: StoreError) -> Response {
    let (code, reason, kind, name) = match &e {
        StoreError::NotFound { kind, name } => (404, "NotFound", kind, name),
        StoreError::AlreadyExists { kind, name } => (409, "AlreadyExists", kind, name),
        StoreError::Conflict { kind, name } => (409, "Conflict", kind, name),
    };
    let details = json!({"name": name, "kind": kind});
    status_details(code, reason, e.to_string(), details)
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decode `%XX` and `+`. Works on bytes, so a `%` before a multi-byte
/// character (`%€`) or at the end stays a literal `%`; bytes that do not
/// form UTF-8 become U+FFFD.
pub fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                match (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
                    (Some(hi), Some(lo)) => {
                        out.push(hi << 4 | lo);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The single entry point: route by path.
pub async fn handle(
    State(st): State<Arc<EmuState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = parse_query(uri.query());
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["version"] => return reply(200, &version()),
        ["healthz"] | ["readyz"] | ["livez"] => return (StatusCode::OK, "ok").into_response(),
        // Instance metadata answers to its own IMDSv2 tokens, not to Kubernetes credentials.
        ["imds", node, rest @ ..] => return crate::imds::handle(&st, &method, node, rest, &headers),
        _ => {}
    }
    if !st.authorized(&headers) {
        return status(401, "Unauthorized", "Unauthorized");
    }
    match segs.as_slice() {
        // The admin API hands out pods' tokens and kills instances: only
        // for the admin credential, never for a pod's token.
        ["admin", ..] if !st.is_admin(&headers) => status(
            403,
            "Forbidden",
            "the admin API needs the admin credential (the kubeconfig's token); a pod's token may not use it",
        ),
        ["admin", rest @ ..] => crate::admin::handle(&st, &method, rest, &body),
        ["api"] => {
            reply(200, &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}))
        }
        ["apis"] => reply(200, &group_list()),
        ["api", "v1"] => reply(200, &resource_list("", "v1")),
        ["apis", g] => match group(g) {
            Some(g) => reply(200, &g),
            None => page_not_found(),
        },
        ["apis", g, v] if KINDS.iter().any(|k| k.group == *g && k.version == *v) => {
            reply(200, &resource_list(g, v))
        }
        ["api", "v1", rest @ ..] => resource(&st, &method, "", "v1", rest, &query, &headers, &body).await,
        ["apis", g, v, rest @ ..] => resource(&st, &method, g, v, rest, &query, &headers, &body).await,
        _ => status(404, "NotFound", format!("the server could not find the requested resource ({path})")),
    }
}

fn version() -> Value {
    json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-costop-emu", "gitCommit": "costop-emu",
           "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "none",
           "compiler": "rustc", "platform": "linux/amd64"})
}

fn groups() -> Vec<(&'static str, &'static str)> {
    let mut gs: Vec<(&str, &str)> = Vec::new();
    for k in KINDS.iter().filter(|k| !k.group.is_empty()) {
        if !gs.contains(&(k.group, k.version)) {
            gs.push((k.group, k.version));
        }
    }
    gs
}

fn group_json(g: &str, v: &str) -> Value {
    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
}

fn group(g: &str) -> Option<Value> {
    groups().into_iter().find(|(name, _)| name == &g).map(|(g, v)| {
        let mut j = group_json(g, v);
        j["kind"] = json!("APIGroup");
        j["apiVersion"] = json!("v1");
        j
    })
}

fn group_list() -> Value {
    let list: Vec<Value> = groups().into_iter().map(|(g, v)| group_json(g, v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": list})
}

fn resource_list(g: &str, v: &str) -> Value {
    let mut resources = Vec::new();
    for k in KINDS.iter().filter(|k| k.group == g && k.version == v) {
        resources.push(json!({"name": k.plural, "singularName": k.singular, "namespaced": k.namespaced,
                              "kind": k.kind, "verbs": k.verbs, "shortNames": k.short}));
        for sub in k.subresources {
            let (kind, verbs) = match *sub {
                "eviction" => ("Eviction", json!(["create"])),
                "scale" => ("Scale", json!(["get", "patch", "update"])),
                _ => (k.kind, json!(["get", "patch", "update"])),
            };
            let group_hint = if *sub == "eviction" { json!("policy") } else { json!(k.group) };
            resources.push(json!({"name": format!("{}/{}", k.plural, sub), "singularName": "",
                                  "namespaced": k.namespaced, "kind": kind, "verbs": verbs,
                                  "group": group_hint, "version": "v1"}));
        }
    }
    let gv = if g.is_empty() { v.to_string() } else { format!("{g}/{v}") };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

/// Where a resource path points.
struct Target<'a> {
    kind: usize,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    sub: Option<&'a str>,
}

fn parse_target<'a>(g: &str, v: &str, rest: &[&'a str]) -> Option<Target<'a>> {
    match rest {
        ["namespaces", ns, plural, tail @ ..]
            if kind_at(g, v, plural).is_some_and(|k| KINDS[k].namespaced) =>
        {
            let kind = kind_at(g, v, plural)?;
            match tail {
                [] => Some(Target { kind, namespace: Some(ns), name: None, sub: None }),
                [name] => Some(Target { kind, namespace: Some(ns), name: Some(name), sub: None }),
                [name, sub] => Some(Target { kind, namespace: Some(ns), name: Some(name), sub: Some(sub) }),
                _ => None,
            }
        }
        [plural, tail @ ..] => {
            let kind = kind_at(g, v, plural)?;
            let namespaced = KINDS[kind].namespaced;
            match tail {
                [] => Some(Target { kind, namespace: None, name: None, sub: None }),
                [name] if !namespaced => Some(Target { kind, namespace: None, name: Some(name), sub: None }),
                [name, sub] if !namespaced => {
                    Some(Target { kind, namespace: None, name: Some(name), sub: Some(sub) })
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, "BadRequest", format!("invalid JSON body: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::new(400, "BadRequest", "the request body must be a JSON object"));
    }
    Ok(v)
}

#[allow(clippy::too_many_arguments)]
async fn resource(
    st: &Arc<EmuState>,
    method: &Method,
    g: &str,
    v: &str,
    rest: &[&str],
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    if !KINDS.iter().any(|k| k.group == g && k.version == v) {
        return page_not_found();
    }
    let Some(t) = parse_target(g, v, rest) else {
        return status(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({})", rest.join("/")),
        );
    };
    let kind = &KINDS[t.kind];
    let ns = t.namespace.unwrap_or("");
    let want_table =
        headers.get(header::ACCEPT).and_then(|h| h.to_str().ok()).is_some_and(|a| a.contains("as=Table"));
    match (method.clone(), t.name, t.sub) {
        (Method::GET, None, None) => {
            let labels = match query.get("labelSelector").map(|s| LabelSelector::parse(s)).transpose() {
                Ok(s) => s,
                Err(e) => return status(400, "BadRequest", format!("invalid labelSelector: {e}")),
            };
            let fields = match query.get("fieldSelector").map(|s| FieldSelector::parse(s)).transpose() {
                Ok(s) => s,
                Err(e) => return status(400, "BadRequest", format!("invalid fieldSelector: {e}")),
            };
            if let Some(f) =
                fields.as_ref().and_then(|f| f.fields().find(|f| !selectable_field(kind.kind, f)))
            {
                return status(400, "BadRequest", format!("field label not supported: {f}"));
            }
            if let Some(rv) =
                query.get("resourceVersion").filter(|r| !r.is_empty() && r.parse::<u64>().is_err())
            {
                return bad_resource_version(rv);
            }
            // One node's pods come from the node index, not a scan of every pod.
            let on_node = (t.kind == idx::PODS)
                .then(|| fields.as_ref().and_then(|f| f.equals("spec.nodeName")).map(str::to_string))
                .flatten();
            let keep = move |o: &Value| {
                labels.as_ref().is_none_or(|l| l.matches(o)) && fields.as_ref().is_none_or(|f| f.matches(o))
            };
            if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
                return watch(st, t.kind, t.namespace.map(str::to_string), query, want_table, keep);
            }
            let (items, rv) = match &on_node {
                Some(node) => st.store.list_by(IndexBy::NodeName, node, t.namespace, keep),
                // A page reads from the `continue` key on and stops after `limit`.
                None => {
                    let after =
                        query.get("continue").filter(|c| !c.is_empty()).and_then(|c| decode_continue(c));
                    let limit = query.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
                    st.store.list_page(t.kind, t.namespace, keep, after.as_deref(), limit)
                }
            };
            let (items, next) = match page(items, query) {
                Ok(p) => p,
                Err(e) => return e.into_response(),
            };
            if want_table {
                return reply(200, &table::table(kind, &items, rv));
            }
            let mut metadata = json!({"resourceVersion": rv.to_string()});
            if let Some(next) = next {
                metadata["continue"] = json!(next);
            }
            reply(
                200,
                &json!({"kind": format!("{}List", kind.kind), "apiVersion": kind.api_version(),
                               "metadata": metadata, "items": items}),
            )
        }
        (Method::POST | Method::PUT, _, _) if !body_media_type_ok(headers) => unsupported_media_type(),
        (Method::POST, None, None) => {
            let object = match parse_body(body) {
                Ok(o) => o,
                Err(r) => return r.into_response(),
            };
            if t.kind == idx::TOKEN_REVIEWS {
                if object["spec"]["token"].as_str().is_none_or(str::is_empty) {
                    return status(400, "BadRequest", "token is required for TokenReview in authentication");
                }
                return reply(201, &st.review_token(&object));
            }
            if kind.namespaced && t.namespace.is_none() {
                return status(405, "MethodNotAllowed", "create needs a namespace in the path");
            }
            match crate::validate::for_create(kind, ns, object) {
                Ok(object) => match st.create(t.kind, ns, object) {
                    Ok(created) => reply(201, &created),
                    Err(e) => store_error(e),
                },
                Err(r) => r.into_response(),
            }
        }
        (Method::GET, Some(name), None | Some("status")) => match st.store.get(t.kind, ns, name) {
            Ok(o) if want_table => reply(200, &table::table(kind, &[o], st.store.resource_version())),
            Ok(o) => reply(200, &o),
            Err(e) => store_error(e),
        },
        (Method::PUT, Some(name), None | Some("status")) => {
            let object = match parse_body(body) {
                Ok(o) => o,
                Err(r) => return r.into_response(),
            };
            if name_of(&object) != name {
                return status(
                    400,
                    "BadRequest",
                    format!(
                        "the name of the object ({}) does not match the name on the URL ({name})",
                        name_of(&object)
                    ),
                );
            }
            if let Err(r) = crate::validate::object(kind, &object) {
                return r.into_response();
            }
            // As on a real API server, a stale resourceVersion is a 409
            // before the update is validated.
            let sent_rv = object["metadata"]["resourceVersion"].as_str();
            if let Ok(current) = st.store.get(t.kind, ns, name) {
                let fresh =
                    sent_rv.is_none_or(|rv| Some(rv) == current["metadata"]["resourceVersion"].as_str());
                if let (true, Err(r)) = (fresh, crate::validate::update(kind, &current, &object)) {
                    return r.into_response();
                }
            }
            let rv = object["metadata"]["resourceVersion"].as_str().map(str::to_string);
            match st.store.replace(t.kind, ns, name, object, rv.as_deref()) {
                Ok(o) => reply(200, &o),
                Err(e) => store_error(e),
            }
        }
        (Method::PATCH, Some(name), None | Some("status")) => {
            patch_object(st, t.kind, ns, name, headers, body)
        }
        (Method::DELETE, Some(name), None) => {
            let options = serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
            let grace = query
                .get("gracePeriodSeconds")
                .and_then(|g| g.parse::<i64>().ok())
                .or_else(|| options["gracePeriodSeconds"].as_i64());
            if let Err(e) = preconditions(st, t.kind, ns, name, &options["preconditions"]) {
                return e.into_response();
            }
            match st.delete(t.kind, ns, name, grace) {
                Ok(o) => reply(200, &o),
                Err(e) => store_error(e),
            }
        }
        (Method::POST, Some(name), Some("eviction")) if t.kind == idx::PODS => {
            let object = match parse_body(body) {
                Ok(o) => o,
                Err(r) => return r.into_response(),
            };
            if !name_of(&object).is_empty() && name_of(&object) != name {
                return status(400, "BadRequest", "the name of the eviction does not match the pod");
            }
            st.evict(ns, name)
        }
        (Method::GET, Some(name), Some("scale")) if t.kind == idx::DEPLOYMENTS => {
            match st.store.get(t.kind, ns, name) {
                Ok(d) => reply(200, &scale_of(&d)),
                Err(e) => store_error(e),
            }
        }
        (Method::PATCH | Method::PUT, Some(name), Some("scale")) if t.kind == idx::DEPLOYMENTS => {
            let object = match serde_json::from_slice::<Value>(body) {
                Ok(o) => o,
                Err(e) => return status(400, "BadRequest", format!("invalid JSON body: {e}")),
            };
            let Some(replicas) = object["spec"]["replicas"].as_u64() else {
                return status(422, "Invalid", "spec.replicas: Required value");
            };
            if replicas > crate::validate::MAX_REPLICAS {
                return status(
                    422,
                    "Invalid",
                    format!(
                        "spec.replicas: Invalid value: {replicas}: the emulator runs at most {} replicas",
                        crate::validate::MAX_REPLICAS
                    ),
                );
            }
            match st.store.update(t.kind, ns, name, |d| d["spec"]["replicas"] = json!(replicas)) {
                Ok(d) => reply(200, &scale_of(&d)),
                Err(e) => store_error(e),
            }
        }
        (_, _, Some(sub)) => status(404, "NotFound", format!("{} has no subresource {sub}", kind.plural)),
        _ => status(405, "MethodNotAllowed", format!("{method} is not supported here")),
    }
}

/// DELETE's `preconditions` (uid, resourceVersion): a mismatch is a 409, as
/// on a real API server.
fn preconditions(st: &Arc<EmuState>, kind: usize, ns: &str, name: &str, pre: &Value) -> Result<(), ApiError> {
    if !pre.is_object() {
        return Ok(());
    }
    let Ok(current) = st.store.get(kind, ns, name) else {
        // The delete itself answers 404.
        return Ok(());
    };
    for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
        if let Some(want) = pre[field].as_str() {
            let have = current["metadata"][field].as_str().unwrap_or("");
            if want != have {
                let details = json!({"name": name, "kind": KINDS[kind].plural});
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: {label} in precondition: {want}, {label} in object meta: {have}",
                        KINDS[kind].plural
                    ),
                )
                .with_details(details));
            }
        }
    }
    Ok(())
}

fn scale_of(d: &Value) -> Value {
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
           "metadata": {"name": d["metadata"]["name"], "namespace": d["metadata"]["namespace"],
                        "resourceVersion": d["metadata"]["resourceVersion"]},
           "spec": {"replicas": d["spec"]["replicas"]},
           "status": {"replicas": d["status"]["replicas"].as_u64().unwrap_or(0)}})
}

fn patch_object(
    st: &Arc<EmuState>,
    kind: usize,
    ns: &str,
    name: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|h| h.to_str().ok()).unwrap_or("");
    let Some(patch_kind) = PatchKind::from_content_type(ct) else {
        return status(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {ct:?})"));
    };
    let patch: Value = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => return status(400, "BadRequest", format!("invalid patch body: {e}")),
    };
    let current = match st.store.get(kind, ns, name) {
        Ok(o) => o,
        Err(e) => return store_error(e),
    };
    let mut next = current.clone();
    if let Err(e) = patch::apply(patch_kind, &mut next, &patch) {
        return status(422, "Invalid", e);
    }
    if name_of(&next) != name {
        return status(422, "Invalid", "metadata.name: Invalid value: field is immutable");
    }
    if let Err(r) = crate::validate::object(&KINDS[kind], &next) {
        return r.into_response();
    }
    if let Err(r) = crate::validate::update(&KINDS[kind], &current, &next) {
        return r.into_response();
    }
    // Optimistic concurrency only when the patch itself names a version.
    let expected = match patch_kind {
        PatchKind::Json => None,
        _ => patch["metadata"]["resourceVersion"].as_str().map(str::to_string),
    };
    if expected.is_none() {
        meta_mut(&mut next).remove("resourceVersion");
    }
    match st.store.replace(kind, ns, name, next, expected.as_deref()) {
        Ok(o) => reply(200, &o),
        Err(e) => store_error(e),
    }
}

/// A watch: newline-delimited JSON events, from the given resourceVersion
/// (or the current objects as ADDED), until `timeoutSeconds`.
fn watch(
    st: &Arc<EmuState>,
    kind: usize,
    namespace: Option<String>,
    query: &HashMap<String, String>,
    want_table: bool,
    keep: impl Fn(&Value) -> bool + Send + Sync + 'static,
) -> Response {
    // `kubectl get -w` asks for tables: each event's object is then a Table
    // of that one object, as from the real API server.
    let event_line = move |event: &str, object: &Value| {
        if want_table {
            let rv = object["metadata"]["resourceVersion"].as_str().and_then(|r| r.parse().ok()).unwrap_or(0);
            event_line(event, &table::table(&KINDS[kind], std::slice::from_ref(object), rv))
        } else {
            event_line(event, object)
        }
    };
    if let Some(rv) = query.get("resourceVersion").filter(|r| !r.is_empty() && r.parse::<u64>().is_err()) {
        return bad_resource_version(rv);
    }
    // Subscribe before reading history so no change falls between the two.
    let mut rx = st.store.subscribe();
    let timeout = query.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).unwrap_or(1800).min(3600);
    let bookmarks = query.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let from: Option<u64> = query.get("resourceVersion").and_then(|r| r.parse().ok()).filter(|r| *r > 0);
    let wanted = move |c: &Change| {
        c.kind == kind
            && namespace.as_deref().is_none_or(|ns| c.object["metadata"]["namespace"].as_str() == Some(ns))
            && keep(&c.object)
    };
    let mut initial: Vec<String> = Vec::new();
    let mut last_rv = match from {
        Some(rv) => match st.store.changes_since(kind, rv) {
            Some(changes) => {
                for c in changes.iter().filter(|c| wanted(c)) {
                    initial.push(event_line(c.event, &c.object));
                }
                changes.last().map_or(rv, |c| c.rv.max(rv))
            }
            None => {
                let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "message": format!("too old resource version: {rv}"), "reason": "Expired", "code": 410}});
                return (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], format!("{gone}\n"))
                    .into_response();
            }
        },
        None => {
            let (items, rv) = st.store.list(kind, None, |_| true);
            for o in items {
                let c = Change { rv, kind, event: "ADDED", object: Arc::new(o) };
                if wanted(&c) {
                    initial.push(event_line("ADDED", &c.object));
                }
            }
            rv
        }
    };
    let (tx, out) = tokio::sync::mpsc::channel::<String>(1024);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let (api_version, kind_name) = (KINDS[kind].api_version(), KINDS[kind].kind);
    tokio::spawn(async move {
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let mut bookmark = tokio::time::interval(Duration::from_secs(5));
        bookmark.tick().await;
        loop {
            let tick = bookmark.tick();
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tick => {
                    if bookmarks {
                        let mark = json!({"type": "BOOKMARK", "object": {"kind": kind_name, "apiVersion": api_version,
                            "metadata": {"resourceVersion": last_rv.to_string()}}});
                        if tx.send(format!("{mark}\n")).await.is_err() {
                            return;
                        }
                    }
                }
                got = rx.recv() => match got {
                    Ok(c) => {
                        if c.rv > last_rv && wanted(&c) && tx.send(event_line(c.event, &c.object)).await.is_err() {
                            return;
                        }
                        if c.rv > last_rv && c.kind == kind {
                            last_rv = c.rv;
                        }
                    }
                    // Fell behind or the store is gone: end; the client resumes from its last version.
                    Err(_) => return,
                },
            }
        }
    });
    let stream = futures::stream::unfold(out, |mut out| async move {
        out.recv().await.map(|line| (Ok::<Bytes, std::io::Error>(Bytes::from(line)), out))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| status(500, "InternalError", "cannot build the watch response"))
}

fn event_line(event: &str, object: &Value) -> String {
    format!("{}\n", json!({"type": event, "object": object}))
}
