//! The outage lab's scenarios, short: functional assertions only (the timed
//! version is `cargo xtask bench outage`).

use livegate_tests::lab::scenario::{self, Fault, ScenarioReport, Timing};

fn run(fault: Fault) -> ScenarioReport {
    let report = scenario::run(fault, Timing::short()).unwrap();
    eprintln!(
        "{}: liveness {:?}, auth {:?}, noticed {:?} ms, reconnected {:?} ms",
        report.scenario,
        report.liveness,
        report.auth,
        report.readiness_noticed_ms,
        report.reconnected_ms
    );
    report
}

/// What every scenario must show, whatever the fault.
fn assert_survived(report: &ScenarioReport) {
    let name = report.scenario;
    let liveness = report.liveness.expect("liveness was probed");
    assert!(liveness.count > 0, "{name}: no liveness probe ran");
    assert_eq!(
        liveness.percent_2xx, 100.0,
        "{name}: a liveness probe failed: {liveness:?}"
    );
    assert_eq!(
        report.auth.unknown_admitted, 0,
        "{name}: an unknown key was let in"
    );
    assert!(
        report.auth.unknown_refused > 0,
        "{name}: no unknown key was tried"
    );
    assert_eq!(
        report.auth.known_refused, 0,
        "{name}: a known key was refused: {:?}",
        report.auth
    );
    assert!(
        report.reconnected_ms.is_some(),
        "{name}: readiness never said connected again"
    );
    assert!(
        report.key_list_after,
        "{name}: /key/list failed after recovery"
    );
    assert_eq!(report.engines_left, 1, "{name}: engines left");
    assert_eq!(report.zombies_left, 0, "{name}: zombies left");
}

/// Faults of the database path must be seen by readiness.
fn assert_noticed(report: &ScenarioReport) {
    assert!(
        report.readiness_noticed_ms.is_some(),
        "{}: readiness never reported the outage",
        report.scenario
    );
}

#[test]
fn postgres_paused_and_resumed() {
    let report = run(Fault::Pause);
    assert_survived(&report);
    assert_noticed(&report);
}

#[test]
fn postgres_killed_and_restarted() {
    let report = run(Fault::Kill);
    assert_survived(&report);
    assert_noticed(&report);
}

#[test]
fn the_path_to_postgres_blackholed_and_healed() {
    let report = run(Fault::Partition);
    assert_survived(&report);
    assert_noticed(&report);
}

#[test]
fn an_engine_that_ignores_sigterm_is_killed() {
    let report = run(Fault::WedgedEngine);
    assert_survived(&report);
    assert_noticed(&report);
}

#[test]
fn the_control_plane_killed_and_restarted() {
    let report = run(Fault::ControlPlaneKilled);
    assert_survived(&report);
}

#[test]
fn postgres_flapping() {
    let report = run(Fault::Flapping);
    assert_survived(&report);
    assert!(
        report.fault_windows.len() >= 2,
        "{:?}",
        report.fault_windows
    );
}
