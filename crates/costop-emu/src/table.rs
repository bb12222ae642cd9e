//! `kubectl get` asks for server-side tables (`Accept: …;as=Table`).

use crate::kinds::Kind;
use serde_json::{json, Value};

fn col(name: &str, format: &str, priority: u8) -> Value {
    json!({"name": name, "type": "string", "format": format, "description": "", "priority": priority})
}

fn age(o: &Value) -> String {
    crate::time::age(o["metadata"]["creationTimestamp"].as_str().unwrap_or(""))
}

fn condition(o: &Value, kind: &str) -> Option<String> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str().map(str::to_string))
}

/// A `meta.k8s.io/v1` Table of the objects.
pub fn table(kind: &Kind, items: &[Value], rv: u64) -> Value {
    let (columns, rows): (Vec<Value>, Vec<Value>) = match kind.kind {
        "Node" => (
            vec![col("Name", "name", 0), col("Status", "", 0), col("Roles", "", 0), col("Age", "", 0),
                 col("Version", "", 0), col("Instance-Type", "", 1), col("Zone", "", 1)],
            items
                .iter()
                .map(|o| {
                    let mut st = if condition(o, "Ready").as_deref() == Some("True") { "Ready" } else { "NotReady" }.to_string();
                    if o["spec"]["unschedulable"] == true {
                        st.push_str(",SchedulingDisabled");
                    }
                    let labels = &o["metadata"]["labels"];
                    json!({"cells": [o["metadata"]["name"], st, "<none>", age(o), "v1.33.0-costop-emu",
                                     labels["node.kubernetes.io/instance-type"], labels["topology.kubernetes.io/zone"]],
                           "object": o})
                })
                .collect(),
        ),
        "Pod" => (
            vec![col("Name", "name", 0), col("Ready", "", 0), col("Status", "", 0), col("Restarts", "", 0),
                 col("Age", "", 0), col("IP", "", 1), col("Node", "", 1)],
            items
                .iter()
                .map(|o| {
                    let ready = if condition(o, "Ready").as_deref() == Some("True") { "1/1" } else { "0/1" };
                    let phase = if o["metadata"]["deletionTimestamp"].is_string() {
                        "Terminating".to_string()
                    } else {
                        o["status"]["phase"].as_str().unwrap_or("Pending").to_string()
                    };
                    json!({"cells": [o["metadata"]["name"], ready, phase, 0, age(o),
                                     o["status"]["podIP"].as_str().unwrap_or("<none>"),
                                     o["spec"]["nodeName"].as_str().unwrap_or("<none>")],
                           "object": o})
                })
                .collect(),
        ),
        _ => (
            vec![col("Name", "name", 0), col("Age", "", 0)],
            items.iter().map(|o| json!({"cells": [o["metadata"]["name"], age(o)], "object": o})).collect(),
        ),
    };
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv.to_string()},
           "columnDefinitions": columns, "rows": rows})
}
