//! The sweep's chart: throughput (left) and p99 latency (right, log scale) against concurrency
//! (log scale), one line per operation, drawn as a PNG with plotters' bitmap backend. Text is
//! drawn with ab_glyph from a TrueType font read at run time (`--font`, by default Debian's
//! `fonts-dejavu-core`), so no fontconfig is needed.

use std::path::Path;

use anyhow::{Context, anyhow};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::report::RunResult;

/// Where Debian's `fonts-dejavu-core` puts its sans-serif face.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Registers `font` as plotters' `sans-serif` (once per process).
fn register_font(font: &Path) -> anyhow::Result<()> {
    static REGISTERED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes = std::fs::read(font).map_err(|e| {
                format!(
                    "reading the chart font {}: {e} (Debian: `apt-get install fonts-dejavu-core`, \
                     or pass --font FILE.ttf)",
                    font.display()
                )
            })?;
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{} is not a TrueType/OpenType font", font.display()))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// Draws `results` (each with its `op` and `concurrency`) into `png`.
pub fn draw(png: &Path, results: &[RunResult], title: &str, font: &Path) -> anyhow::Result<()> {
    register_font(font)?;
    let mut ops: Vec<&str> = Vec::new();
    for r in results {
        if !ops.contains(&r.op.as_str()) {
            ops.push(&r.op);
        }
    }
    let series = |op: &str| -> Vec<&RunResult> {
        let mut v: Vec<&RunResult> = results.iter().filter(|r| r.op == op).collect();
        v.sort_by_key(|r| r.concurrency);
        v
    };
    let max_c = results
        .iter()
        .map(|r| r.concurrency)
        .max()
        .unwrap_or(1)
        .max(2) as f64;
    let max_rps = results.iter().map(|r| r.rps).fold(0.0, f64::max).max(1.0) * 1.1;
    let p99s = results.iter().map(|r| r.p99_ms).filter(|p| *p > 0.0);
    let min_p99 = p99s.clone().fold(f64::INFINITY, f64::min).min(1.0) / 1.5;
    let max_p99 = p99s.fold(0.0, f64::max).max(1.0) * 1.5;

    let root = BitMapBackend::new(png, (1400, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| anyhow!("{e}"))?;
    let (left, right) = root.split_horizontally(700);

    let mut chart = ChartBuilder::on(&left)
        .caption("throughput", ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d((1.0..max_c).log_scale(), 0.0..max_rps)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("connections")
        .y_desc("requests/s")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let lines = ops.iter().map(|op| {
        let points = series(op)
            .iter()
            .map(|r| (r.concurrency as f64, r.rps))
            .collect();
        (*op, points)
    });
    draw_lines(&mut chart, lines)?;

    let mut chart = ChartBuilder::on(&right)
        .caption("p99 latency", ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d((1.0..max_c).log_scale(), (min_p99..max_p99).log_scale())
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("connections")
        .y_desc("p99 (ms)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let lines = ops.iter().map(|op| {
        let points = series(op)
            .iter()
            .filter(|r| r.p99_ms > 0.0)
            .map(|r| (r.concurrency as f64, r.p99_ms))
            .collect();
        (*op, points)
    });
    draw_lines(&mut chart, lines)?;
    root.present()
        .with_context(|| format!("writing {}", png.display()))?;
    Ok(())
}

/// One line with a dot per point for each operation, in its colour, and the legend.
fn draw_lines<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    lines: impl Iterator<Item = (&'a str, Vec<(f64, f64)>)>,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (i, (op, points)) in lines.enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(op.to_uppercase())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
