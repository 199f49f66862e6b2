//! [`Secret`]: a configuration value (a bearer token, a password) that never appears in `Debug`
//! output, logs or `--print-config`; code that needs it calls [`Secret::expose`].

use serde::{Deserialize, Serialize};

/// A secret string, printed as `Secret(<redacted>)`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The value itself (to send it, or to compare it in constant time).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(
            format!("{s:?} {:?}", vec![s.clone()]),
            "Secret(<redacted>) [Secret(<redacted>)]"
        );
        assert_eq!(s.expose(), "hunter2");
    }
}
