//! How values read on the dashboard: sizes, ages, durations, state badges, and terminal output made
//! safe to show as text.

use docker_agent_proto::v1::Stream;

use crate::lifecycle::{Connection, Lifecycle};
use crate::store::now_ms;

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// An axis label: whole numbers without decimals ("512 MiB", "1 GiB", "1.5 GiB").
pub fn bytes_short(n: u64) -> String {
    bytes(n).replace(".0 ", " ")
}

/// "3s", "4m 10s", "2h 5m", "3d 4h".
pub fn duration_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms}ms"),
        0..60 => format!("{:.1}s", ms as f64 / 1000.0),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

/// "12s ago"; "never" for 0.
pub fn ago(at_ms: i64) -> String {
    if at_ms <= 0 {
        return "never".into();
    }
    let d = (now_ms() - at_ms).max(0) as u64;
    if d < 1000 {
        "just now".into()
    } else {
        format!("{} ago", duration_ms(d - d % 1000))
    }
}

/// UTC wall-clock time, to the second.
pub fn clock(at_ms: i64) -> String {
    if at_ms <= 0 {
        return "—".into();
    }
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at_ms as u64);
    let text = humantime::format_rfc3339_seconds(at).to_string();
    text.replace('T', " ").trim_end_matches('Z').to_string() + " UTC"
}

/// A state as a badge: a colour class and a symbol, so it also reads without colour.
#[derive(Debug, Clone)]
pub struct Badge {
    pub text: String,
    pub class: &'static str,
    pub symbol: &'static str,
}

pub fn lifecycle_badge(l: Lifecycle) -> Badge {
    let (class, symbol) = match l {
        Lifecycle::Ready => ("ok", "●"),
        Lifecycle::Creating | Lifecycle::Starting | Lifecycle::Rescheduled => ("busy", "◐"),
        Lifecycle::StartError => ("bad", "✕"),
        Lifecycle::Stopping => ("busy", "◑"),
        Lifecycle::Stopped => ("off", "■"),
        Lifecycle::Destroyed => ("off", "✕"),
    };
    Badge {
        text: l.as_str().replace('_', " "),
        class,
        symbol,
    }
}

pub fn connection_badge(c: Connection) -> Badge {
    let (class, symbol) = match c {
        Connection::Connected => ("ok", "⇄"),
        Connection::Connecting => ("busy", "…"),
        Connection::Disconnected => ("off", "⊘"),
        Connection::Timeout => ("bad", "⌛"),
    };
    Badge {
        text: c.as_str().to_string(),
        class,
        symbol,
    }
}

pub fn task_badge(state: &str, failed: bool) -> Badge {
    let (class, symbol) = match state {
        "finished" if failed => ("bad", "✕"),
        "finished" => ("ok", "✓"),
        "running" | "dispatched" => ("busy", "▶"),
        "queued" => ("busy", "…"),
        "lost" => ("bad", "?"),
        _ => ("off", "■"),
    };
    let text = if state == "finished" && failed {
        "failed".to_string()
    } else {
        state.to_string()
    };
    Badge {
        text,
        class,
        symbol,
    }
}

/// Terminal output as plain text: escape sequences (colours, cursor moves, titles) removed, invalid
/// UTF-8 replaced. HTML escaping is the template's job.
pub fn plain_text(bytes: &[u8]) -> String {
    PlainText::default().text(Stream::Stdout, bytes)
}

/// A task's output as plain text, chunk after chunk, as `plain_text` makes it. An escape sequence or
/// a character split between two chunks comes out whole: each stream has its own parser, which
/// carries what it has begun into that stream's next chunk.
#[derive(Default)]
pub struct PlainText {
    stdout: vte::Parser,
    stderr: vte::Parser,
}

impl PlainText {
    pub fn text(&mut self, stream: Stream, bytes: &[u8]) -> String {
        let parser = match stream {
            Stream::Stderr => &mut self.stderr,
            _ => &mut self.stdout,
        };
        let mut printed = Printed(String::with_capacity(bytes.len()));
        parser.advance(&mut printed, bytes);
        printed.0
    }
}

/// What a terminal would print: characters, line feeds and tabs; every other control is dropped.
struct Printed(String);

impl vte::Perform for Printed {
    fn print(&mut self, c: char) {
        self.0.push(c);
    }

    fn execute(&mut self, byte: u8) {
        if byte == b'\n' || byte == b'\t' {
            self.0.push(char::from(byte));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(bytes_short(512 << 20), "512 MiB");
        assert_eq!(duration_ms(250), "250ms");
        assert_eq!(duration_ms(1500), "1.5s");
        assert_eq!(duration_ms(250_000), "4m 10s");
        assert_eq!(duration_ms(2 * 3_600_000 + 5 * 60_000), "2h 5m");
        assert_eq!(ago(0), "never");
        assert_eq!(clock(1_000), "1970-01-01 00:00:01 UTC");
    }

    #[test]
    fn escape_sequences_are_removed_and_markup_is_left_for_the_template() {
        assert_eq!(
            plain_text(b"\x1b[31mred\x1b[0m <b>x</b>\x1b]0;title\x07"),
            "red <b>x</b>"
        );
        assert_eq!(plain_text(b"bad \xff utf8"), "bad \u{fffd} utf8");
    }

    #[test]
    fn sequences_and_characters_split_between_chunks_leave_no_fragments() {
        let whole = "\x1b[1;31mred\x1b[0m é\x1b]0;a title\x07 done\n".as_bytes();
        for cut in 1..whole.len() {
            let mut plain = PlainText::default();
            // Stderr in between has its own parser and does not disturb stdout's.
            let mut text = plain.text(Stream::Stdout, &whole[..cut]);
            assert_eq!(plain.text(Stream::Stderr, b"\x1b[3"), "");
            text += &plain.text(Stream::Stdout, &whole[cut..]);
            assert_eq!(text, "red é done\n", "cut at {cut}");
        }
    }

    #[test]
    fn states_carry_a_symbol_besides_colour() {
        let b = lifecycle_badge(Lifecycle::StartError);
        assert_eq!(
            (b.text.as_str(), b.class, b.symbol),
            ("start error", "bad", "✕")
        );
        assert_eq!(task_badge("finished", true).text, "failed");
    }
}
