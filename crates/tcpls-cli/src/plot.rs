//! `tcpls plot`: goodput-over-time PNGs from `--timeline` files (TCPLS
//! `perf` or `mptcp perf`), with fault or migration times marked, in the
//! manner of the TCPLS paper's figures 8 and 9.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::perf::Timeline;

#[derive(clap::Args, Debug)]
pub struct PlotArgs {
    /// Timeline JSON files; each becomes one line, labelled by its file
    /// name. (Or one `tcpls soak --out` report: the server's memory and
    /// descriptors over time.)
    #[arg(required = true)]
    pub timelines: Vec<PathBuf>,
    /// Output PNG.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Chart title.
    #[arg(long, default_value = "goodput over time")]
    pub title: String,
    /// Mark these times (seconds), e.g. when a fault was injected.
    #[arg(long = "mark")]
    pub marks: Vec<f64>,
    /// Average over this many 10 ms samples (smooths the curve).
    #[arg(long, default_value_t = 5)]
    pub smooth: usize,
    /// Plot the first connection's smoothed RTT (from `tcpls perf
    /// --timeline`) instead of goodput.
    #[arg(long)]
    pub rtt: bool,
    /// TrueType font for labels.
    #[arg(long, default_value = DEFAULT_FONT)]
    pub font: PathBuf,
}

/// The default label font (fonts-dejavu-core).
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

pub fn load_font(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "reading font {} (install fonts-dejavu-core or pass --font)",
            path.display()
        )
    })?;
    // plotters keeps fonts for the whole process; one per run is fine.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{} is not a usable font", path.display()))?;
    Ok(())
}

/// What a timeline chart shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Mbit/s delivered.
    Goodput,
    /// The first connection's smoothed RTT, ms.
    Rtt,
}

/// A series in (seconds, value): `samples` taken every `t.interval_ms`,
/// in windows of `smooth`, each window's value by `value(window, its
/// length in seconds)` (`None`: no point).
fn windows<T>(
    t: &Timeline,
    samples: &[T],
    smooth: usize,
    value: impl Fn(&[T], f64) -> Option<f64>,
) -> Vec<(f64, f64)> {
    let dt = t.interval_ms as f64 / 1000.0;
    let w = smooth.max(1);
    samples
        .chunks(w)
        .enumerate()
        .filter_map(|(i, c)| value(c, c.len() as f64 * dt).map(|v| ((i * w) as f64 * dt, v)))
        .collect()
}

/// RTT series in (seconds, ms), averaged over `smooth` samples (unknown
/// samples left out).
fn rtt_series(t: &Timeline, smooth: usize) -> Vec<(f64, f64)> {
    windows(t, &t.rtt_us, smooth, |c, _| {
        let known: Vec<f64> = c.iter().filter(|r| **r > 0).map(|r| *r as f64).collect();
        (!known.is_empty()).then(|| known.iter().sum::<f64>() / known.len() as f64 / 1000.0)
    })
}

/// Goodput series in (seconds, Mbit/s), averaged over `smooth` samples.
fn series(t: &Timeline, smooth: usize) -> Vec<(f64, f64)> {
    windows(t, &t.bytes, smooth, |c, secs| {
        Some(c.iter().sum::<u64>() as f64 * 8.0 / secs / 1e6)
    })
}

/// The part of a `tcpls soak --out` report that `plot` draws.
#[derive(serde::Deserialize)]
struct SoakSamples {
    sessions: usize,
    server: Vec<crate::soak::Sample>,
}

pub fn run(args: PlotArgs) -> Result<()> {
    load_font(&args.font)?;
    if let [one] = args.timelines.as_slice() {
        let bytes = std::fs::read(one).with_context(|| format!("reading {}", one.display()))?;
        if let Ok(soak) = serde_json::from_slice::<SoakSamples>(&bytes) {
            let title = format!("tcpls soak: {} sessions", soak.sessions);
            soak_chart(&soak.server, &args.output, &title)?;
            eprintln!("tcpls plot: wrote {}", args.output.display());
            return Ok(());
        }
    }
    let mut timelines = Vec::new();
    for p in &args.timelines {
        let t: Timeline = serde_json::from_slice(
            &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("{} is not a timeline", p.display()))?;
        let label = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        timelines.push((label, t));
    }
    let marks: Vec<(f64, String)> = args.marks.iter().map(|m| (*m, "fault".into())).collect();
    let metric = if args.rtt {
        Metric::Rtt
    } else {
        Metric::Goodput
    };
    timeline_chart(
        &timelines,
        &args.output,
        &args.title,
        &marks,
        args.smooth,
        metric,
    )?;
    eprintln!("tcpls plot: wrote {}", args.output.display());
    Ok(())
}

/// Goodput (or RTT) over time of labelled timelines, one line each, with
/// `marks` and each timeline's events drawn as labelled vertical lines
/// (the font must be loaded, see [`load_font`]).
pub fn timeline_chart(
    timelines: &[(String, Timeline)],
    output: &Path,
    title: &str,
    marks: &[(f64, String)],
    smooth: usize,
    metric: Metric,
) -> Result<()> {
    let lines: Vec<_> = timelines
        .iter()
        .map(|(label, t)| {
            let s = match metric {
                Metric::Goodput => series(t, smooth),
                Metric::Rtt => rtt_series(t, smooth),
            };
            (label.clone(), s, t.events.clone())
        })
        .collect();
    let max_x = lines
        .iter()
        .flat_map(|(_, s, _)| s.last().map(|p| p.0))
        .fold(0.0, f64::max)
        .max(0.1);
    let max_y = lines
        .iter()
        .flat_map(|(_, s, _)| s.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.1;
    if lines.iter().all(|(_, s, _)| s.is_empty()) {
        if metric == Metric::Rtt {
            bail!("the timelines hold no RTT samples (tcpls perf --timeline records them)");
        }
        bail!("the timelines hold no samples");
    }
    let root = BitMapBackend::new(output, (1000, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_x, 0.0..max_y)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc(match metric {
            Metric::Goodput => "goodput (Mbit/s)",
            Metric::Rtt => "smoothed RTT (ms)",
        })
        .draw()?;
    let mut marks = marks.to_vec();
    for (i, (label, s, events)) in lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(s.iter().copied(), color.stroke_width(2)))?
            .label(label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        marks.extend(
            events
                .iter()
                .map(|(ms, what)| (*ms as f64 / 1000.0, what.clone())),
        );
    }
    for (x, what) in marks {
        chart.draw_series(LineSeries::new(vec![(x, 0.0), (x, max_y)], RED.mix(0.6)))?;
        chart.draw_series(std::iter::once(Text::new(
            what,
            (x, max_y * 0.97),
            ("sans-serif", 13).into_font().color(&RED),
        )))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()
        .with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}

/// `tcpls soak --plot`: the server's resident memory (top) and open
/// descriptors (bottom) over the run, one panel each.
pub fn soak_chart(samples: &[crate::soak::Sample], output: &Path, title: &str) -> Result<()> {
    if samples.is_empty() {
        bail!("no server samples to plot (pass --server-pid)");
    }
    let max_x = samples.last().map_or(1.0, |s| s.seconds).max(1.0);
    let rss: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| (s.seconds, s.rss_bytes as f64 / (1 << 20) as f64))
        .collect();
    let fds: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| (s.seconds, s.open_fds as f64))
        .collect();
    let root = BitMapBackend::new(output, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let (top, bottom) = root.split_vertically(300);
    for (area, points, label) in [
        (&top, &rss, "server RSS (MiB)"),
        (&bottom, &fds, "server open descriptors"),
    ] {
        let max_y = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(area)
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..max_x, 0.0..max_y)?;
        chart
            .configure_mesh()
            .x_desc("time (s)")
            .y_desc(label)
            .draw()?;
        chart.draw_series(LineSeries::new(
            points.iter().copied(),
            BLUE.stroke_width(2),
        ))?;
    }
    root.present()
        .with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}
