//! Every operation the engine serves, declared once: its request fields and its reply type.
//!
//! Adding an operation is one entry here, one arm in `engine::serve` (the compiler asks for
//! it: the match has no catch-all), and, for callers' convenience, a `Db` method calling
//! `Db::run`. The table writes the request struct, its [`Op`] impl and its [`Request`]
//! variant, so a request and its reply cannot drift apart.

use serde::{Deserialize, Serialize};

use super::{
    BudgetsReset, DeadLetter, EngineSettings, Op, Ready, SpendFilter, SpendGroup, SpendInserted,
    TeamAndKeys, TeamList, WindowSwap,
};
use crate::model::keys::KeyHash;
use crate::model::LedgerEntry;
use crate::model::{
    KeyChange, KeyFilter, KeyPage, KeyPatch, KeyRecord, MemberPatch, MemberRef, MemberWrite,
    Membership, NewMember, TeamPatch, TeamRecord, TeamWrite, TeamsDeleted, UserAndKeys, UserPage,
    UserPatch, UserRecord, UserWrite, UsersDeleted,
};
use livegate_contract::WindowLog;

/// Writes, for each `Name { fields } -> Reply;`, the struct `Name`, its `Op` impl (the
/// reply type, the wire name `"Name"`) and the variant `Request::Name(Name)`.
macro_rules! ops {
    ($(
        $(#[$meta:meta])*
        $name:ident { $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)? } -> $reply:ty;
    )*) => {
        $(
            $(#[$meta])*
            #[derive(Debug, Clone, Serialize, Deserialize)]
            pub struct $name { $( $(#[$fmeta])* pub $field: $ty, )* }

            impl Op for $name {
                type Reply = $reply;
                const NAME: &'static str = stringify!($name);
                fn into_request(self) -> Request {
                    Request::$name(self)
                }
            }
        )*

        /// What the supervisor asks of the engine, on the wire `{"op": "GetKey", …fields}`.
        // A request is built once per call and encoded at once, never kept in bulk: boxing
        // the largest (a key record with its team's and user's policies) would buy nothing.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(tag = "op")]
        pub enum Request {
            $( $name($name), )*
        }

        impl Request {
            /// Every operation's name, in the table's order.
            pub const NAMES: &'static [&'static str] = &[$( stringify!($name), )*];

            /// The operation's name, as its reply carries it.
            pub fn name(&self) -> &'static str {
                match self {
                    $( Request::$name(_) => $name::NAME, )*
                }
            }
        }
    };
}

ops! {
    /// First frame: connect the pool and migrate the schema, then answer `Ready`.
    Init { settings: EngineSettings } -> Ready;
    /// The watchdog's heartbeat: `SELECT 1`.
    Ping {} -> ();
    GetKey { token: KeyHash } -> Option<KeyRecord>;
    /// Inserts the key; answers it as stored (its version, its team's policy).
    InsertKey { record: KeyRecord } -> KeyRecord;
    ListKeys { filter: KeyFilter } -> KeyPage;
    UpdateKey { token: KeyHash, patch: KeyPatch } -> Option<KeyRecord>;
    /// Moves the key under `old` to the secret `new` with the patch applied; `old` stays a
    /// grace alias until `revoke_at` (`None`: revoked at once). `None`: no such key.
    RegenerateKey {
        old: KeyHash,
        new: KeyHash,
        new_name: String,
        revoke_at: Option<chrono::DateTime<chrono::Utc>>,
        patch: KeyPatch,
    } -> Option<KeyRecord>;
    /// Logs a tombstone for each old secret whose grace has ended; answers how many.
    EndGraces {} -> u64;
    /// When the last of the key's old secrets in grace stops working.
    GraceEnd { token: KeyHash } -> Option<chrono::DateTime<chrono::Utc>>;
    /// Answers each deleted key's hash with the change number of its tombstone.
    DeleteKeys { tokens: Vec<KeyHash>, aliases: Vec<String> } -> Vec<(KeyHash, i64)>;
    /// The change log after `after`, and its last `recent_ms` again (see `engine::queries`).
    ChangesSince { after: i64, recent_ms: i64, limit: i64 } -> Vec<KeyChange>;
    /// The highest change number.
    LastChange {} -> i64;
    /// Drops change-log rows older than `keep_ms`; answers how many.
    PruneChanges { keep_ms: i64 } -> u64;
    InsertTeam { team: TeamRecord } -> TeamRecord;
    /// The team, and its keys when `with_keys`.
    GetTeam { team_id: String, with_keys: bool } -> Option<TeamAndKeys>;
    ListTeams { page: u32, size: u32 } -> TeamList;
    /// Updates the team and logs a change for each of its keys whose policy changed.
    UpdateTeam { team_id: String, patch: TeamPatch } -> Option<TeamWrite>;
    /// Deletes the teams and their keys, with a tombstone for each key.
    DeleteTeams { team_ids: Vec<String> } -> TeamsDeleted;
    /// Inserts the user; answers it with the keys already naming it that take its policy.
    InsertUser { user: UserRecord } -> UserWrite;
    /// The user and its keys.
    GetUser { user_id: String } -> Option<UserAndKeys>;
    /// One page of users (newest first), filtered by role and ids, with their key counts.
    ListUsers {
        page: u32,
        size: u32,
        role: Option<String>,
        user_ids: Option<Vec<String>>,
    } -> UserPage;
    /// Updates the user and logs a change for each of its keys whose policy changed.
    UpdateUser { user_id: String, patch: UserPatch } -> Option<UserWrite>;
    /// Deletes the users and their keys, with a tombstone for each key.
    DeleteUsers { user_ids: Vec<String> } -> UsersDeleted;
    /// Adds the member to the team (creating its user if needed) and logs its keys in the
    /// team when it has a budget there; `None`: no such team.
    AddMember { team_id: String, member: NewMember } -> Option<MemberWrite>;
    /// Changes a member's role or budget in the team; `None`: no such member.
    UpdateMember { team_id: String, who: MemberRef, patch: MemberPatch } -> Option<MemberWrite>;
    /// Removes a member from the team; `None`: no such member.
    DeleteMember { team_id: String, who: MemberRef } -> Option<MemberWrite>;
    /// The team's members with their budgets and spend in the team.
    TeamMembers { team_id: String } -> Vec<Membership>;
    /// The teams a user is a member of.
    UserTeams { user_id: String } -> Vec<TeamRecord>;
    /// The drain's one statement: inserts the rows whose request id is new and adds only
    /// their cost to their key's and team's `spend` (no version, no change logged).
    InsertSpend {
        rows: Vec<LedgerEntry>,
        /// The identity of the database the rows belong to: an engine connected to
        /// another refuses (`None`: any).
        #[serde(default)]
        database: Option<String>,
    } -> SpendInserted;
    /// Records the drain cannot write (or read), kept in `livegate_spend_dead_letters`
    /// instead of blocking the rows behind them; a letter already there is left as it is.
    /// Answers the letters written.
    DeadLetterSpend {
        letters: Vec<DeadLetter>,
        #[serde(default)]
        database: Option<String>,
    } -> u64;
    /// Rows of `livegate_spend_logs`, newest first.
    SpendLogs { filter: SpendFilter } -> Vec<LedgerEntry>;
    /// Spend per UTC day, key and model within the filter's dates.
    SpendSummary { filter: SpendFilter } -> Vec<SpendGroup>;
    /// The sum of every row's cost.
    GlobalSpend {} -> f64;
    /// A key's drained spend for one model (case and surrounding whitespace aside) in the
    /// requests that started at or after `since` (a `model_max_budget` period).
    KeyModelSpend { token: KeyHash, model: String, since: chrono::DateTime<chrono::Utc> } -> f64;
    /// Budgets whose `budget_reset_at` is at or before `now`: spend back to 0, the next
    /// reset at `now + budget_duration`, and a change logged for each key concerned.
    ResetBudgets { now: chrono::DateTime<chrono::Utc> } -> BudgetsReset;
    /// Compare and swap of one rate-limit window: writes `window` if the row's version is
    /// still `expected` (0: no row yet), else answers the row as it is.
    SwapRateWindow { scope: String, expected: i64, window: WindowLog } -> WindowSwap;
}
