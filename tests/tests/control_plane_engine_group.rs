//! The engine is ended by process group: a wrapper `--engine-command` (a shell that traps
//! SIGTERM and runs the real engine as its child) leaves no process and no Postgres
//! connection behind, after a forced reconnect and after the control plane stops.

mod control_plane_support;

use control_plane_support::*;
use livegate_tests::control_plane::ControlPlane;
use livegate_tests::poll;
use livegate_tests::postgres::Postgres;
use livegate_tests::procfs;
use nix::sys::signal::Signal;

/// Engine connections Postgres sees (the engine names itself `livegate-engine`).
fn engine_connections(pg: &Postgres) -> u64 {
    psql(
        pg,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'livegate-engine'",
    )
    .parse()
    .unwrap()
}

/// The engine's pid (the wrapper shell's: the leader of the engine's group).
fn engine_group(cp: &ControlPlane) -> u32 {
    readiness(cp).0.json().unwrap()["engine_pid"]
        .as_u64()
        .expect("an engine pid") as u32
}

fn wait_group_gone(cp: &ControlPlane, group: u32) {
    let gone = poll::until("the old engine's process group to end", RECOVERY, || {
        procfs::group_members(group).is_empty().then_some(())
    });
    if let Err(e) = gone {
        panic!(
            "{e}: {:?} remain\n{}",
            procfs::group_members(group),
            cp.log_text()
        );
    }
}

fn wait_engine_connections(pg: &Postgres, cp: &ControlPlane, want: u64) {
    let seen = poll::until(
        "Postgres to see only the live engine's connections",
        RECOVERY,
        || (engine_connections(pg) == want).then_some(()),
    );
    if let Err(e) = seen {
        panic!(
            "{e}: {} engine connections\n{}",
            engine_connections(pg),
            cp.log_text()
        );
    }
}

#[test]
fn a_wrapper_engine_command_leaves_no_orphan_after_a_reconnect_or_a_stop() {
    let _serial = serial();
    let pg = Postgres::start().unwrap();
    let bin = livegate_tests::artifacts::control_plane_bin();
    // The shell defers its trap until its foreground child exits: only a signal to the whole
    // group reaches the engine; one to the shell's pid alone would wait out the grace period
    // and end in SIGKILL, with the engine orphaned.
    let wrapper = format!(
        "sh -c 'trap \"echo wrapper: SIGTERM >&2\" TERM; {} engine; echo wrapper: done >&2'",
        bin.display()
    );
    let mut cp = ControlPlane::builder(&pg.url())
        .arg("--engine-command")
        .arg(wrapper)
        .arg("--db-pool-size")
        .arg("2")
        .start()
        .unwrap();
    cp.wait_connected(RECOVERY).unwrap();
    let old = engine_group(&cp);
    assert!(
        procfs::group_members(old).len() >= 2,
        "the engine is not the wrapper's child: {:?}",
        procfs::group_members(old)
    );
    // The pool (2) and the heartbeat's own connection.
    assert_eq!(engine_connections(&pg), 3);

    cp.signal(Signal::SIGHUP).unwrap();
    poll::until("a new engine", RECOVERY, || {
        let body = readiness(&cp).0.json().ok()?;
        (body["db"] == "connected" && body["engine_pid"].as_u64() != Some(u64::from(old)))
            .then_some(())
    })
    .unwrap();
    wait_group_gone(&cp, old);
    wait_engine_connections(&pg, &cp, 3);
    let metrics = metrics(&cp);
    assert_eq!(
        series(&metrics, "livegate_engine_sigkill_total"),
        Some(0.0),
        "the wrapper needed SIGKILL: SIGTERM did not reach its engine\n{}",
        cp.log_text()
    );

    let current = engine_group(&cp);
    cp.signal(Signal::SIGTERM).unwrap();
    let status = cp.wait_exit(RECOVERY).unwrap();
    assert!(status.success(), "{status:?}\n{}", cp.log_text());
    wait_group_gone(&cp, current);
    wait_engine_connections(&pg, &cp, 0);
}
