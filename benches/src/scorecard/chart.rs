//! PNG charts of one incident: goodput (top) and admitted backend load (bottom) per second,
//! one line per stack. Nothing but lines and rectangles is drawn, so no font is needed
//! (plotters' text needs system fonts or an embedded one); the markdown names the colours.

use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;

use super::incidents::{CAPACITY, FAULT_FROM, FAULT_TO, LOAD_RPS, RUN};
use super::{Row, StackKind, incident};

const WIDTH: u32 = 900;
const HEIGHT: u32 = 600;

/// Draw `rows` (one incident, any stacks) into a PNG at `path`: the fault's span shaded
/// (lighter over a recovery ramp), a grid line every 5 s, a dashed line at the offered
/// load (top) and at the healthy capacity (bottom), and a colour key at the top left.
pub fn draw(rows: &[Row], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(HEIGHT / 2);
    let script = rows
        .first()
        .and_then(|r| incident(r.incident))
        .map(|i| i.script);
    let fault = (
        script
            .as_ref()
            .and_then(|s| s.fault_end())
            .unwrap_or(FAULT_TO),
        script
            .as_ref()
            .and_then(|s| s.fault_cleared())
            .unwrap_or(FAULT_TO),
    );
    let peak_load = rows
        .iter()
        .flat_map(|r| r.load_series.iter().copied())
        .max()
        .unwrap_or(0)
        .max(CAPACITY as u64) as f64;
    panel(
        &top,
        rows,
        |r| &r.goodput_series,
        LOAD_RPS * 1.3,
        LOAD_RPS,
        fault,
    )?;
    panel(
        &bottom,
        rows,
        |r| &r.load_series,
        peak_load * 1.1,
        CAPACITY,
        fault,
    )?;
    root.present()?;
    Ok(())
}

fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    rows: &[Row],
    series: impl Fn(&Row) -> &Vec<u64>,
    y_max: f64,
    reference: f64,
    (fault_end, fault_cleared): (Duration, Duration),
) -> Result<(), Box<dyn std::error::Error>> {
    let run = RUN.as_secs_f64();
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .build_cartesian_2d(0f64..run, 0f64..y_max)?;
    // The fault, shaded: dark while it lasts, light over a recovery ramp.
    let (from, to) = (FAULT_FROM.as_secs_f64(), fault_end.as_secs_f64());
    chart.draw_series(std::iter::once(Rectangle::new(
        [(from, 0.0), (to, y_max)],
        RGBColor(255, 228, 225).filled(),
    )))?;
    let cleared = fault_cleared.as_secs_f64();
    if cleared > to {
        chart.draw_series(std::iter::once(Rectangle::new(
            [(to, 0.0), (cleared, y_max)],
            RGBColor(255, 243, 240).filled(),
        )))?;
    }
    // Axes and a grid line every 5 s.
    let axis = BLACK.stroke_width(1);
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(0.0, 0.0), (run, 0.0)],
        axis,
    )))?;
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(0.0, 0.0), (0.0, y_max)],
        axis,
    )))?;
    for t in (5..RUN.as_secs()).step_by(5) {
        let t = t as f64;
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(t, 0.0), (t, y_max)],
            RGBColor(230, 230, 230).stroke_width(1),
        )))?;
    }
    // The reference level (offered load or capacity), dashed.
    let dashes = (0..(run as u64)).step_by(2).map(|t| {
        let t = t as f64;
        PathElement::new(
            vec![(t, reference), (t + 1.0, reference)],
            BLACK.stroke_width(1),
        )
    });
    chart.draw_series(dashes)?;
    // One line per stack; the tuned stack last, on top.
    for row in rows {
        let (r, g, b) = row.stack.colour();
        let width = if row.stack == StackKind::PalisadeTuned {
            3
        } else {
            2
        };
        let points = series(row)
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64 + 0.5, *v as f64));
        chart.draw_series(LineSeries::new(
            points,
            RGBColor(r, g, b).stroke_width(width),
        ))?;
    }
    // The colour key: one swatch per stack, top left, in the table's order.
    for (i, row) in rows.iter().enumerate() {
        let (r, g, b) = row.stack.colour();
        let x = 1.0 + i as f64 * 1.5;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(x, y_max * 0.97), (x + 1.0, y_max * 0.92)],
            RGBColor(r, g, b).filled(),
        )))?;
    }
    Ok(())
}
