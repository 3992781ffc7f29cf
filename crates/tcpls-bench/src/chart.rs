//! Bar chart of the bulk lines, in the manner of the TCPLS paper's Fig. 7:
//! goodput on the left, CPU seconds per GiB on the right.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::report::Report;

fn load_font(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "reading font {} (install fonts-dejavu-core or pass --font)",
            path.display()
        )
    })?;
    // plotters keeps registered fonts for the whole process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{} is not a usable font", path.display()))
}

pub fn draw(report: &Report, out: &Path, font: &Path) -> Result<()> {
    if report.bulk.is_empty() {
        return Err(anyhow!("no bulk lines to plot"));
    }
    load_font(font)?;
    let root = BitMapBackend::new(out, (1400, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let title = format!(
        "loopback, {} MiB, {}, {} cores, median of {}",
        report.bytes >> 20,
        report.cipher,
        report.machine.cores,
        report.repeat
    );
    let root = root
        .titled(&title, ("sans-serif", 22))
        .map_err(|e| anyhow!("{e}"))?;
    let (left, right) = root.split_horizontally(700);
    let goodput: Vec<(&str, f64, Option<f64>)> = report
        .bulk
        .iter()
        .map(|b| (b.line, b.gbps, b.vs_rustls))
        .collect();
    let cpu: Vec<(&str, f64, Option<f64>)> = report
        .bulk
        .iter()
        .map(|b| (b.line, b.cpu_s_per_gib, b.cpu_vs_rustls))
        .collect();
    bars(&left, "goodput (Gbit/s)", &goodput)?;
    bars(&right, "CPU seconds per GiB (both ends)", &cpu)?;
    root.present()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// Horizontal bars, one per line, labelled with the value and the ratio to
/// rustls.
fn bars(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    caption: &str,
    rows: &[(&str, f64, Option<f64>)],
) -> Result<()> {
    let max = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1e-9) * 1.35;
    let n = rows.len();
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(150)
        .build_cartesian_2d(0.0..max, (0..n).into_segmented())
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_label_formatter(&|y| match y {
            SegmentValue::CenterOf(i) => rows.get(*i).map_or(String::new(), |r| r.0.to_string()),
            _ => String::new(),
        })
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let colour = |name: &str| {
        if name.starts_with("tcpls") {
            RGBColor(31, 119, 180)
        } else {
            RGBColor(150, 150, 150)
        }
    };
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (r.1, SegmentValue::Exact(i + 1)),
                ],
                colour(r.0).filled(),
            );
            bar.set_margin(6, 6, 0, 0);
            bar
        }))
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            let label = match r.2 {
                Some(x) => format!("{:.2} ({x:.2}x)", r.1),
                None => format!("{:.2}", r.1),
            };
            Text::new(
                label,
                (r.1 + max * 0.01, SegmentValue::CenterOf(i)),
                ("sans-serif", 14),
            )
        }))
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
