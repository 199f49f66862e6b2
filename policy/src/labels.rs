//! Label selectors (`metav1.LabelSelector`): parsing with the API server's validation, and a
//! compiled form that is matched without allocation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub type Labels = BTreeMap<String, String>;

/// A label selector as written in a manifest. `{}` (and an absent selector where the API says so)
/// selects everything.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<Labels>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_expressions: Option<Vec<Requirement>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One `matchExpressions` entry. Validated as the API server does: `In`/`NotIn` need at least
/// one value, `Exists`/`DoesNotExist` must have none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawRequirement")]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequirement {
    key: String,
    operator: Operator,
    #[serde(default)]
    values: Option<Vec<String>>,
}

impl TryFrom<RawRequirement> for Requirement {
    type Error = String;
    fn try_from(r: RawRequirement) -> Result<Self, String> {
        let values = r.values.unwrap_or_default();
        validate_label_key(&r.key).map_err(|e| format!("matchExpressions key {:?}: {e}", r.key))?;
        match r.operator {
            Operator::In | Operator::NotIn if values.is_empty() => Err(format!(
                "matchExpressions key {:?}: operator {:?} requires at least one value",
                r.key, r.operator
            )),
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => Err(format!(
                "matchExpressions key {:?}: operator {:?} must not have values",
                r.key, r.operator
            )),
            _ => Ok(Requirement {
                key: r.key,
                operator: r.operator,
                values,
            }),
        }
    }
}

/// Checks a label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters of alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() || p.len() > 253 {
            return Err("prefix must be a DNS subdomain of 1 to 253 characters".into());
        }
        if !p.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        }) {
            return Err(format!("prefix {p:?} is not a lowercase DNS subdomain"));
        }
    }
    validate_label_name(name).map_err(|e| format!("name part {e}"))
}

fn validate_label_name(name: &str) -> Result<(), String> {
    let ok_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let b = name.as_bytes();
    if name.is_empty() || name.len() > 63 {
        return Err("must be 1 to 63 characters".into());
    }
    if !b.iter().all(|&c| ok_char(c))
        || !b[0].is_ascii_alphanumeric()
        || !b[b.len() - 1].is_ascii_alphanumeric()
    {
        return Err(format!(
            "{name:?} must be alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
        ));
    }
    Ok(())
}

/// Checks a label value: empty, or a label name.
pub fn validate_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        Ok(())
    } else {
        validate_label_name(value)
    }
}

impl LabelSelector {
    /// The selector that selects everything (`{}`).
    pub fn everything() -> Self {
        LabelSelector::default()
    }

    /// Whether this is `{}`.
    pub fn is_empty(&self) -> bool {
        self.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
            && self.match_expressions.as_ref().is_none_or(Vec::is_empty)
    }

    /// Validates `matchLabels` keys and values (expressions validate themselves on parse).
    pub fn validate(&self) -> Result<(), String> {
        for (k, v) in self.match_labels.iter().flatten() {
            validate_label_key(k).map_err(|e| format!("matchLabels key {k:?}: {e}"))?;
            validate_label_value(v).map_err(|e| format!("matchLabels value for {k:?}: {e}"))?;
        }
        Ok(())
    }

    /// Compiles to a flat list of requirements (matchLabels become `In` with one value).
    pub fn compile(&self) -> CompiledSelector {
        let mut reqs: Vec<CompiledRequirement> = self
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| CompiledRequirement::Equals(k.clone(), v.clone()))
            .collect();
        for r in self.match_expressions.iter().flatten() {
            reqs.push(match r.operator {
                Operator::In => CompiledRequirement::In(r.key.clone(), r.values.clone()),
                Operator::NotIn => CompiledRequirement::NotIn(r.key.clone(), r.values.clone()),
                Operator::Exists => CompiledRequirement::Exists(r.key.clone()),
                Operator::DoesNotExist => CompiledRequirement::DoesNotExist(r.key.clone()),
            });
        }
        CompiledSelector { reqs }
    }

    /// `kubectl describe` style: `app=web,tier in (a,b),!legacy`; `<all>` for `{}`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .compile()
            .reqs
            .iter()
            .map(CompiledRequirement::describe)
            .collect();
        if parts.is_empty() {
            "<all>".into()
        } else {
            parts.join(",")
        }
    }
}

/// A selector ready to match: all requirements must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledSelector {
    reqs: Vec<CompiledRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompiledRequirement {
    Equals(String, String),
    In(String, Vec<String>),
    /// Matches when the key is absent too (Kubernetes semantics).
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl CompiledRequirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            CompiledRequirement::Equals(k, v) => labels.get(k) == Some(v),
            CompiledRequirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            CompiledRequirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            CompiledRequirement::Exists(k) => labels.contains_key(k),
            CompiledRequirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            CompiledRequirement::Equals(k, v) => format!("{k}={v}"),
            CompiledRequirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
            CompiledRequirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
            CompiledRequirement::Exists(k) => k.clone(),
            CompiledRequirement::DoesNotExist(k) => format!("!{k}"),
        }
    }
}

impl CompiledSelector {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.reqs.iter().all(|r| r.matches(labels))
    }

    /// The requirements `labels` fails, for explanations.
    pub fn unmet<'a>(&'a self, labels: &Labels) -> Vec<&'a CompiledRequirement> {
        self.reqs.iter().filter(|r| !r.matches(labels)).collect()
    }

    pub fn selects_everything(&self) -> bool {
        self.reqs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(yaml: &str) -> CompiledSelector {
        serde_yaml::from_str::<LabelSelector>(yaml)
            .unwrap()
            .compile()
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(sel("{}").matches(&labels(&[])));
        assert!(sel("{}").matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_are_anded() {
        let s = sel("matchLabels: {app: web, tier: fe}");
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
    }

    #[test]
    fn operators() {
        let s = sel("matchExpressions: [{key: env, operator: In, values: [prod, stage]}]");
        assert!(s.matches(&labels(&[("env", "prod")])));
        assert!(!s.matches(&labels(&[("env", "dev")])));
        assert!(!s.matches(&labels(&[])));

        let s = sel("matchExpressions: [{key: env, operator: NotIn, values: [prod]}]");
        assert!(s.matches(&labels(&[("env", "dev")])));
        assert!(s.matches(&labels(&[])), "NotIn matches an absent key");
        assert!(!s.matches(&labels(&[("env", "prod")])));

        let s = sel("matchExpressions: [{key: env, operator: Exists}]");
        assert!(s.matches(&labels(&[("env", "")])));
        assert!(!s.matches(&labels(&[])));

        let s = sel("matchExpressions: [{key: env, operator: DoesNotExist}]");
        assert!(!s.matches(&labels(&[("env", "x")])));
        assert!(s.matches(&labels(&[])));
    }

    #[test]
    fn match_labels_and_expressions_combine() {
        let s = sel(
            "{matchLabels: {app: db}, matchExpressions: [{key: env, operator: In, values: [prod]}]}",
        );
        assert!(s.matches(&labels(&[("app", "db"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[("app", "db"), ("env", "dev")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "prod")])));
    }

    #[test]
    fn invalid_requirements_are_rejected() {
        for (y, why) in [
            (
                "matchExpressions: [{key: a, operator: In}]",
                "requires at least one value",
            ),
            (
                "matchExpressions: [{key: a, operator: Exists, values: [x]}]",
                "must not have values",
            ),
            (
                "matchExpressions: [{key: a, operator: Equals, values: [x]}]",
                "unknown variant",
            ),
            (
                "matchExpressions: [{key: '-a', operator: Exists}]",
                "starting and ending alphanumeric",
            ),
            ("matchLabel: {a: b}", "unknown field"),
        ] {
            let e = serde_yaml::from_str::<LabelSelector>(y)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{y}: {e}");
        }
        let s: LabelSelector = serde_yaml::from_str("matchLabels: {'a/b/c': x}").unwrap();
        assert!(s.validate().is_err());
    }

    #[test]
    fn describe_is_kubectl_like() {
        let s: LabelSelector = serde_yaml::from_str(
            "{matchLabels: {app: web}, matchExpressions: [{key: t, operator: In, values: [a, b]}, {key: l, operator: DoesNotExist}]}",
        )
        .unwrap();
        assert_eq!(s.describe(), "app=web,t in (a,b),!l");
        assert_eq!(LabelSelector::everything().describe(), "<all>");
    }
}
