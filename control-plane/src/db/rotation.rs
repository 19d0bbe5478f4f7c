//! The `Db` handle's calls for key rotation (`engine::rotation_queries` serves them).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Db, DbError};
use crate::model::keys::KeyHash;
use crate::model::{KeyPatch, KeyRecord};
use crate::protocol::{EndGraces, GraceEnd, RegenerateKey};

/// A regenerate, as the engine needs it.
#[derive(Debug, Clone)]
pub struct Regenerate {
    pub old: KeyHash,
    pub new: KeyHash,
    pub new_name: String,
    /// When the old secret stops working; `None`: at once.
    pub revoke_at: Option<DateTime<Utc>>,
    pub patch: KeyPatch,
}

impl Db {
    /// Moves a key to its new secret; `None`: no key under the old one.
    pub async fn regenerate_key(&self, r: Regenerate) -> Result<Option<KeyRecord>, DbError> {
        self.run(RegenerateKey {
            old: r.old,
            new: r.new,
            new_name: r.new_name,
            revoke_at: r.revoke_at,
            patch: r.patch,
        })
        .await
    }

    /// Logs the tombstones of old secrets whose grace has ended.
    pub async fn end_graces(&self, deadline: Duration) -> Result<u64, DbError> {
        self.run_within(EndGraces {}, deadline).await
    }

    /// When the last of the key's old secrets in grace stops working.
    pub async fn grace_end(&self, token: &KeyHash) -> Result<Option<DateTime<Utc>>, DbError> {
        let token = token.clone();
        self.run(GraceEnd { token }).await
    }
}
