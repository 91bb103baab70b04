//! The soak's SVG (plotters, SVG backend): per minute, disk bytes, RSS (all and anonymous),
//! open descriptors (all and sockets) and threads of every site (one line per site slot),
//! acknowledged messages per second and p99 commit latency; fires, rebuilds and rolling
//! restarts as vertical markers.

use super::soak_check::{Bucket, SiteFigures};
use super::{CliError, CliResult};
use plotters::prelude::*;
use std::collections::BTreeSet;
use std::path::Path;

fn plot_err(e: impl std::fmt::Display) -> CliError {
    CliError(format!("cannot draw the report: {e}"))
}

const SITE_COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// One panel: a title and its series (name, points of (minute, value)).
struct Panel {
    title: &'static str,
    series: Vec<(String, Vec<(f64, f64)>)>,
}

fn site_panel(title: &'static str, buckets: &[Bucket], field: fn(&SiteFigures) -> f64) -> Panel {
    let slots: BTreeSet<usize> = buckets
        .iter()
        .flat_map(|b| b.sites.keys().copied())
        .collect();
    let series = slots
        .into_iter()
        .map(|slot| {
            let pts = buckets
                .iter()
                .enumerate()
                .filter_map(|(i, b)| b.sites.get(&slot).map(|f| (i as f64 + 0.5, field(f))))
                .collect();
            (format!("site slot {slot}"), pts)
        })
        .collect();
    Panel { title, series }
}

/// The eight panels of the report.
fn panels(buckets: &[Bucket], bucket_secs: &[f64]) -> Vec<Panel> {
    let rate = buckets
        .iter()
        .zip(bucket_secs)
        .enumerate()
        .map(|(i, (b, s))| (i as f64 + 0.5, b.lat_ms.len() as f64 / s))
        .collect();
    let p99 = buckets
        .iter()
        .enumerate()
        .map(|(i, b)| (i as f64 + 0.5, b.p99_ms()))
        .collect();
    vec![
        site_panel("disk per site (MB)", buckets, |f| f.disk_bytes as f64 / 1e6),
        site_panel("RSS per process (MB)", buckets, |f| {
            f.rss_bytes as f64 / 1e6
        }),
        site_panel("anonymous RSS per process (MB)", buckets, |f| {
            f.rss_anon_bytes as f64 / 1e6
        }),
        site_panel("open descriptors per process", buckets, |f| f.fds as f64),
        site_panel("of those, sockets", buckets, |f| f.sockets as f64),
        site_panel("threads per process", buckets, |f| f.threads as f64),
        Panel {
            title: "acknowledged messages / s",
            series: vec![("acked/s".into(), rate)],
        },
        Panel {
            title: "p99 commit latency (ms)",
            series: vec![("p99".into(), p99)],
        },
    ]
}

/// Writes the report to `path`; `events` are (ms since start, name).
pub fn write_svg(
    path: &Path,
    buckets: &[Bucket],
    bucket_secs: &[f64],
    minute_secs: f64,
    events: &[(f64, String)],
) -> CliResult<()> {
    let end_min = (buckets.len() as f64).max(1.0);
    let root = SVGBackend::new(path, (1200, 1200)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let areas = root.split_evenly((4, 2));
    for (area, panel) in areas.iter().zip(panels(buckets, bucket_secs)) {
        let max_y = panel
            .series
            .iter()
            .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
            .fold(1.0, f64::max)
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(panel.title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..end_min, 0f64..max_y)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(format!("minute ({minute_secs} s)"))
            .draw()
            .map_err(plot_err)?;
        for (k, (name, pts)) in panel.series.iter().enumerate() {
            let color = SITE_COLORS[k % SITE_COLORS.len()];
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                .map_err(plot_err)?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 15, y)], color));
        }
        for (i, (t_ms, name)) in events.iter().enumerate() {
            let x = t_ms / 1e3 / minute_secs;
            chart
                .draw_series(LineSeries::new(
                    [(x, 0.0), (x, max_y)],
                    BLACK.mix(0.4).stroke_width(1),
                ))
                .map_err(plot_err)?;
            let y = max_y * (0.97 - 0.07 * (i % 3) as f64);
            chart
                .draw_series([Text::new(name.clone(), (x, y), ("sans-serif", 10))])
                .map_err(plot_err)?;
        }
        if panel.series.len() > 1 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK.mix(0.3))
                .draw()
                .map_err(plot_err)?;
        }
    }
    root.present().map_err(plot_err)?;
    Ok(())
}
