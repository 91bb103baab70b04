//! Latency percentiles and number formatting for the bench report.

use super::json::Json;
use std::time::Duration;

/// Percentiles of a set of latencies, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub count: usize,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Latency {
    /// Summarises latencies given in nanoseconds (nearest-rank percentiles over all samples).
    pub fn from_nanos(mut samples: Vec<u64>) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let n = samples.len();
        let at = |p: f64| {
            let rank = (p * n as f64).ceil() as usize;
            samples[rank.clamp(1, n) - 1] as f64 / 1e3
        };
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Latency {
            count: n,
            mean_us: sum as f64 / n as f64 / 1e3,
            p50_us: at(0.50),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: at(1.0),
        }
    }

    pub fn json(&self) -> Json {
        Json::obj([
            ("samples", self.count.into()),
            ("mean_us", round(self.mean_us, 1).into()),
            ("p50_us", round(self.p50_us, 1).into()),
            ("p99_us", round(self.p99_us, 1).into()),
            ("p999_us", round(self.p999_us, 1).into()),
            ("max_us", round(self.max_us, 1).into()),
        ])
    }
}

/// Nanoseconds of a duration, saturating (a latency never gets near 584 years).
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Rounds to `digits` decimals (for JSON output).
pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Megabytes (10^6 bytes) per second.
pub fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 / 1e6 / secs
    } else {
        0.0
    }
}

/// `100 B`, `1 KiB`, `6.2 KiB`, `4 MiB`, `1.5 GiB`.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if n >= size {
            return if n % size == 0 {
                format!("{} {unit}", n / size)
            } else {
                format!("{:.1} {unit}", n as f64 / size as f64)
            };
        }
    }
    format!("{n} B")
}

/// A rate with a k/M suffix: `532`, `12.3k`, `1.23M`.
pub fn fmt_rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else if x >= 1e3 {
        format!("{:.2}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// Microseconds with sensible precision: `87.3`, `1234`, `12.1k`.
pub fn fmt_us(x: f64) -> String {
    if x >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// Megabytes per second: `0.85`, `12.3`, `1234`.
pub fn fmt_mbs(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 1.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// A ratio: `1.62×`; `–` when unknown.
pub fn fmt_ratio(x: Option<f64>) -> String {
    match x {
        Some(x) if x.is_finite() => format!("{x:.2}×"),
        _ => "–".to_string(),
    }
}

/// Milliseconds: `18.2 ms`.
pub fn fmt_ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// A plain-text table with right-aligned columns (the first `left` columns left-aligned).
#[derive(Debug)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    left: usize,
}

impl Table {
    pub fn new(headers: &[&str], left: usize) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            left,
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.headers.len();
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(width(c));
            }
        }
        let line = |cells: &[String]| {
            let mut out = String::from(" ");
            for (i, w) in widths.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                let pad = " ".repeat(w.saturating_sub(width(c)));
                if i < self.left {
                    out.push_str(c);
                    out.push_str(&pad);
                } else {
                    out.push_str(&pad);
                    out.push_str(c);
                }
                out.push_str("  ");
            }
            out.trim_end().to_string()
        };
        let mut out = line(&self.headers);
        out.push('\n');
        let total: usize = widths.iter().map(|w| w + 2).sum();
        out.push(' ');
        out.push_str(&"-".repeat(total.saturating_sub(2)));
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let lat = Latency::from_nanos((1..=1000).map(|i| i * 1000).collect());
        assert_eq!(lat.count, 1000);
        assert_eq!(lat.p50_us, 500.0);
        assert_eq!(lat.p99_us, 990.0);
        assert_eq!(lat.p999_us, 999.0);
        assert_eq!(lat.max_us, 1000.0);
        assert_eq!(Latency::from_nanos(vec![]).count, 0);
    }

    #[test]
    fn formats_sizes_and_rates() {
        assert_eq!(fmt_bytes(100), "100 B");
        assert_eq!(fmt_bytes(1024), "1 KiB");
        assert_eq!(fmt_bytes(6400), "6.2 KiB");
        assert_eq!(fmt_bytes(4 << 20), "4 MiB");
        assert_eq!(fmt_rate(532.4), "532");
        assert_eq!(fmt_rate(12_345.0), "12.3k");
        assert_eq!(fmt_rate(1_234_567.0), "1.23M");
        assert_eq!(fmt_ratio(Some(1.624)), "1.62×");
        assert_eq!(fmt_ratio(None), "–");
    }
}
