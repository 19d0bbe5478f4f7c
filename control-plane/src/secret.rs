//! A value that must never be printed: the master key, the database URL (it holds a password).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret string. `Debug` and `Display` print `<redacted>`; reading it takes `expose()`,
/// so every use is a visible, searchable decision.
///
/// It is (de)serialised transparently only because the database URL travels to the engine
/// in its first frame over a private pipe; nothing else serialises one.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself. Call it where the value is used, never to log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(&s)), "Some(<redacted>)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn it_travels_as_a_plain_json_string() {
        let s = Secret::new("postgres://u:pw@h/db");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "\"postgres://u:pw@h/db\"");
        assert_eq!(serde_json::from_str::<Secret>(&json).unwrap(), s);
    }
}
