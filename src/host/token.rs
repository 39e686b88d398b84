//! The host's auth token (protocol §2.1): whoever holds it can read and write the host's store,
//! queue and schedules as this plugin, so it must never reach a log.
//!
//! [`AuthToken`] has no `Display`, and its `Debug` prints a placeholder, so neither `{:?}`, a
//! `tracing` field nor a derived `Debug` of a struct holding it can show the secret. The only
//! way to the text is [`AuthToken::expose`], called where a request to the host is built.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What `Debug` prints instead of a token.
pub const REDACTED: &str = "<redacted>";

#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)] // the worker channel carries it as a plain string
pub struct AuthToken(String);

impl AuthToken {
    /// The token itself, for a request's `auth_token` field and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for AuthToken {
    fn from(token: String) -> Self {
        Self(token)
    }
}

impl From<&str> for AuthToken {
    fn from(token: &str) -> Self {
        Self(token.to_owned())
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Whether there is a token at all is useful and gives nothing away.
        if self.0.is_empty() {
            f.write_str("AuthToken(<empty>)")
        } else {
            write!(f, "AuthToken({REDACTED})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn debug_never_shows_the_token() {
        let token = AuthToken::from(SECRET);
        assert_eq!(format!("{token:?}"), "AuthToken(<redacted>)");
        assert_eq!(format!("{token:#?}"), "AuthToken(<redacted>)");
        assert_eq!(format!("{:?}", AuthToken::default()), "AuthToken(<empty>)");
        assert_eq!(token.expose(), SECRET);
    }

    #[test]
    fn the_worker_channel_carries_it_as_a_string() {
        let token = AuthToken::from(SECRET);
        let json = serde_json::to_string(&token).unwrap();
        assert_eq!(json, format!("\"{SECRET}\""));
        assert_eq!(serde_json::from_str::<AuthToken>(&json).unwrap(), token);
    }
}
