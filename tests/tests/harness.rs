//! The harness's own building blocks, against the real Postgres.

use std::process::Command;
use std::time::Duration;

use livegate_tests::postgres::{self, Postgres};

fn select_one(pg: &Postgres, timeout_s: u32) -> bool {
    let psql = postgres::bin_dir().unwrap().join("psql");
    Command::new(psql)
        .arg(pg.url())
        .args(["-tAc", "SELECT 1"])
        .env("PGCONNECT_TIMEOUT", timeout_s.to_string())
        .output()
        .map(|out| out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "1")
        .unwrap_or(false)
}

#[test]
fn postgres_starts_on_a_free_port_and_answers_with_the_password_in_its_url() {
    let pg = Postgres::start().unwrap();
    assert!(pg.url().contains(pg.password()));
    assert!(select_one(&pg, 5), "{}", pg.log_text());
}

#[test]
fn a_paused_postgres_does_not_answer_until_resumed() {
    let pg = Postgres::start().unwrap();
    pg.pause().unwrap();
    // Every process, backends included (they are not in the postmaster's group).
    let postmaster = pg.pid().unwrap();
    let backends = livegate_tests::procfs::descendants(postmaster);
    assert!(!backends.is_empty());
    for pid in std::iter::once(postmaster).chain(backends) {
        // A signal is delivered asynchronously: poll for the stopped state.
        let stopped =
            livegate_tests::poll::until("the process to stop", Duration::from_secs(5), || {
                matches!(livegate_tests::procfs::state(pid), Some('T') | None).then_some(())
            });
        assert!(stopped.is_ok(), "pid {pid} still runs");
    }
    assert!(!select_one(&pg, 1), "a paused Postgres answered");
    pg.resume().unwrap();
    let answered =
        livegate_tests::poll::until("Postgres to answer again", Duration::from_secs(30), || {
            select_one(&pg, 2).then_some(())
        });
    assert!(answered.is_ok(), "{}", pg.log_text());
}

#[test]
fn a_killed_postgres_restarts_on_the_same_port_with_its_data() {
    let mut pg = Postgres::start().unwrap();
    let port = pg.port();
    let old_pid = pg.pid();
    pg.kill().unwrap();
    assert!(!select_one(&pg, 1), "a killed Postgres answered");
    pg.restart().unwrap();
    assert_eq!(pg.port(), port);
    assert_ne!(pg.pid(), old_pid);
    assert!(select_one(&pg, 5), "{}", pg.log_text());
}
