#![allow(clippy::unwrap_used)] // a test module: failures are panics

use super::*;
use crate::key_cache::tests::record;
use livegate_contract::rate_limit::{
    FILTER_LEASE_MARGIN_MS, LEASE_MS, PARALLEL_LEASE_MS, WINDOW_MS,
};
use livegate_contract::BudgetScope;
use std::time::Duration;

const T0: u64 = 1_800_000_000_000;

/// The row in Postgres, as the engine's compare and swap treats it.
#[derive(Default)]
struct Row {
    window: WindowLog,
    version: i64,
}

impl Row {
    fn swap(&mut self, expected: i64, window: WindowLog) -> WindowSwap {
        if expected == self.version {
            self.window = window;
            self.version += 1;
            WindowSwap::Swapped {
                version: self.version,
            }
        } else {
            WindowSwap::Current {
                window: self.window.clone(),
                version: self.version,
            }
        }
    }
}

/// One admission as `Limiter::admit_one` makes it while the database answers.
fn admit(w: &mut ScopeWindow, row: &mut Row, now: u64, limit: u64) -> bool {
    loop {
        let Ok(planned) = w.plan_admit(now, limit) else {
            return false;
        };
        match row.swap(w.version, planned.clone()) {
            WindowSwap::Swapped { version } => {
                w.swapped(planned, version, now);
                return true;
            }
            WindowSwap::Current { window, version } => w.current(window, version, now),
        }
    }
}

/// One admission as `Limiter::admit_leased` makes it while the database answers.
fn admit_leased(w: &mut ScopeWindow, row: &mut Row, now: u64, limit: u64) -> bool {
    if w.take_leased(now) {
        return true;
    }
    w.end_lease(now, false);
    loop {
        let Ok((planned, granted)) = w.plan_lease(now, limit, MAX_LEASE) else {
            return false;
        };
        match row.swap(w.version, planned.clone()) {
            WindowSwap::Swapped { version } => {
                w.swapped(planned, version, now);
                w.start_lease(now, granted);
                return true;
            }
            WindowSwap::Current { window, version } => w.current(window, version, now),
        }
    }
}

/// What `Limiter::flush` writes for a window: its pending counts and returned rests.
fn flush(w: &mut ScopeWindow, row: &mut Row, now: u64, end_all: bool) {
    w.end_lease(now, end_all);
    while w.has_pending() {
        let planned = w.known(now);
        match row.swap(w.version, planned.clone()) {
            WindowSwap::Swapped { version } => w.swapped(planned, version, now),
            WindowSwap::Current { window, version } => w.current(window, version, now),
        }
    }
}

#[test]
fn replicas_admitting_from_leases_admit_the_limit_and_no_more() {
    let mut row = Row::default();
    let (mut a, mut b) = (ScopeWindow::default(), ScopeWindow::default());
    let (mut admitted, mut writes) = (0, 0);
    for i in 0..400 {
        // Bursts: a serves ten in a row, then b one, then a again.
        let w = if i % 11 == 10 { &mut b } else { &mut a };
        let version = row.version;
        admitted += u32::from(admit_leased(w, &mut row, T0 + i, 100));
        writes += u32::from(row.version != version);
    }
    assert_eq!(admitted, 100);
    // Leases served most admissions without a write.
    assert!(writes < 40, "{writes} writes");
}

#[test]
fn a_row_full_of_this_replicas_lease_still_admits_it() {
    let mut row = Row::default();
    let (mut a, mut b) = (ScopeWindow::default(), ScopeWindow::default());
    // a ramps up: leases of 1, 2, then 4 (one served, three left): 7 of 10 in the row.
    for i in 0..4 {
        assert!(admit_leased(&mut a, &mut row, T0 + i, 10));
    }
    assert_eq!(row.window.clone().total(T0 + 4), 7);
    // b takes the other three: the row is full.
    for i in 0..3 {
        assert!(admit_leased(&mut b, &mut row, T0 + 4 + i, 10));
    }
    assert!(!admit_leased(&mut b, &mut row, T0 + 8, 10));
    // Once a has read the row, what it knows says full; but three of its places are a's.
    a.current(row.window.clone(), row.version, T0 + 9);
    assert!(a.known(T0 + 9).room_at(T0 + 9, 10) > T0 + 9);
    assert!(a.has_leased(T0 + 9));
    for i in 0..3 {
        assert!(admit_leased(&mut a, &mut row, T0 + 9 + i, 10));
    }
    assert!(!admit_leased(&mut a, &mut row, T0 + 12, 10));
}

#[test]
fn the_unused_rest_of_a_lease_is_given_back_when_its_term_ends() {
    let mut row = Row::default();
    let (mut a, mut b) = (ScopeWindow::default(), ScopeWindow::default());
    // a ramps up to a lease of several and serves one of it.
    for i in 0..4 {
        assert!(admit_leased(&mut a, &mut row, T0 + i, 100));
    }
    let held = row.window.clone().total(T0 + 10);
    assert!(held > 4, "a holds {held}");
    // Its term (from the fourth admission) not over yet: nothing given back.
    let term_end = T0 + 3 + LEASE_MS;
    flush(&mut a, &mut row, term_end, false);
    assert_eq!(row.window.clone().total(term_end), held);
    flush(&mut a, &mut row, term_end + 1, false);
    assert_eq!(row.window.clone().total(term_end + 1), 4);
    // So b has the rest of the window.
    let admitted = (0..200)
        .filter(|i| admit_leased(&mut b, &mut row, term_end + 2 + i, 100))
        .count();
    assert_eq!(admitted, 96);
}

#[test]
fn a_lease_given_back_at_shutdown_frees_its_rest_at_once() {
    let mut row = Row::default();
    let mut a = ScopeWindow::default();
    for i in 0..4 {
        assert!(admit_leased(&mut a, &mut row, T0 + i, 100));
    }
    flush(&mut a, &mut row, T0 + 5, true);
    assert_eq!(row.window.clone().total(T0 + 5), 4);
}

#[test]
fn a_rest_whose_write_has_an_unknown_fate_is_never_given_back_twice() {
    let mut row = Row::default();
    let mut a = ScopeWindow::default();
    for i in 0..4 {
        assert!(admit_leased(&mut a, &mut row, T0 + i, 100));
    }
    let held = a.known(T0 + 5).total(T0 + 5);
    a.end_lease(T0 + 5, true);
    assert_eq!(a.known(T0 + 5).total(T0 + 5), 4);
    // The write timed out: it may have landed. What a knows counts the rest again.
    a.forget_returns();
    assert_eq!(a.known(T0 + 5).total(T0 + 5), held);
    assert!(!a.has_pending());
}

#[test]
fn two_replicas_sharing_a_row_admit_the_limit_and_no_more() {
    let mut row = Row::default();
    let (mut a, mut b) = (ScopeWindow::default(), ScopeWindow::default());
    let mut admitted = 0;
    for i in 0..100 {
        let w = if i % 3 == 0 { &mut a } else { &mut b };
        admitted += u32::from(admit(w, &mut row, T0 + i, 10));
    }
    assert_eq!(admitted, 10);
    // A full window later both have room again, and still share it.
    let later = T0 + WINDOW_MS + 100;
    let mut admitted = 0;
    for i in 0..40 {
        let w = if i % 2 == 0 { &mut a } else { &mut b };
        admitted += u32::from(admit(w, &mut row, later + i, 10));
    }
    assert_eq!(admitted, 10);
}

#[test]
fn what_a_replica_knows_refuses_without_asking() {
    let mut row = Row::default();
    let mut w = ScopeWindow::default();
    for _ in 0..3 {
        assert!(admit(&mut w, &mut row, T0, 3));
    }
    assert_eq!(w.known(T0 + 1).room_at(T0 + 1, 3), T0 + WINDOW_MS);
    assert_eq!(w.plan_admit(T0 + 1, 3), Err(T0 + WINDOW_MS));
}

#[test]
fn counts_made_without_the_database_are_written_with_the_next_swap() {
    let mut row = Row::default();
    let mut w = ScopeWindow::default();
    assert!(admit(&mut w, &mut row, T0, 5));
    // The database is away: two admitted from memory.
    w.count(T0 + 10, 1, T0 + 10);
    w.count(T0 + 20, 1, T0 + 20);
    assert!(w.has_pending());
    assert!(admit(&mut w, &mut row, T0 + 30, 5));
    assert!(!w.has_pending());
    assert_eq!(row.window.clone().total(T0 + 30), 4);
    // Another replica now sees them: only one more fits.
    let mut other = ScopeWindow::default();
    assert!(admit(&mut other, &mut row, T0 + 40, 5));
    assert!(!admit(&mut other, &mut row, T0 + 50, 5));
}

#[test]
fn a_swap_lost_to_another_replica_keeps_what_is_pending_here() {
    let mut w = ScopeWindow::default();
    w.count(T0, 7, T0);
    let mut theirs = WindowLog::new();
    theirs.add(T0 + 1, 2, T0 + 1);
    w.current(theirs, 3, T0 + 1);
    assert_eq!(w.known(T0 + 2).total(T0 + 2), 9);
    assert!(w.has_pending());
}

#[test]
fn a_token_window_is_stale_after_its_refresh_interval() {
    let mut w = ScopeWindow::default();
    assert!(w.is_stale(T0, TOKEN_REFRESH_MS));
    w.swapped(WindowLog::new(), 1, T0);
    assert!(!w.is_stale(T0 + TOKEN_REFRESH_MS - 1, TOKEN_REFRESH_MS));
    assert!(w.is_stale(T0 + TOKEN_REFRESH_MS, TOKEN_REFRESH_MS));
}

#[test]
fn a_key_is_counted_in_its_teams_window_first_then_its_own() {
    let mut r = record("team-key");
    r.team_id = Some("t1".into());
    r.limits.rpm_limit = Some(10);
    r.team.limits.rpm_limit = Some(4);
    r.limits.tpm_limit = Some(1000);
    let requests = scopes(&r, LimitKind::Requests);
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].name, "team:t1:rpm");
    assert_eq!(
        (requests[0].owner, requests[0].limit),
        (BudgetScope::Team, 4)
    );
    assert_eq!(requests[1].name, format!("key:{}:rpm", r.token.as_str()));
    let tokens = scopes(&r, LimitKind::Tokens);
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].limit, 1000);
    assert_eq!(r.limits().rpm_limit, Some(4));
    assert!(scopes(&record("plain"), LimitKind::Requests).is_empty());
}

/// The tighter of key, user and team wins, for each kind on its own; a user's window is
/// shared by its keys (named for the user, not the key) and refuses naming the user.
#[test]
fn a_key_is_counted_in_its_users_window_and_the_tightest_limit_wins() {
    let mut r = record("user-key");
    r.team_id = Some("t1".into());
    r.user_id = Some("alice".into());
    r.limits.rpm_limit = Some(10);
    r.user.limits.rpm_limit = Some(3);
    r.team.limits.rpm_limit = Some(4);
    r.limits.tpm_limit = Some(50);
    r.user.limits.tpm_limit = Some(500);
    r.user.limits.max_parallel_requests = Some(2);
    let limits = r.limits();
    assert_eq!(limits.rpm_limit, Some(3), "the user's is the tightest");
    assert_eq!(limits.tpm_limit, Some(50), "the key's is the tightest");
    assert_eq!(
        limits.max_parallel_requests,
        Some(2),
        "only the user's is set"
    );
    let names: Vec<String> = scopes(&r, LimitKind::Requests)
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(
        names,
        [
            "team:t1:rpm".to_string(),
            "user:alice:rpm".to_string(),
            format!("key:{}:rpm", r.token.as_str())
        ]
    );
    let user = &scopes(&r, LimitKind::Requests)[1];
    assert_eq!((user.owner, user.limit), (BudgetScope::User, 3));
    let refused = user.refusal(T0).error();
    assert!(
        refused
            .message
            .starts_with("Rate limit exceeded for user: alice."),
        "{}",
        refused.message
    );
    // Another key of the same user counts in the same window.
    let mut other = record("user-key-2");
    other.user_id = Some("alice".into());
    other.user.limits.rpm_limit = Some(3);
    assert_eq!(
        scopes(&other, LimitKind::Requests)[0].name,
        "user:alice:rpm"
    );
    // A key naming a user_id with no user row carries the open policy: no user window.
    let mut orphan = record("orphan");
    orphan.user_id = Some("nobody".into());
    assert!(scopes(&orphan, LimitKind::Requests).is_empty());
}

#[test]
fn an_idle_window_is_forgotten_only_after_two_windows() {
    let mut w = ScopeWindow::default();
    w.swapped(WindowLog::new(), 1, T0);
    assert!(!w.is_idle(T0 + WINDOW_MS));
    assert!(w.is_idle(T0 + 2 * WINDOW_MS));
}

#[test]
fn a_parallel_slot_frees_when_its_end_is_known_or_its_lease_runs_out() {
    let span = PARALLEL_LEASE_MS;
    let (mut started_row, mut ended_row) = (Row::default(), Row::default());
    let mut started = ScopeWindow::spanning(span);
    let mut ended = ScopeWindow::spanning(span);
    let admit_parallel = |started: &mut ScopeWindow, row: &mut Row, ended: &ScopeWindow, now| {
        let done = ended.known(now).total(now);
        admit(started, row, now, 2 + done)
    };
    assert!(admit_parallel(&mut started, &mut started_row, &ended, T0));
    assert!(admit_parallel(
        &mut started,
        &mut started_row,
        &ended,
        T0 + 10
    ));
    assert!(!admit_parallel(
        &mut started,
        &mut started_row,
        &ended,
        T0 + 20
    ));
    // The first one ends: its end is counted at its start, and a slot is free.
    ended.count(T0, 1, T0 + 30);
    assert!(admit_parallel(
        &mut started,
        &mut started_row,
        &ended,
        T0 + 40
    ));
    assert!(!admit_parallel(
        &mut started,
        &mut started_row,
        &ended,
        T0 + 50
    ));
    // Ends never reported: the lease runs out.
    let later = T0 + 40 + span + 1000;
    assert!(admit_parallel(
        &mut started,
        &mut started_row,
        &ended,
        later
    ));
    assert!(admit_parallel(
        &mut started,
        &mut started_row,
        &ended,
        later
    ));
    // Written ends reach the other replicas through their row, like starts.
    let planned = ended.known(T0 + 60);
    assert!(matches!(
        ended_row.swap(0, planned),
        WindowSwap::Swapped { .. }
    ));
    assert_eq!(ended_row.window.total(T0 + 60), 1);
}

#[test]
fn a_key_with_a_parallel_limit_has_a_window_of_starts_and_one_of_ends() {
    let mut r = record("parallel-key");
    r.limits.max_parallel_requests = Some(3);
    let parallel = scopes(&r, LimitKind::Parallel);
    assert_eq!(parallel.len(), 1);
    assert_eq!(parallel[0].span_ms(), PARALLEL_LEASE_MS);
    assert!(parallel[0].finished_name().ends_with(":parallel-done"));
    assert_eq!(r.limits().max_parallel_requests, Some(3));
}

fn limiter() -> Limiter {
    let db = crate::db::Db::fixed(None, Default::default(), Duration::from_secs(1));
    Limiter::new(db, Duration::from_secs(1))
}

/// Gives `record`'s request windows at this limiter a lease of `granted` from `now`.
async fn leased(limiter: &Limiter, record: &KeyRecord, now: u64, granted: u64) {
    for scope in scopes(record, LimitKind::Requests) {
        let window = limiter.window(&scope.name, scope.span_ms());
        window.lock().await.start_lease(now, granted);
    }
}

#[tokio::test]
async fn a_filter_is_handed_half_of_what_every_lease_has_left_ending_before_the_leases() {
    let limiter = limiter();
    let mut r = record("leased");
    r.team_id = Some("t1".into());
    r.limits.rpm_limit = Some(1000);
    r.team.limits.rpm_limit = Some(1000);
    leased(&limiter, &r, T0, 21).await;
    let lease = limiter.hand_off(&r, T0 + 100).await.unwrap();
    assert_eq!(lease.admissions, 10);
    assert_eq!(lease.valid_for_ms, LEASE_MS - 100 - FILTER_LEASE_MARGIN_MS);
    // Handed off is served: the control plane has 10 left of each lease, not 20.
    let again = limiter.hand_off(&r, T0 + 100).await.unwrap();
    assert_eq!(again.admissions, 5);
    // Too near the end of the term, nothing is handed off.
    let late = T0 + LEASE_MS - FILTER_LEASE_MARGIN_MS;
    assert_eq!(limiter.hand_off(&r, late).await, None);
}

#[tokio::test]
async fn a_key_with_token_or_parallel_limits_is_never_handed_a_lease() {
    let limiter = limiter();
    let mut r = record("tokens");
    r.limits.rpm_limit = Some(1000);
    leased(&limiter, &r, T0, 21).await;
    r.limits.tpm_limit = Some(10_000);
    assert_eq!(limiter.hand_off(&r, T0 + 1).await, None);
    r.limits.tpm_limit = None;
    r.team_id = Some("t2".into());
    r.team.limits.max_parallel_requests = Some(3);
    assert_eq!(limiter.hand_off(&r, T0 + 1).await, None);
    // Without a lease of its own (the team's window has none), nothing either.
    r.team.limits.max_parallel_requests = None;
    r.team.limits.rpm_limit = Some(10);
    assert_eq!(limiter.hand_off(&r, T0 + 1).await, None);
}

#[test]
fn a_max_lease_of_one_writes_every_admission_and_leaves_nothing_to_hand_off() {
    let mut row = Row::default();
    let mut w = ScopeWindow::default();
    for i in 0..5 {
        w.end_lease(T0 + i, false);
        let (planned, granted) = w.plan_lease(T0 + i, 100, 1).unwrap();
        assert_eq!(granted, 1);
        let WindowSwap::Swapped { version } = row.swap(w.version, planned.clone()) else {
            panic!("no other writer");
        };
        w.swapped(planned, version, T0 + i);
        w.start_lease(T0 + i, granted);
        assert_eq!(w.spare_lease(T0 + i), None);
    }
    assert_eq!(row.version, 5);
}

#[test]
fn a_model_is_counted_in_its_team_and_key_model_windows_whatever_its_spelling() {
    let mut r = record("model-key");
    r.team_id = Some("t:1".into());
    r.model_limits.model_rpm_limit.insert("gpt-4o".into(), 3);
    r.model_limits.model_tpm_limit.insert("gpt-4o".into(), 900);
    r.team
        .model_limits
        .model_rpm_limit
        .insert("GPT-4o".into(), 5);
    r.team.model_limits.model_rpm_limit.insert("a:b%".into(), 1);
    let requests = model_scopes(&r, " gpt-4O", LimitKind::Requests);
    let names: Vec<&str> = requests.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "model:team:GPT-4o:t:1:rpm".to_string(),
            format!("model:key:gpt-4o:{}:rpm", r.token.as_str()),
        ]
    );
    assert_eq!(
        (requests[0].owner, requests[0].limit),
        (BudgetScope::Team, 5)
    );
    assert_eq!(
        (requests[1].owner, requests[1].limit),
        (BudgetScope::Key, 3)
    );
    assert_eq!(requests[1].model.as_deref(), Some("gpt-4o"));
    // A model name with the separator is escaped: no row is shared with another pair.
    let odd = model_scopes(&r, "a:b%", LimitKind::Requests);
    assert_eq!(odd[0].name, "model:team:a%3Ab%25:t:1:rpm");
    let tokens = model_scopes(&r, "gpt-4o", LimitKind::Tokens);
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].limit, 900);
    assert!(model_scopes(&r, "gpt-4o-mini", LimitKind::Requests).is_empty());
    assert!(model_scopes(&r, "gpt-4o", LimitKind::Parallel).is_empty());
    // The key's own windows are not the model's.
    assert!(scopes(&r, LimitKind::Requests).is_empty());
    // The filter is told the stricter per model.
    let told = r.model_limits();
    assert_eq!(told["gpt-4o"].rpm_limit, Some(3));
    assert_eq!(told["GPT-4o"].rpm_limit, Some(5));
}

#[test]
fn a_model_refusal_names_the_model_and_its_field() {
    let mut r = record("model-refused");
    r.model_limits.model_rpm_limit.insert("gpt-4o".into(), 2);
    let scope = &model_scopes(&r, "gpt-4o", LimitKind::Requests)[0];
    let mut w = ScopeWindow::default();
    let mut row = Row::default();
    let mut other = ScopeWindow::default();
    // Two replicas share the row: two admissions in all, never three.
    assert!(admit(&mut w, &mut row, T0, scope.limit));
    assert!(admit(&mut other, &mut row, T0 + 1, scope.limit));
    assert!(!admit(&mut w, &mut row, T0 + 2, scope.limit));
    assert!(!admit(&mut other, &mut row, T0 + 3, scope.limit));
    let refusal = scope.refusal(T0 + WINDOW_MS);
    let error = refusal.error();
    assert_eq!(error.param.as_deref(), Some("model_rpm_limit"));
    assert!(
        error.message.contains("model_per_key: gpt-4o"),
        "{}",
        error.message
    );
}
