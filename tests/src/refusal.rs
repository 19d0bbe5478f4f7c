//! The gateway's 429 for a rate limit, as an OpenAI client and a LiteLLM user read it:
//! checked in one place for every test that floods a key (its own limits or per model).

use crate::http::Response;

/// What a checked 429 said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// `retry-after`, in seconds.
    pub retry_after: u64,
    /// LiteLLM's message.
    pub message: String,
}

/// Whether `r` is the 429 of the limit `field` (`rpm_limit`, `model_tpm_limit`, …) of
/// `kind` (`requests` or `tokens`) stating `limit`: LiteLLM's error naming the field,
/// nothing of the upstream's, OpenAI's `x-ratelimit-*` headers, and a `retry-after` of at
/// most a window and one lease term (a control plane's lease of admissions is counted at
/// the end of its term: docs/operations.md, "Rate limits"). What is wrong, if anything.
pub fn rate_limited(r: &Response, kind: &str, field: &str, limit: u64) -> Result<Limited, String> {
    let wrong = |what: &str| Err(format!("{what}: {} {:?} {}", r.status, r.headers, r.body));
    if r.status != 429 {
        return wrong("not a 429");
    }
    let Ok(body) = r.json() else {
        return wrong("not JSON");
    };
    let e = &body["error"];
    if e["type"] != "rate_limit_error" || e["code"] != "429" || e["param"] != field {
        return wrong(&format!("not LiteLLM's rate_limit_error for {field}"));
    }
    let message = e["message"].as_str().unwrap_or_default().to_owned();
    if !message.contains(field) || body.get("choices").is_some() {
        return wrong("a message not naming the field, or the upstream's answer");
    }
    let header = |name: &str| r.header(name).unwrap_or_default().to_owned();
    if header(&format!("x-ratelimit-limit-{kind}")) != limit.to_string()
        || header(&format!("x-ratelimit-remaining-{kind}")) != "0"
        || header(&format!("x-ratelimit-reset-{kind}")).is_empty()
    {
        return wrong(&format!(
            "not OpenAI's x-ratelimit-*-{kind} for a limit of {limit}"
        ));
    }
    match header("retry-after").parse::<u64>() {
        Ok(retry_after) if (1..=61).contains(&retry_after) => Ok(Limited {
            retry_after,
            message,
        }),
        _ => wrong("retry-after not 1 to 61 s"),
    }
}
