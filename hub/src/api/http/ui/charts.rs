//! Server-rendered SVG line charts of an agent's last hour (CPU, memory). Only numbers go into the
//! markup, so nothing an agent sends can inject into it.

use std::fmt::Write;

use crate::core::health::{Sample, WINDOW};
use crate::store::now_ms;

const W: f64 = 600.0;
const H: f64 = 140.0;
const PAD_L: f64 = 68.0;
const PAD_B: f64 = 20.0;
const PAD_T: f64 = 8.0;

/// One chart: a title for screen readers, a y-axis maximum and label format, and (time, value) points.
fn chart(title: &str, points: &[(i64, f64)], max: f64, label: impl Fn(f64) -> String) -> String {
    let now = now_ms();
    let start = now - WINDOW.as_millis() as i64;
    let max = if max > 0.0 { max } else { 1.0 };
    let x = |t: i64| PAD_L + (t - start) as f64 / WINDOW.as_millis() as f64 * (W - PAD_L);
    let y = |v: f64| PAD_T + (1.0 - (v / max).clamp(0.0, 1.0)) * (H - PAD_T - PAD_B);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{title}" preserveAspectRatio="none">"#
    );
    for frac in [0.0, 0.5, 1.0] {
        let v = max * frac;
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{PAD_L}" x2="{W}" y1="{y:.1}" y2="{y:.1}"/><text class="axis" x="{lx}" y="{ty:.1}" text-anchor="end">{label}</text>"#,
            y = y(v),
            lx = PAD_L - 6.0,
            ty = y(v) + 4.0,
            label = label(v),
        );
    }
    for (mins, anchor) in [(60, "start"), (30, "middle"), (0, "end")] {
        let t = now - mins * 60_000;
        let text = if mins == 0 {
            "now".to_string()
        } else {
            format!("-{mins}m")
        };
        let _ = write!(
            svg,
            r#"<text class="axis" x="{x:.1}" y="{ty}" text-anchor="{anchor}">{text}</text>"#,
            x = x(t),
            ty = H - 4.0,
        );
    }
    if points.is_empty() {
        let _ = write!(
            svg,
            r#"<text class="empty" x="{cx}" y="{cy}" text-anchor="middle">no heartbeats in the last hour</text>"#,
            cx = (W + PAD_L) / 2.0,
            cy = H / 2.0,
        );
    } else {
        let line: Vec<String> = points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        let base = H - PAD_B;
        let first = x(points[0].0);
        let last = x(points[points.len() - 1].0);
        let _ = write!(
            svg,
            r#"<polygon class="area" points="{first:.1},{base} {line} {last:.1},{base}"/><polyline class="line" points="{line}"/>"#,
            line = line.join(" "),
        );
        // The latest value as a dot, so even a single sample shows.
        let (t, v) = points[points.len() - 1];
        let _ = write!(
            svg,
            r#"<circle class="dot" cx="{:.1}" cy="{:.1}" r="3"/>"#,
            x(t),
            y(v)
        );
    }
    svg.push_str("</svg>");
    svg
}

pub fn cpu(samples: &[Sample], cpus: f64) -> String {
    let points: Vec<(i64, f64)> = samples
        .iter()
        .map(|s| (s.at_ms, s.cpu_percent as f64))
        .collect();
    // The agent's CPU limit if it has one, else whatever the data reached (at least one core).
    let peak = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let max = if cpus > 0.0 {
        cpus * 100.0
    } else {
        peak.max(100.0)
    };
    chart("CPU over the last hour", &points, max, |v| {
        format!("{v:.0}%")
    })
}

pub fn memory(samples: &[Sample], limit: u64) -> String {
    let points: Vec<(i64, f64)> = samples
        .iter()
        .map(|s| (s.at_ms, s.memory_bytes as f64))
        .collect();
    let limit = samples
        .last()
        .map(|s| s.memory_limit)
        .filter(|l| *l > 0)
        .unwrap_or(limit);
    let peak = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let max = if limit > 0 { limit as f64 } else { peak * 1.2 };
    chart("Memory over the last hour", &points, max, |v| {
        super::view::bytes_short(v as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_plot_the_samples_against_the_limit() {
        let now = now_ms();
        let samples = [
            Sample {
                at_ms: now - 60_000,
                cpu_percent: 50.0,
                memory_bytes: 512 << 20,
                memory_limit: 1 << 30,
            },
            Sample {
                at_ms: now,
                cpu_percent: 100.0,
                memory_bytes: 1 << 30,
                memory_limit: 1 << 30,
            },
        ];
        let svg = memory(&samples, 0);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("1 GiB") && svg.contains("512 MiB"), "{svg}");
        assert!(svg.contains("<polyline"), "{svg}");
        // The newest full-limit sample sits on the top grid line, at the right edge.
        assert!(svg.contains(&format!("{:.1},{:.1}", W, PAD_T)), "{svg}");
        let svg = cpu(&[], 2.0);
        assert!(
            svg.contains("no heartbeats") && svg.contains("200%"),
            "{svg}"
        );
    }
}
