//! The drill's SVG timeline (plotters, SVG backend): acknowledged messages per second and p99
//! commit latency per bucket, with the drill's events as vertical markers.

use super::{CliError, CliResult};
use plotters::prelude::*;
use std::path::Path;

/// Per bucket: (start in s, acknowledged per second, p99 latency in ms).
fn buckets(timeline: &[(f64, f64)], bucket_ms: u64, end_ms: f64) -> Vec<(f64, f64, f64)> {
    let n = (end_ms / bucket_ms as f64).ceil().max(1.0) as usize;
    let mut lat: Vec<Vec<f64>> = vec![Vec::new(); n];
    for &(sent, acked) in timeline {
        let i = ((acked / bucket_ms as f64) as usize).min(n - 1);
        lat[i].push(acked - sent);
    }
    lat.into_iter()
        .enumerate()
        .map(|(i, mut l)| {
            l.sort_by(f64::total_cmp);
            let p99 = l
                .get(((l.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(0.0);
            let per_s = l.len() as f64 * 1000.0 / bucket_ms as f64;
            (i as f64 * bucket_ms as f64 / 1e3, per_s, p99)
        })
        .collect()
}

fn plot_err(e: impl std::fmt::Display) -> CliError {
    CliError(format!("cannot draw the report: {e}"))
}

/// Writes the timeline to `path`.
pub fn write_svg(
    path: &Path,
    timeline: &[(f64, f64)],
    events: &[(f64, &str)],
    bucket_ms: u64,
) -> CliResult<()> {
    let end_ms = events.iter().map(|e| e.0).fold(1.0, f64::max);
    let data = buckets(timeline, bucket_ms, end_ms);
    let end_s = end_ms / 1e3;
    let max_rate = data.iter().map(|d| d.1).fold(1.0, f64::max) * 1.1;
    let max_lat = data.iter().map(|d| d.2).fold(1.0, f64::max) * 1.1;

    let root = SVGBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (top, bottom) = root.split_vertically(300);
    let panels = [
        (top, "acknowledged messages / s", max_rate, 1usize, BLUE),
        (bottom, "p99 commit latency (ms)", max_lat, 2usize, RED),
    ];
    for (area, title, max_y, col, color) in panels {
        let mut chart = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..end_s * 1.12, 0f64..max_y)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("seconds since start")
            .draw()
            .map_err(plot_err)?;
        let series = data.iter().map(|d| (d.0, if col == 1 { d.1 } else { d.2 }));
        chart
            .draw_series(LineSeries::new(series, color.stroke_width(2)))
            .map_err(plot_err)?;
        for (i, &(t_ms, name)) in events.iter().enumerate() {
            let x = t_ms / 1e3;
            chart
                .draw_series(LineSeries::new(
                    [(x, 0.0), (x, max_y)],
                    BLACK.mix(0.5).stroke_width(1),
                ))
                .map_err(plot_err)?;
            if col == 1 {
                // Staggered, so that events close in time stay readable.
                let y = max_y * (0.95 - 0.09 * (i % 4) as f64);
                chart
                    .draw_series([Text::new(name.to_string(), (x, y), ("sans-serif", 12))])
                    .map_err(plot_err)?;
            }
        }
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_count_rates_and_p99() {
        // 4 acks in the first 250 ms bucket, latencies 1..4 ms; none in the second.
        let t = [(0.0, 1.0), (0.0, 2.0), (0.0, 3.0), (0.0, 4.0)];
        let b = buckets(&t, 250, 500.0);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0], (0.0, 16.0, 4.0));
        assert_eq!(b[1], (0.25, 0.0, 0.0));
    }
}
