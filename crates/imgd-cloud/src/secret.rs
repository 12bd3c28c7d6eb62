//! [`Secret`]: a string that never shows itself in logs, errors or debug output.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// An API key. Its `Debug` and `Display` print `***`; only [`Secret::expose`] gives the value,
/// and the one place that calls it is the code that builds the `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself. Never log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `text` with every occurrence of the value replaced by `***`, for provider error
    /// messages that might echo the key back.
    pub fn redact(&self, text: &str) -> String {
        if self.0.len() < 4 {
            return text.to_string();
        }
        text.replace(&self.0, "***")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let secret = Secret::new("sk-live-abcdef123456");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(***)");
        assert_eq!(secret.expose(), "sk-live-abcdef123456");
        assert_eq!(
            secret.redact("Incorrect API key provided: sk-live-abcdef123456."),
            "Incorrect API key provided: ***."
        );
    }

    #[test]
    fn deserializes_from_a_plain_string() {
        #[derive(Deserialize, Debug)]
        struct Holder {
            key: Secret,
        }
        let holder: Holder = serde_json::from_str(r#"{"key":"sk-123456"}"#).unwrap();
        assert_eq!(holder.key.expose(), "sk-123456");
        assert!(!format!("{holder:?}").contains("sk-123456"));
    }
}
