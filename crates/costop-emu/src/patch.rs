//! PATCH bodies: JSON merge patch (RFC 7386), strategic merge patch for the
//! fields costop and kubectl touch, and JSON patch (RFC 6902).

use serde_json::Value;

/// Which patch format a request uses, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/json-patch+json`
    Json,
}

impl PatchKind {
    /// From a Content-Type; `None` for anything else (415).
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Some(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Some(PatchKind::Strategic),
            "application/json-patch+json" => Some(PatchKind::Json),
            _ => None,
        }
    }
}

/// RFC 7386: objects merge key by key, `null` deletes, everything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(entries) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let map = target.as_object_mut().expect("just made an object");
            for (k, v) in entries {
                if v.is_null() {
                    map.remove(k);
                } else {
                    merge(map.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Strategic merge patch, as far as the emulator needs it: like a merge
/// patch, with `$`-directives (`$setElementOrder/…`, `$retainKeys`, `$patch`)
/// dropped; lists are replaced whole (true of `spec.taints`, which has no
/// merge key, and of what `kubectl cordon`, `taint` and `label` send).
pub fn strategic(target: &mut Value, patch: &Value) {
    merge(target, &strip_directives(patch));
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Apply a patch of the given kind; an error says what was wrong.
pub fn apply(kind: PatchKind, target: &mut Value, body: &Value) -> Result<(), String> {
    match kind {
        PatchKind::Merge | PatchKind::Strategic if !body.is_object() => {
            Err("a merge patch must be a JSON object".into())
        }
        PatchKind::Merge => {
            merge(target, body);
            Ok(())
        }
        PatchKind::Strategic => {
            strategic(target, body);
            Ok(())
        }
        PatchKind::Json => {
            let ops: json_patch::Patch =
                serde_json::from_value(body.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
            json_patch::patch(target, &ops).map_err(|e| format!("JSON patch failed: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386() {
        let mut doc = json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]});
        merge(&mut doc, &json!({"a": null, "b": {"c": 5}, "l": [9]}));
        assert_eq!(doc, json!({"b": {"c": 5, "d": 3}, "l": [9]}));
    }

    #[test]
    fn strategic_drops_directives_and_replaces_taints() {
        let mut node = json!({"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]}});
        let patch = json!({"spec": {"unschedulable": true, "taints": [{"key": "b", "effect": "NoSchedule"}], "$setElementOrder/taints": [{"key": "b"}]}});
        apply(PatchKind::Strategic, &mut node, &patch).unwrap();
        assert_eq!(
            node,
            json!({"spec": {"unschedulable": true, "taints": [{"key": "b", "effect": "NoSchedule"}]}})
        );
    }

    #[test]
    fn json_patch_and_errors() {
        let mut doc = json!({"spec": {}});
        apply(PatchKind::Json, &mut doc, &json!([{"op": "add", "path": "/spec/x", "value": 1}])).unwrap();
        assert_eq!(doc["spec"]["x"], 1);
        assert!(apply(PatchKind::Json, &mut doc, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert!(apply(PatchKind::Json, &mut doc, &json!({"op": "add"})).is_err());
        assert!(apply(PatchKind::Merge, &mut doc, &json!([1])).is_err());
        assert_eq!(PatchKind::from_content_type("application/apply-patch+yaml"), None);
    }
}
