//! The SQL views of `sql/views/*.sql`, built into the binary so a collector needs no files beside
//! it. Each file holds one query; the view's name is the file's stem.

use crate::error::{QueryError, Result};

/// `(name, SELECT text)` of every view in `sql/views/`, in load order.
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "denies_by_namespace",
        include_str!("../views/denies_by_namespace.sql"),
    ),
    (
        "allows_by_policy",
        include_str!("../views/allows_by_policy.sql"),
    ),
    ("top_talkers", include_str!("../views/top_talkers.sql")),
    (
        "namespace_matrix",
        include_str!("../views/namespace_matrix.sql"),
    ),
    (
        "deny_rate_per_minute",
        include_str!("../views/deny_rate_per_minute.sql"),
    ),
];

/// Reads `DIR/*.sql` as views (sorted by name), for views added by configuration.
pub fn read_dir(dir: &std::path::Path) -> Result<Vec<(String, String)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        QueryError::InvalidRequest(format!("cannot read views from {}: {e}", dir.display()))
    })?;
    let mut out = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| QueryError::InvalidRequest(format!("cannot read {}: {e}", dir.display())))?
            .path();
        if path.extension().and_then(|e| e.to_str()) != Some("sql") {
            continue;
        }
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        check_name(&name)?;
        let text = std::fs::read_to_string(&path).map_err(|e| {
            QueryError::InvalidRequest(format!("cannot read {}: {e}", path.display()))
        })?;
        out.push((name, text));
    }
    out.sort();
    Ok(out)
}

/// A view name must be a plain lower-case SQL identifier.
pub fn check_name(name: &str) -> Result<()> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(QueryError::InvalidRequest(format!(
            "view name {name:?} (from its file name) must be lower-case letters, digits and '_'"
        )))
    }
}
