//! A PNG timeline per scenario: liveness latency over time with the fault shaded,
//! and the readiness state underneath.

use std::path::Path;

use livegate_tests::lab::scenario::ScenarioReport;
use plotters::prelude::*;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const FAULT_SHADE: RGBColor = RGBColor(255, 205, 205);

/// Registers the font the charts use (Debian's fonts-dejavu-core, installed when missing).
pub fn ensure_font() -> anyhow::Result<()> {
    if !Path::new(FONT).exists() {
        crate::step("installing fonts for the charts (apt-get install fonts-dejavu-core)");
        crate::setup::apt_install(&["fonts-dejavu-core"])?;
    }
    // plotters keeps a reference for the life of the process.
    let bytes: &'static [u8] = Box::leak(std::fs::read(FONT)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{FONT} is not a font plotters can read"))?;
    Ok(())
}

/// Draws `report` into `path`.
pub fn timeline(report: &ScenarioReport, path: &Path) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, (1100, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(460);
    let end_s = report
        .liveness_samples
        .last()
        .map_or(1.0, |s| s.at_ms / 1e3)
        .max(report.readiness.last().map_or(1.0, |s| s.at_ms / 1e3));
    let max_ms = report
        .liveness_samples
        .iter()
        .map(|s| s.latency_ms)
        .fold(1.0_f64, f64::max)
        * 1.2;

    let mut latency = ChartBuilder::on(&top)
        .caption(
            format!(
                "{}: /health/liveliness latency through the fault (shaded)",
                report.scenario
            ),
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end_s, 0.0..max_ms)?;
    latency
        .configure_mesh()
        .y_desc("latency (ms)")
        .x_desc("time (s)")
        .draw()?;
    shade_faults(&mut latency, report, max_ms)?;
    latency.draw_series(report.liveness_samples.iter().map(|s| {
        let colour = if s.is_2xx() {
            BLUE.mix(0.5)
        } else {
            RED.mix(0.9)
        };
        Circle::new((s.at_ms / 1e3, s.latency_ms), 1, colour.filled())
    }))?;

    let mut readiness = ChartBuilder::on(&bottom)
        .caption("readiness: db state", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end_s, -0.5..3.5)?;
    readiness
        .configure_mesh()
        .y_labels(4)
        .y_label_formatter(&|level: &f64| state_name(level.round() as i32).to_string())
        .x_desc("time (s)")
        .draw()?;
    shade_faults(&mut readiness, report, 3.5)?;
    readiness.draw_series(LineSeries::new(
        report
            .readiness
            .iter()
            .map(|s| (s.at_ms / 1e3, state_level(&s.db))),
        &BLACK,
    ))?;
    root.present()?;
    Ok(())
}

fn shade_faults<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    report: &ScenarioReport,
    top: f64,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .draw_series(report.fault_windows.iter().map(|(start, end)| {
            Rectangle::new(
                [(start / 1e3, -0.5), (end / 1e3, top)],
                FAULT_SHADE.filled(),
            )
        }))
        .map_err(|error| anyhow::anyhow!("drawing the fault windows: {error:?}"))?;
    Ok(())
}

fn state_level(db: &str) -> f64 {
    match db {
        "connected" => 3.0,
        "reconnecting" => 2.0,
        "disconnected" => 1.0,
        _ => 0.0,
    }
}

fn state_name(level: i32) -> &'static str {
    match level {
        3 => "connected",
        2 => "reconnecting",
        1 => "disconnected",
        0 => "unreachable",
        _ => "",
    }
}
