//! One rate-limit window as a control plane knows it: whose it is, what it counts, the
//! row as last seen and what was counted since.

use livegate_contract::rate_limit::{LEASE_MS, PARALLEL_LEASE_MS, WINDOW_MS};
use livegate_contract::{BudgetScope, LimitKind, RateLimited, WindowLog};

use crate::model::keys::KeyHash;
use crate::model::KeyRecord;

/// One window: whose it is, what it counts, and its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The row's name: `key:<hash>:rpm`, `user:<id>:rpm`, `team:<id>:tpm`.
    pub name: String,
    pub kind: LimitKind,
    pub owner: BudgetScope,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    /// A per-model limit's model, as configured.
    pub model: Option<String>,
    pub limit: u64,
}

impl Scope {
    fn of_key(token: &KeyHash, kind: LimitKind, limit: u64) -> Scope {
        Scope {
            name: format!("key:{}:{}", token.as_str(), suffix(kind)),
            kind,
            owner: BudgetScope::Key,
            team_id: None,
            user_id: None,
            model: None,
            limit,
        }
    }

    /// A key's limit for one model: `model:key:<model>:<hash>:rpm`. The model is escaped
    /// (`%`, `:`), so no two (model, owner) pairs share a row, nor any with another scope.
    fn of_key_model(token: &KeyHash, model: &str, kind: LimitKind, limit: u64) -> Scope {
        Scope {
            name: format!(
                "model:key:{}:{}:{}",
                escaped(model),
                token.as_str(),
                suffix(kind)
            ),
            model: Some(model.to_owned()),
            ..Scope::of_key(token, kind, limit)
        }
    }

    /// A team's limit for one model: `model:team:<model>:<team_id>:tpm`.
    fn of_team_model(team_id: &str, model: &str, kind: LimitKind, limit: u64) -> Scope {
        Scope {
            name: format!("model:team:{}:{team_id}:{}", escaped(model), suffix(kind)),
            model: Some(model.to_owned()),
            ..Scope::of_team(team_id, kind, limit)
        }
    }

    fn of_user(user_id: &str, kind: LimitKind, limit: u64) -> Scope {
        Scope {
            name: format!("user:{user_id}:{}", suffix(kind)),
            kind,
            owner: BudgetScope::User,
            team_id: None,
            user_id: Some(user_id.to_owned()),
            model: None,
            limit,
        }
    }

    fn of_team(team_id: &str, kind: LimitKind, limit: u64) -> Scope {
        Scope {
            name: format!("team:{team_id}:{}", suffix(kind)),
            kind,
            owner: BudgetScope::Team,
            team_id: Some(team_id.to_owned()),
            user_id: None,
            model: None,
            limit,
        }
    }

    /// How long what is counted in this window counts.
    pub(super) fn span_ms(&self) -> u64 {
        match self.kind {
            LimitKind::Parallel => PARALLEL_LEASE_MS,
            LimitKind::Requests | LimitKind::Tokens => WINDOW_MS,
        }
    }

    /// The row of a parallel limit's finished requests (each counted at its start, so a
    /// start and its end leave the lease window together).
    pub(super) fn finished_name(&self) -> String {
        format!("{}-done", self.name)
    }

    pub(super) fn refusal(&self, reset_at_ms: u64) -> RateLimited {
        RateLimited {
            kind: self.kind,
            scope: self.owner,
            team_id: self.team_id.clone(),
            user_id: self.user_id.clone(),
            model: self.model.clone(),
            limit: self.limit,
            reset_at_ms,
        }
    }
}

fn suffix(kind: LimitKind) -> &'static str {
    match kind {
        LimitKind::Requests => "rpm",
        LimitKind::Tokens => "tpm",
        LimitKind::Parallel => "parallel",
    }
}

/// The windows a request of this key is counted in, teams first, then users (a team's or
/// a user's limit is shared by its keys, so it is the one most often full).
pub fn scopes(record: &KeyRecord, kind: LimitKind) -> Vec<Scope> {
    let team = record
        .team_id
        .as_deref()
        .zip(record.team.limits.of(kind))
        .map(|(team, limit)| Scope::of_team(team, kind, limit));
    let user = record
        .user_id
        .as_deref()
        .zip(record.user.limits.of(kind))
        .map(|(user, limit)| Scope::of_user(user, kind, limit));
    let key = record
        .limits
        .of(kind)
        .map(|limit| Scope::of_key(&record.token, kind, limit));
    team.into_iter().chain(user).chain(key).collect()
}

/// A model name in a window's row name: `%` and `:` escaped, so the name splits one way.
fn escaped(model: &str) -> String {
    model.replace('%', "%25").replace(':', "%3A")
}

/// The windows of `model` (the model the request resolved to) a request of this key is
/// counted in: its team's entries that name the model, then its own (`model_rpm_limit`,
/// `model_tpm_limit`; [`livegate_contract::same_model`]).
pub fn model_scopes(record: &KeyRecord, model: &str, kind: LimitKind) -> Vec<Scope> {
    let team = record.team_id.as_deref().into_iter().flat_map(|team| {
        let entries = record.team.model_limits.matching(kind, model);
        entries
            .into_iter()
            .map(move |(name, limit)| Scope::of_team_model(team, &name, kind, limit))
    });
    let key = record
        .model_limits
        .matching(kind, model)
        .into_iter()
        .map(|(name, limit)| Scope::of_key_model(&record.token, &name, kind, limit));
    team.chain(key).collect()
}

/// The most admissions one lease reserves by default (`--rate-limit-max-lease`): a
/// replica ramps up to it by doubling what it served from its last lease.
pub const MAX_LEASE: u64 = 2048;

/// Admissions this replica reserved in the row and serves without a round trip until
/// `until` (the reservation's stamp: it leaves the window after the last one served).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub until: u64,
    pub left: u64,
    pub served: u64,
}

/// What one replica knows of one window.
#[derive(Debug, Clone)]
pub struct ScopeWindow {
    /// The row as this replica last read or wrote it, and its version (0: no row seen).
    shared: WindowLog,
    pub(super) version: i64,
    /// Counted here and not yet in the row.
    pending: WindowLog,
    /// Unused rests of ended leases, `(stamp, amount)`, to take off the row with the next
    /// write. Forgotten if that write's fate is unknown: a rest taken off twice would
    /// let the fleet admit it twice, a rest never taken off only holds it a window longer.
    returns: Vec<(u64, u64)>,
    lease: Option<Lease>,
    /// How many the last ended lease served: the next one asks for twice that.
    last_served: u64,
    /// When the row was last read or written, Unix milliseconds.
    synced_at: Option<u64>,
}

impl Default for ScopeWindow {
    fn default() -> ScopeWindow {
        ScopeWindow::spanning(WINDOW_MS)
    }
}

impl ScopeWindow {
    /// A window whose entries count for `span_ms`.
    pub fn spanning(span_ms: u64) -> ScopeWindow {
        ScopeWindow {
            shared: WindowLog::spanning(span_ms),
            version: 0,
            pending: WindowLog::spanning(span_ms),
            returns: Vec::new(),
            lease: None,
            last_served: 0,
            synced_at: None,
        }
    }

    /// The row as known plus what is pending, less the unused rests of leases: never more
    /// than the truth.
    pub fn known(&self, now: u64) -> WindowLog {
        let mut known = self.shared.clone();
        known.merge(&self.pending, now);
        for &(stamp, amount) in &self.returns {
            known.release(stamp, amount, now);
        }
        known
    }

    /// Serves one admission from the live lease, if it has one left.
    pub fn take_leased(&mut self, now: u64) -> bool {
        match &mut self.lease {
            Some(lease) if now <= lease.until && lease.left > 0 => {
                lease.left -= 1;
                lease.served += 1;
                true
            }
            _ => false,
        }
    }

    /// Whether a live lease still holds an admission for this replica.
    pub fn has_leased(&self, now: u64) -> bool {
        self.lease
            .is_some_and(|lease| now <= lease.until && lease.left > 0)
    }

    /// Ends the lease if its term is over (or `always`): its unused rest is to be given
    /// back with the next write.
    pub fn end_lease(&mut self, now: u64, always: bool) {
        let Some(lease) = self.lease else {
            return;
        };
        if !always && now <= lease.until && lease.left > 0 {
            return;
        }
        self.lease = None;
        self.last_served = lease.served;
        if lease.left > 0 {
            self.returns.push((lease.until, lease.left));
        }
    }

    /// How many admissions the next lease asks for: twice what the last one served, so a
    /// busy key ramps up in a few leases and a quiet one asks for one at a time.
    pub fn lease_size(&self, max_lease: u64) -> u64 {
        self.last_served
            .saturating_mul(2)
            .clamp(1, max_lease.max(1))
    }

    /// The window to write to reserve a lease of at most `max_lease` (the first admission
    /// is this request's), and how many it holds; or when the window has room again.
    pub fn plan_lease(
        &self,
        now: u64,
        limit: u64,
        max_lease: u64,
    ) -> Result<(WindowLog, u64), u64> {
        let mut known = self.known(now);
        let granted = known.reserve(now, limit, self.lease_size(max_lease))?;
        Ok((known, granted))
    }

    /// The lease was written: serve `granted - 1` more until its term ends.
    pub fn start_lease(&mut self, now: u64, granted: u64) {
        self.lease = Some(Lease {
            until: now.saturating_add(LEASE_MS),
            left: granted.saturating_sub(1),
            served: 1,
        });
    }

    /// The live lease's admissions left and the end of its term, if it has any.
    pub fn spare_lease(&self, now: u64) -> Option<(u64, u64)> {
        self.lease
            .filter(|lease| now <= lease.until && lease.left > 0)
            .map(|lease| (lease.left, lease.until))
    }

    /// `admissions` of the live lease go to a filter: served, as far as this replica knows.
    pub fn give_away(&mut self, admissions: u64) {
        if let Some(lease) = &mut self.lease {
            let given = admissions.min(lease.left);
            lease.left -= given;
            lease.served = lease.served.saturating_add(given);
        }
    }

    /// The write carrying the returns has an unknown fate: never give them back twice.
    pub fn forget_returns(&mut self) {
        self.returns.clear();
    }

    /// The window to write if one more request is admitted, or when it has room again.
    pub fn plan_admit(&self, now: u64, limit: u64) -> Result<WindowLog, u64> {
        let mut known = self.known(now);
        known.admit(now, limit).map(|_| known)
    }

    /// The row was written as `written`: it is now what this replica knows.
    pub fn swapped(&mut self, written: WindowLog, version: i64, now: u64) {
        self.pending = WindowLog::spanning(written.span_ms());
        self.returns.clear();
        self.shared = written;
        self.version = version;
        self.synced_at = Some(now);
    }

    /// Another replica wrote the row first: take its window, keep what is pending here.
    pub fn current(&mut self, window: WindowLog, version: i64, now: u64) {
        // Read with this window's span whatever the row said (a row emptied by a Postgres
        // crash comes back as a fresh log of the default span).
        let mut shared = WindowLog::spanning(self.pending.span_ms());
        shared.merge(&window, now);
        self.shared = shared;
        self.version = version;
        self.synced_at = Some(now);
    }

    /// Counts `amount` here, to be written with the next swap.
    pub fn count(&mut self, at: u64, amount: u64, now: u64) {
        self.pending.add(at, amount, now);
    }

    pub fn is_stale(&self, now: u64, max_age_ms: u64) -> bool {
        self.synced_at
            .is_none_or(|at| now.saturating_sub(at) >= max_age_ms)
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty() || !self.returns.is_empty()
    }

    /// Nothing counted in the last window and nothing to write: the entry can go.
    pub(super) fn is_idle(&mut self, now: u64) -> bool {
        self.known(now).total(now) == 0
            && self.lease.is_none()
            && !self.has_pending()
            && self.synced_at.is_some_and(|at| at + 2 * WINDOW_MS <= now)
    }
}
