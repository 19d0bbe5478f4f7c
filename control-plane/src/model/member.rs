//! Team memberships: a user's role in a team and its budget there (LiteLLM's
//! `members_with_roles` and `team_memberships`), and the changes callers ask for.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::key::KeyRecord;

/// A member's role in a team: `admin` manages the team's keys and members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    Admin,
    User,
}

impl MemberRole {
    pub fn parse(text: &str) -> Option<MemberRole> {
        match text {
            "admin" => Some(MemberRole::Admin),
            "user" => Some(MemberRole::User),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Admin => "admin",
            MemberRole::User => "user",
        }
    }
}

/// One membership as stored, with the member's email.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Membership {
    pub team_id: String,
    pub user_id: String,
    pub user_email: Option<String>,
    pub role: MemberRole,
    pub max_budget_in_team: Option<f64>,
    /// What the user's keys in this team have spent (drained).
    pub spend: f64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Who a member is: a user id, else an email (the user it names, created if none does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MemberRef {
    UserId(String),
    Email(String),
}

/// A member to add: who (`new_user_id` is the id a user created for an email takes; an
/// id that names no user creates that user), its role and its budget in the team.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewMember {
    pub who: MemberRef,
    pub user_email: Option<String>,
    pub new_user_id: String,
    pub role: MemberRole,
    pub max_budget_in_team: Option<f64>,
}

/// A membership's change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberPatch {
    pub role: Option<MemberRole>,
    pub max_budget_in_team: Option<f64>,
}

/// A membership after a write (added, changed or removed), and the new state of each of
/// the member's keys in the team whose policy the write changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberWrite {
    pub member: Membership,
    pub keys: Vec<KeyRecord>,
}
