//! Checks on objects sent to the emulator, answered with 400/422 Status errors.

use crate::api::ApiError;
use crate::kinds::Kind;
use crate::store::meta_mut;
use serde_json::Value;

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

fn invalid(kind: &Kind, name: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::new(422, "Invalid", format!("{} \"{name}\" is invalid: {why}", kind.kind))
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
    match kind.kind {
        "Pod" => {
            let containers = o["spec"]["containers"].as_array();
            if containers.is_none_or(|c| c.is_empty()) {
                return Err(invalid(kind, name, "spec.containers: Required value"));
            }
        }
        "Deployment" => {
            if !o["spec"]["selector"].is_object() {
                return Err(invalid(kind, name, "spec.selector: Required value"));
            }
            if !o["spec"]["template"].is_object() {
                return Err(invalid(kind, name, "spec.template: Required value"));
            }
            if o["spec"].get("replicas").is_some_and(|r| r.as_i64().is_none_or(|n| n < 0)) {
                return Err(invalid(
                    kind,
                    name,
                    "spec.replicas: Invalid value: must be a non-negative integer",
                ));
            }
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
