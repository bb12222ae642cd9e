//! Kubernetes resource quantities, as the decisions count them.

/// CPU to millicores: `500m`, `2`, `1.5`. Junk counts as 0.
pub fn cpu_millis(q: &str) -> u64 {
    let q = q.trim();
    match q.strip_suffix('m') {
        Some(m) => m.parse().unwrap_or(0),
        None => (q.parse::<f64>().unwrap_or(0.0) * 1000.0).max(0.0) as u64,
    }
}

/// Memory to MiB: `512Mi`, `2Gi`, `1G`, `1048576`. Junk counts as 0.
pub fn memory_mib(q: &str) -> u64 {
    let q = q.trim();
    const UNITS: [(&str, f64); 10] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    let bytes = UNITS
        .iter()
        .find_map(|(suffix, mult)| q.strip_suffix(suffix).map(|n| n.parse::<f64>().unwrap_or(0.0) * mult))
        .unwrap_or_else(|| q.parse::<f64>().unwrap_or(0.0));
    (bytes / 1_048_576.0).max(0.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(cpu_millis("500m"), 500);
        assert_eq!(cpu_millis("2"), 2000);
        assert_eq!(cpu_millis("1.5"), 1500);
        assert_eq!(cpu_millis("x"), 0);
        assert_eq!(memory_mib("2Gi"), 2048);
        assert_eq!(memory_mib("512Mi"), 512);
        assert_eq!(memory_mib("1048576"), 1);
        assert_eq!(memory_mib("junk"), 0);
    }
}
