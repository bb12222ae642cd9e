//! Checks on objects sent to the emulator, answered with 400/422 Status errors.

use crate::api::ApiError;
use crate::kinds::Kind;
use crate::store::meta_mut;
use serde_json::{json, Value};

/// The most replicas one Deployment may ask for (the emulator holds every
/// pod in memory; the real limit, 2^31 - 1, would exhaust it).
pub const MAX_REPLICAS: u64 = 100_000;
/// The most containers in one pod.
pub const MAX_CONTAINERS: usize = 100;
/// The largest CPU request or limit of one container, millicores (a million cores).
pub const MAX_CPU_MILLIS: u64 = 1_000_000_000;
/// The largest memory request or limit of one container, MiB (about an exbibyte).
pub const MAX_MEMORY_MIB: u64 = 1_000_000_000;

/// A DNS-1123 subdomain: what most object names must be.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// A 422 as the real API server sends it: the message, and details naming
/// the object with one cause (`field: what`) a client can read.
fn invalid(kind: &Kind, name: &str, why: impl std::fmt::Display) -> ApiError {
    let why = why.to_string();
    let (field, what) = why.split_once(": ").unwrap_or(("", why.as_str()));
    let reason = if what.starts_with("Required value") {
        "FieldValueRequired"
    } else if what.starts_with("Unsupported value") {
        "FieldValueNotSupported"
    } else if what.starts_with("Forbidden") {
        "FieldValueForbidden"
    } else if what.starts_with("Too many") {
        "FieldValueTooMany"
    } else {
        "FieldValueInvalid"
    };
    let mut details =
        json!({"kind": kind.kind, "causes": [{"reason": reason, "message": what, "field": field}]});
    if !name.is_empty() {
        details["name"] = json!(name);
    }
    ApiError::new(422, "Invalid", format!("{} \"{name}\" is invalid: {why}", kind.kind)).with_details(details)
}

/// The taint effects the API server takes.
const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// A node's taints: each with a key and one of the three effects.
fn taints(spec: &Value) -> Result<(), String> {
    let Some(list) = spec["taints"].as_array() else {
        return match &spec["taints"] {
            Value::Null => Ok(()),
            _ => Err("spec.taints: Invalid value: must be a list".into()),
        };
    };
    for (i, t) in list.iter().enumerate() {
        let key = t["key"].as_str().unwrap_or("");
        if key.is_empty() || t.as_object().is_some_and(|o| o.keys().any(|k| k.starts_with('$'))) {
            return Err(format!("spec.taints[{i}].key: Required value"));
        }
        match t["effect"].as_str() {
            None | Some("") => return Err(format!("spec.taints[{i}].effect: Required value")),
            Some(e) if !TAINT_EFFECTS.contains(&e) => {
                return Err(format!(
                    "spec.taints[{i}].effect: Unsupported value: \"{e}\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\""
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Check a change to an existing object: what may not change once set.
pub fn update(kind: &Kind, old: &Value, new: &Value) -> Result<(), ApiError> {
    let name = new["metadata"]["name"].as_str().unwrap_or("");
    if kind.kind == "Node" {
        let (was, is) = (
            old["spec"]["providerID"].as_str().unwrap_or(""),
            new["spec"]["providerID"].as_str().unwrap_or(""),
        );
        if !was.is_empty() && was != is {
            return Err(invalid(
                kind,
                name,
                "spec.providerID: Forbidden: node updates may not change providerID except from \"\" to valid",
            ));
        }
    }
    Ok(())
}

/// Check an object's shape for its kind.
pub fn object(kind: &Kind, o: &Value) -> Result<(), ApiError> {
    let name = o["metadata"]["name"].as_str().unwrap_or("");
    if let Some(k) = o.get("kind").and_then(Value::as_str) {
        if k != kind.kind {
            return Err(ApiError::new(
                400,
                "BadRequest",
                format!("the kind {k} does not match {} for this resource", kind.kind),
            ));
        }
    }
    if let Some(av) = o.get("apiVersion").and_then(Value::as_str) {
        if av != kind.api_version() {
            return Err(ApiError::new(
                400,
                "BadRequest",
                format!("the apiVersion {av} does not match {}", kind.api_version()),
            ));
        }
    }
    if !valid_name(name) {
        return Err(invalid(
            kind,
            name,
            "metadata.name: Invalid value: a lowercase RFC 1123 subdomain is required",
        ));
    }
    // The shapes the controllers write into: a wrong type there would make
    // them fail (a real API server refuses these as undecodable).
    shape(o, "", &["spec", "status"]).map_err(|why| invalid(kind, name, why))?;
    meta(&o["metadata"], "metadata").map_err(|why| invalid(kind, name, why))?;
    match kind.kind {
        "Pod" => pod_spec(&o["spec"], "spec").map_err(|why| invalid(kind, name, why))?,
        "Node" => taints(&o["spec"]).map_err(|why| invalid(kind, name, why))?,
        "Deployment" => {
            if !o["spec"]["selector"].is_object() {
                return Err(invalid(kind, name, "spec.selector: Required value"));
            }
            if !o["spec"]["template"].is_object() {
                return Err(invalid(kind, name, "spec.template: Required value"));
            }
            if o["spec"].get("replicas").is_some_and(|r| r.as_u64().is_none_or(|n| n > MAX_REPLICAS)) {
                return Err(invalid(
                    kind,
                    name,
                    format!("spec.replicas: Invalid value: must be an integer in [0, {MAX_REPLICAS}]"),
                ));
            }
            let template = &o["spec"]["template"];
            meta(&template["metadata"], "spec.template.metadata").map_err(|why| invalid(kind, name, why))?;
            pod_spec(&template["spec"], "spec.template.spec").map_err(|why| invalid(kind, name, why))?;
        }
        "PodDisruptionBudget" => {
            let (min, max) = (o["spec"].get("minAvailable"), o["spec"].get("maxUnavailable"));
            if min.is_some() && max.is_some() {
                return Err(invalid(
                    kind,
                    name,
                    "spec: Invalid value: minAvailable and maxUnavailable cannot be both set",
                ));
            }
        }
        "PriorityClass" if o["value"].as_i64().is_none() => {
            return Err(invalid(kind, name, "value: Required value"));
        }
        _ => {}
    }
    Ok(())
}

/// Each of `fields` of `o`, when present and not null, is an object.
fn shape(o: &Value, at: &str, fields: &[&str]) -> Result<(), String> {
    for f in fields {
        if o.get(*f).is_some_and(|v| !v.is_null() && !v.is_object()) {
            return Err(format!("{at}{f}: Invalid value: must be an object"));
        }
    }
    Ok(())
}

/// `metadata` (absent or an object): labels and annotations map strings to
/// strings; timestamps are RFC 3339 strings.
fn meta(m: &Value, at: &str) -> Result<(), String> {
    if m.is_null() {
        return Ok(());
    }
    if !m.is_object() {
        return Err(format!("{at}: Invalid value: must be an object"));
    }
    for field in ["labels", "annotations"] {
        match &m[field] {
            Value::Null => {}
            Value::Object(map) if map.values().all(Value::is_string) => {}
            _ => return Err(format!("{at}.{field}: Invalid value: must map strings to strings")),
        }
    }
    for field in ["creationTimestamp", "deletionTimestamp"] {
        match &m[field] {
            Value::Null => {}
            Value::String(t) if t.is_ascii() && crate::time::parse_rfc3339(t).is_some() => {}
            other => return Err(format!("{at}.{field}: Invalid value: {other} is not an RFC 3339 time")),
        }
    }
    Ok(())
}

/// A pod spec: containers (1 to [`MAX_CONTAINERS`] objects) whose resource
/// quantities are strings or numbers no larger than the caps.
fn pod_spec(spec: &Value, at: &str) -> Result<(), String> {
    if !spec.is_object() {
        return Err(format!("{at}: Required value"));
    }
    let containers = spec["containers"].as_array().filter(|c| !c.is_empty());
    let Some(containers) = containers else { return Err(format!("{at}.containers: Required value")) };
    if containers.len() > MAX_CONTAINERS {
        return Err(format!("{at}.containers: Too many: at most {MAX_CONTAINERS}"));
    }
    for (i, c) in containers.iter().enumerate() {
        let here = format!("{at}.containers[{i}]");
        if !c.is_object() {
            return Err(format!("{here}: Invalid value: must be an object"));
        }
        shape(c, &format!("{here}."), &["resources"])?;
        if c["image"].as_str().is_none_or(|i| i.trim().is_empty()) {
            return Err(format!("{here}.image: Required value"));
        }
        for list in ["requests", "limits"] {
            let r = &c["resources"][list];
            if !r.is_null() && !r.is_object() {
                return Err(format!("{here}.resources.{list}: Invalid value: must be an object"));
            }
            for (res, max, amount) in [
                ("cpu", MAX_CPU_MILLIS, crate::cluster::parse_cpu as fn(&Value) -> u64),
                ("memory", MAX_MEMORY_MIB, crate::cluster::parse_memory_mib),
            ] {
                let q = &r[res];
                if !(q.is_null() || q.is_string() || q.is_number()) || amount(q) > max {
                    return Err(format!("{here}.resources.{list}.{res}: Invalid value: {q}: not a quantity the emulator holds"));
                }
            }
        }
    }
    Ok(())
}

/// Check an object for create, filling `generateName` and the namespace.
pub fn for_create(kind: &Kind, namespace: &str, mut o: Value) -> Result<Value, ApiError> {
    if let Some(ns) = o["metadata"]["namespace"].as_str() {
        if kind.namespaced && ns != namespace {
            return Err(ApiError::new(400, "BadRequest", format!("the namespace of the provided object ({ns}) does not match the namespace sent on the request ({namespace})")));
        }
    }
    if o["metadata"]["name"].as_str().unwrap_or("").is_empty() {
        match o["metadata"]["generateName"].as_str() {
            Some(prefix) => {
                let name = format!("{prefix}{}", crate::random_suffix());
                meta_mut(&mut o).insert("name".into(), Value::String(name));
            }
            None => {
                return Err(invalid(
                    kind,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ))
            }
        }
    }
    object(kind, &o)?;
    // A core Event about a cluster-scoped object lives in `default`; about
    // a namespaced one, in that object's namespace.
    if kind.kind == "Event" && kind.group.is_empty() {
        let about = o["involvedObject"]["namespace"].as_str().unwrap_or("");
        let fits = if about.is_empty() { namespace == "default" } else { about == namespace };
        if !fits {
            let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
            return Err(invalid(
                kind,
                &name,
                format!(
                    "involvedObject.namespace: Invalid value: \"{about}\": does not match event.namespace"
                ),
            ));
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert!(super::valid_name("node-1.example"));
        assert!(!super::valid_name("Node_1"));
        assert!(!super::valid_name("-a"));
        assert!(!super::valid_name(""));
    }
}
