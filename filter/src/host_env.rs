//! What the filter takes from its VM's environment instead of its configuration: secrets.
//!
//! Envoy hands the VM only the variables named in `vm_config.environment_variables.
//! host_env_keys`, read from Envoy's own environment (a Kubernetes Secret, compose's env),
//! so their values never appear in Envoy's configuration, a ConfigMap or `config_dump`.

use std::fmt;

use livegate_contract::headers::INTERNAL_TOKEN_ENV;

/// The variable holding the `authorization` value sent upstream (the provider's credential).
pub const UPSTREAM_AUTHORIZATION_ENV: &str = "LIVEGATE_UPSTREAM_AUTHORIZATION";

/// The shortest internal token accepted, as the control plane demands.
pub const MIN_TOKEN_CHARS: usize = 32;

/// A value never printed: `Debug` shows `<redacted>`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, where it is sent; never to log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why the environment cannot configure the filter; the text names the variable, never
/// its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("{INTERNAL_TOKEN_ENV} is not set in the VM: list it under vm_config.environment_variables.host_env_keys and set it in Envoy's environment (the control plane refuses every internal call without it)")]
    MissingToken,
    #[error("{INTERNAL_TOKEN_ENV} must be at least {MIN_TOKEN_CHARS} visible ASCII characters without spaces")]
    UnusableToken,
    #[error("{UPSTREAM_AUTHORIZATION_ENV} must be visible ASCII (spaces allowed)")]
    UnusableUpstreamAuthorization,
    #[error("upstream_authorization is set both in the configuration and in {UPSTREAM_AUTHORIZATION_ENV}: keep it in the environment (a Secret) only")]
    UpstreamAuthorizationTwice,
}

/// The secrets read from the environment (`get` reads one variable).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostEnv {
    /// Sent as `x-livegate-internal-token` on every call to the control plane.
    pub internal_token: Secret,
    /// The upstream `authorization`, when the environment carries it.
    pub upstream_authorization: Option<Secret>,
}

impl HostEnv {
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<HostEnv, EnvError> {
        let token = get(INTERNAL_TOKEN_ENV)
            .filter(|t| !t.is_empty())
            .ok_or(EnvError::MissingToken)?;
        if token.chars().count() < MIN_TOKEN_CHARS || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(EnvError::UnusableToken);
        }
        // Empty is unset: compose passes `${LIVEGATE_UPSTREAM_AUTHORIZATION:-}` either way.
        let upstream_authorization = match get(UPSTREAM_AUTHORIZATION_ENV) {
            None => None,
            Some(v) if v.is_empty() => None,
            Some(v) if v.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) => Some(Secret::new(v)),
            Some(_) => return Err(EnvError::UnusableUpstreamAuthorization),
        };
        Ok(HostEnv {
            internal_token: Secret::new(token),
            upstream_authorization,
        })
    }

    /// The upstream `authorization` to send: the environment's, or the configuration's
    /// (local stacks); both at once is refused.
    pub fn upstream_authorization(
        &self,
        configured: Option<&str>,
    ) -> Result<Option<String>, EnvError> {
        match (&self.upstream_authorization, configured) {
            (Some(_), Some(_)) => Err(EnvError::UpstreamAuthorizationTwice),
            (Some(env), None) => Ok(Some(env.expose().to_owned())),
            (None, configured) => Ok(configured.map(str::to_owned)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "internal-test-0123456789abcdef0123456789abcdef";

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn the_internal_token_is_required_and_must_look_generated() {
        assert_eq!(HostEnv::read(env(&[])), Err(EnvError::MissingToken));
        let empty = HostEnv::read(env(&[(INTERNAL_TOKEN_ENV, "")]));
        assert_eq!(empty, Err(EnvError::MissingToken));
        let short = HostEnv::read(env(&[(INTERNAL_TOKEN_ENV, "short")]));
        assert_eq!(short, Err(EnvError::UnusableToken));
        let spaced = HostEnv::read(env(&[(
            INTERNAL_TOKEN_ENV,
            "0123456789abcdef 0123456789abcdef",
        )]));
        assert_eq!(spaced, Err(EnvError::UnusableToken));
        let ok = HostEnv::read(env(&[(INTERNAL_TOKEN_ENV, TOKEN)])).unwrap();
        assert_eq!(ok.internal_token.expose(), TOKEN);
        assert_eq!(ok.upstream_authorization, None);
    }

    #[test]
    fn errors_and_debug_never_show_a_value() {
        let ok = HostEnv::read(env(&[
            (INTERNAL_TOKEN_ENV, TOKEN),
            (UPSTREAM_AUTHORIZATION_ENV, "Bearer sk-provider-secret"),
        ]))
        .unwrap();
        let shown = format!("{ok:?}");
        assert!(
            !shown.contains(TOKEN) && !shown.contains("sk-provider"),
            "{shown}"
        );
        let short = HostEnv::read(env(&[(INTERNAL_TOKEN_ENV, "sk-short")])).unwrap_err();
        assert!(!short.to_string().contains("sk-short"));
    }

    #[test]
    fn the_upstream_credential_comes_from_the_environment_or_the_configuration_never_both() {
        let from_env = HostEnv::read(env(&[
            (INTERNAL_TOKEN_ENV, TOKEN),
            (UPSTREAM_AUTHORIZATION_ENV, "Bearer sk-provider"),
        ]))
        .unwrap();
        assert_eq!(
            from_env.upstream_authorization(None),
            Ok(Some("Bearer sk-provider".to_owned()))
        );
        assert_eq!(
            from_env.upstream_authorization(Some("Bearer x")),
            Err(EnvError::UpstreamAuthorizationTwice)
        );
        let without = HostEnv::read(env(&[(INTERNAL_TOKEN_ENV, TOKEN)])).unwrap();
        assert_eq!(
            without.upstream_authorization(Some("Bearer x")),
            Ok(Some("Bearer x".to_owned()))
        );
        let bad = HostEnv::read(env(&[
            (INTERNAL_TOKEN_ENV, TOKEN),
            (UPSTREAM_AUTHORIZATION_ENV, "Bearer\nx"),
        ]));
        assert_eq!(bad, Err(EnvError::UnusableUpstreamAuthorization));
        let empty = HostEnv::read(env(&[
            (INTERNAL_TOKEN_ENV, TOKEN),
            (UPSTREAM_AUTHORIZATION_ENV, ""),
        ]));
        assert_eq!(empty.unwrap().upstream_authorization, None);
    }
}
