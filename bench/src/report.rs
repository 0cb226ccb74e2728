//! Statistics over runs, units, and the Markdown tables benchmarks print.

use std::fmt::Write as _;
use std::time::Duration;

/// The median of `times` (the mean of the middle two for an even count); zero when empty.
pub fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    match sorted.len() {
        0 => Duration::ZERO,
        count if count % 2 == 1 => sorted[count / 2],
        count => (sorted[count / 2 - 1] + sorted[count / 2]) / 2,
    }
}

/// The value at `fraction` (0.5, 0.99) of `times` by the nearest-rank method: the smallest
/// time with at least that share of the times at or below it. Zero when empty.
pub fn percentile(times: &[Duration], fraction: f64) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (fraction.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The mean of `times`; zero when empty.
pub fn mean(times: &[Duration]) -> Duration {
    match u32::try_from(times.len()) {
        Ok(0) | Err(_) => Duration::ZERO,
        Ok(count) => times.iter().sum::<Duration>() / count,
    }
}

/// Milliseconds with one decimal: `12.3 ms`.
pub fn millis(time: Duration) -> String {
    format!("{:.1} ms", time.as_secs_f64() * 1000.0)
}

/// Seconds with three decimals: `1.234 s`.
pub fn seconds(time: Duration) -> String {
    format!("{:.3} s", time.as_secs_f64())
}

/// The fastest and slowest of `times`: `1.200–1.350`.
pub fn spread(times: &[Duration]) -> String {
    let fastest = times.iter().min().copied().unwrap_or_default();
    let slowest = times.iter().max().copied().unwrap_or_default();
    format!("{:.3}–{:.3}", fastest.as_secs_f64(), slowest.as_secs_f64())
}

/// Throughput in MiB/s.
pub fn mib_per_second(bytes: u64, time: Duration) -> String {
    let seconds = time.as_secs_f64();
    if seconds <= 0.0 {
        return "–".to_string();
    }
    format!("{:.0} MiB/s", bytes as f64 / f64::from(1 << 20) / seconds)
}

/// A size in MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// How many times longer the peer took than Sorat: above 1 means Sorat was faster.
pub fn ratio(peer: Duration, sorat: Duration) -> String {
    if sorat.is_zero() {
        return "–".to_string();
    }
    format!("{:.2}x", peer.as_secs_f64() / sorat.as_secs_f64())
}

/// A Markdown table whose columns are padded to line up in a terminal too.
#[derive(Clone, Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|header| (*header).to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are left empty, extra ones are dropped.
    pub fn row(&mut self, mut cells: Vec<String>) {
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// The table as Markdown; the first column is left-aligned, the others right-aligned.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|column| {
                std::iter::once(&self.headers)
                    .chain(&self.rows)
                    .map(|row| row[column].chars().count())
                    .max()
                    .unwrap_or(0)
                    .max(3)
            })
            .collect();
        let line = |cells: &[String]| {
            let mut text = String::from("|");
            for (column, cell) in cells.iter().enumerate() {
                let width = widths[column];
                let _ = if column == 0 {
                    write!(text, " {cell:<width$} |")
                } else {
                    write!(text, " {cell:>width$} |")
                };
            }
            text.push('\n');
            text
        };
        let mut text = line(&self.headers);
        text.push('|');
        for (column, width) in widths.iter().enumerate() {
            let dashes = "-".repeat(width.saturating_sub(1));
            let _ = if column == 0 {
                write!(text, " {dashes}- |")
            } else {
                write!(text, " {dashes}: |")
            };
        }
        text.push('\n');
        for row in &self.rows {
            text.push_str(&line(row));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        let ms = Duration::from_millis;
        let cases: &[(&[Duration], Duration)] = &[
            (&[], Duration::ZERO),
            (&[ms(5)], ms(5)),
            (&[ms(9), ms(1), ms(5)], ms(5)),
            (&[ms(4), ms(1), ms(2), ms(3)], Duration::from_micros(2500)),
        ];
        for (times, expected) in cases {
            assert_eq!(median(times), *expected, "{times:?}");
        }
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let times: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&times, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&times, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&times, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&times, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        assert_eq!(mean(&times), Duration::from_micros(50_500));
    }

    #[test]
    fn ratio_above_one_means_sorat_was_faster() {
        let ratio = ratio(Duration::from_secs(3), Duration::from_secs(2));
        assert_eq!(ratio, "1.50x");
    }

    #[test]
    fn a_table_lines_up() {
        let mut table = Table::new(&["set", "time"]);
        table.row(vec!["node_modules".into(), "1.5 s".into()]);
        table.row(vec!["t".into()]);
        assert_eq!(
            table.render(),
            "| set          |  time |\n\
             | ------------ | ----: |\n\
             | node_modules | 1.5 s |\n\
             | t            |       |\n"
        );
    }
}
