//! The two credentials `serve` refuses to start without: the master key (admin API) and the
//! internal token (the filter's, for the internal API).

use clap::Args;

use super::flags::flags;
use super::{invalid, ConfigError};
use crate::secret::Secret;

flags! {
    INTERNAL_TOKEN: long = "internal-token", env = "LIVEGATE_INTERNAL_TOKEN";
    INTERNAL_TOKEN_FILE: long = "internal-token-file", env = "LIVEGATE_INTERNAL_TOKEN_FILE";
    MASTER_KEY: long = "master-key", env = "LIVEGATE_MASTER_KEY";
}

#[derive(Debug, Args)]
pub struct SecretFlags {
    /// The credential of the internal API (`/v1/auth/check`, `/v1/auth/changes`,
    /// `/v1/spend/records`) that the filter sends: at least 32 characters, not a placeholder.
    /// Required, from this variable or `--internal-token-file`, never both.
    #[arg(long = INTERNAL_TOKEN.long, env = INTERNAL_TOKEN.env, hide_env_values = true)]
    pub internal_token: Option<Secret>,
    /// A file holding the internal API's credential (e.g. a mounted Secret); one trailing
    /// newline is ignored.
    #[arg(long = INTERNAL_TOKEN_FILE.long, env = INTERNAL_TOKEN_FILE.env)]
    pub internal_token_file: Option<String>,
    /// Admin credential for `/key/*`: at least 32 characters, not a placeholder; the service
    /// refuses to start without one (generate it with `openssl rand -hex 32`).
    #[arg(long = MASTER_KEY.long, env = MASTER_KEY.env, hide_env_values = true)]
    pub master_key: Option<Secret>,
}

/// The credentials, checked: present, long enough, no placeholder.
#[derive(Debug, Clone)]
pub struct Secrets {
    pub master_key: Secret,
    pub internal_token: Secret,
}

impl TryFrom<SecretFlags> for Secrets {
    type Error = ConfigError;

    fn try_from(a: SecretFlags) -> Result<Secrets, ConfigError> {
        Ok(Secrets {
            master_key: master_key(a.master_key)?,
            internal_token: internal_token(a.internal_token, a.internal_token_file.as_deref())?,
        })
    }
}

/// The shortest master key accepted: 32 characters (`openssl rand -hex 32` gives 64).
pub const MASTER_KEY_MIN_CHARS: usize = 32;

/// Words that mark a value copied from an example rather than generated: the examples in
/// this repository (`.env.example`, `deploy/kubernetes/secret.example.yaml`) say "change me".
const PLACEHOLDER_WORDS: &[&str] = &["changeme", "replaceme", "placeholder", "example"];

fn master_key(arg: Option<Secret>) -> Result<Secret, ConfigError> {
    let key = arg
        .filter(|k| !k.expose().is_empty())
        .ok_or_else(|| invalid(MASTER_KEY.named, "is required"))?;
    generated(MASTER_KEY.named, key)
}

/// A credential that looks generated: long enough, and no placeholder copied from an example.
fn generated(flag: &'static str, key: Secret) -> Result<Secret, ConfigError> {
    // Compared without case or punctuation, so `sk-master-CHANGE_ME` is caught too.
    let folded: String = key
        .expose()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if PLACEHOLDER_WORDS.iter().any(|w| folded.contains(w)) {
        return Err(invalid(
            flag,
            "is a placeholder from an example; generate one, e.g. `openssl rand -hex 32`",
        ));
    }
    let chars = key.expose().chars().count();
    if chars < MASTER_KEY_MIN_CHARS {
        return Err(invalid(
            flag,
            format!(
                "is {chars} characters long; use at least {MASTER_KEY_MIN_CHARS}, e.g. `openssl rand -hex 32`"
            ),
        ));
    }
    Ok(key)
}

/// The internal API's credential, from the variable or the file (one of them, not both).
/// It travels in an HTTP header, so it must be visible ASCII.
fn internal_token(value: Option<Secret>, file: Option<&str>) -> Result<Secret, ConfigError> {
    let value = value.filter(|v| !v.expose().is_empty());
    let file = file.map(str::trim).filter(|f| !f.is_empty());
    let (flag, token) = match (value, file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                INTERNAL_TOKEN_FILE.named,
                "set either the token or its file, not both",
            ))
        }
        (Some(token), None) => (INTERNAL_TOKEN.named, token),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(INTERNAL_TOKEN_FILE.named, format!("cannot read {path}: {e}"))
            })?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            (INTERNAL_TOKEN_FILE.named, Secret::new(text))
        }
        (None, None) => {
            return Err(invalid(
                INTERNAL_TOKEN.named,
                format!(
                    "is required (or {}): the filter's credential for the internal API; generate one, e.g. `openssl rand -hex 32`",
                    INTERNAL_TOKEN_FILE.bare
                ),
            ))
        }
    };
    if !token.expose().bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            flag,
            "must be visible ASCII without spaces (it is sent as a header)",
        ));
    }
    generated(flag, token)
}
