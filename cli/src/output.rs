//! Human output: aligned tables, sizes, ages and durations.

use std::fmt::Write;

/// Renders rows as left-aligned columns separated by three spaces, like `docker ps`.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i + 1 == widths.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}   ", width = widths[i]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value >= 100.0 {
        format!("{value:.0}{}", UNITS[unit])
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

/// A compact duration: 45s, 12m, 3h, 2d.
pub fn span(ms: i64) -> String {
    let s = (ms.max(0) / 1000) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

pub fn now_ms() -> i64 {
    docker_agent_hub::store::now_ms()
}

/// "5m ago", or "-" for a zero timestamp.
pub fn ago(at_ms: i64) -> String {
    if at_ms <= 0 {
        "-".into()
    } else {
        format!("{} ago", span(now_ms() - at_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["NAME", "STATE"],
            &[
                vec!["a".into(), "ready".into()],
                vec!["long-name".into(), "x".into()],
            ],
        );
        assert_eq!(t, "NAME        STATE\na           ready\nlong-name   x\n");
    }

    #[test]
    fn human_units() {
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1536), "1.5KiB");
        assert_eq!(bytes(1 << 30), "1.0GiB");
        assert_eq!(span(59_000), "59s");
        assert_eq!(span(120_000), "2m");
        assert_eq!(span(3 * 3_600_000), "3h");
        assert_eq!(ago(0), "-");
    }
}
