//! The contract between livegate's filter and its control plane: one definition of each
//! thing both sides must agree on, so the two halves cannot drift apart.
//!
//! - [`bounded`]: the size-bounded map both halves keep their per-key tables in.
//! - [`key`]: the client's API key, how it is found in headers, and how it is hashed.
//! - [`auth_check`]: `POST /v1/auth/check`, its answers and the reasons for a refusal.
//! - [`change_feed`]: `GET /v1/auth/changes`, how revocations reach the filter.
//! - [`error`]: the one JSON error body and its `type` vocabulary.
//! - [`models`]: which models a key may call, and how a refusal reads.
//! - [`headers`]: the headers the filter reads and the identity headers it sets upstream.
//! - [`refusal`]: why a key is refused ([`DenyReason`]) and whose budget ([`BudgetScope`]).
//! - [`rate_limit`]: the sliding window both halves count rate limits with, and a 429.
//! - [`deployment`]: a model's deployment at a provider, as the filter routes to it.
//! - `model_list` (feature `model-list`): LiteLLM's `config.yaml` model list, parsed.
//! - [`spend`]: `POST /v1/spend/records`, the per-request record the spend ledger is built from.

pub mod auth_check;
pub mod bounded;
pub mod change_feed;
pub mod deployment;
pub mod error;
pub mod headers;
pub mod key;
#[cfg(feature = "model-list")]
pub mod model_list;
pub mod models;
pub mod rate_limit;
pub mod refusal;
pub mod spend;

pub use auth_check::{
    Allow, AuthCheckResponse, Budget, BudgetScope, DenyReason, ModelBudgetOf, UnavailableReason,
    AUTH_CHECK_PATH,
};
pub use change_feed::{ChangeFeed, KeyChange, KeyStatus, CHANGES_PATH};
pub use error::{ErrorBody, ErrorObject, ErrorType};
pub use key::{ApiKey, CredentialError, KeyHash, MAX_KEY_LEN};
pub use models::{ModelAccess, ModelDenied};
pub use rate_limit::{
    model_entry, same_model, AdmissionLease, LimitKind, ModelLimits, RateLimited, RateLimits,
    WindowLog,
};
pub use spend::{EstimateReason, SpendAck, SpendBatch, SpendRecord, SPEND_RECORDS_PATH};
