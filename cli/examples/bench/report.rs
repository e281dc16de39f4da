//! Samples and the markdown table: every row carries our median and p99, the reference's, and their ratio.

use std::time::Duration;

/// Repeated measurements of one thing.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<f64>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64());
    }

    pub fn push_value(&mut self, v: f64) {
        self.0.push(v);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The nearest-rank percentile (`p` in 0..=100).
    pub fn percentile(&self, p: f64) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    pub fn median(&self) -> f64 {
        self.percentile(50.0)
    }

    /// Blank (NaN) for a single measurement, where it would only repeat the median.
    pub fn p99(&self) -> f64 {
        if self.0.len() < 2 {
            return f64::NAN;
        }
        self.percentile(99.0)
    }
}

/// How a row's figures are shown.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    /// Seconds, shown in milliseconds.
    Millis,
    /// Bytes per second, shown in MiB/s (higher is better).
    MibPerSec,
    /// Bytes, shown in MiB.
    Mib,
    /// Fraction of one CPU core.
    Cores,
    /// A plain count.
    Count,
    /// A ratio.
    Times,
    /// Seconds, for spans too long for milliseconds.
    Seconds,
}

impl Unit {
    fn show(self, v: f64) -> String {
        if v.is_nan() {
            return String::new();
        }
        match self {
            Unit::Millis if v < 0.01 => format!("{:.2} ms", v * 1e3),
            Unit::Millis => format!("{:.1} ms", v * 1e3),
            Unit::MibPerSec => format!("{:.0} MiB/s", v / f64::from(1 << 20)),
            Unit::Mib => format!("{:.1} MiB", v / f64::from(1 << 20)),
            Unit::Cores => format!("{:.3} cores", v),
            Unit::Count => format!("{v:.0}"),
            Unit::Times => format!("{v:.2}×"),
            Unit::Seconds => format!("{v:.1} s"),
        }
    }
}

/// One line of the table: ours against a reference measured in the same run (when there is one).
#[derive(Debug, Clone)]
pub struct Row {
    pub measure: String,
    pub unit: Unit,
    pub ours: (f64, f64),
    pub reference: Option<(f64, f64)>,
    pub goal: String,
}

impl Row {
    /// A figure with no reference; its p99 is left blank when it is a single measurement.
    pub fn single(measure: impl Into<String>, unit: Unit, value: f64, goal: &str) -> Self {
        Self {
            measure: measure.into(),
            unit,
            ours: (value, f64::NAN),
            reference: None,
            goal: goal.into(),
        }
    }

    pub fn compared(
        measure: impl Into<String>,
        unit: Unit,
        ours: &Samples,
        reference: &Samples,
        goal: &str,
    ) -> Self {
        Self {
            measure: measure.into(),
            unit,
            ours: (ours.median(), ours.p99()),
            reference: Some((reference.median(), reference.p99())),
            goal: goal.into(),
        }
    }

    pub fn alone(measure: impl Into<String>, unit: Unit, ours: &Samples, goal: &str) -> Self {
        Self {
            measure: measure.into(),
            unit,
            ours: (ours.median(), ours.p99()),
            reference: None,
            goal: goal.into(),
        }
    }

    /// Ours over the reference, medians: below 1 is faster for times, above 1 faster for rates.
    fn ratio(&self) -> String {
        match self.reference {
            Some((r, _)) if r > 0.0 => format!("{:.2}", self.ours.0 / r),
            _ => String::new(),
        }
    }

    pub fn markdown(&self) -> String {
        let (rm, rp) = self.reference.unwrap_or((f64::NAN, f64::NAN));
        format!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            self.measure,
            self.unit.show(self.ours.0),
            self.unit.show(self.ours.1),
            self.unit.show(rm),
            self.unit.show(rp),
            self.ratio(),
            self.goal
        )
    }
}

pub const HEADER: &str = "| Measure | docker-agent median | p99 | Reference median | p99 | Ratio | Goal |\n|---|---|---|---|---|---|---|";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Samples::default();
        for v in 1..=100 {
            s.push_value(f64::from(v));
        }
        assert_eq!(s.median(), 50.0);
        assert_eq!(s.p99(), 99.0);
        assert_eq!(s.percentile(100.0), 100.0);
    }
}
