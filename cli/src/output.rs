//! Printing: tables for people, the API's JSON for scripts, colour only on a terminal
//! (`anstream` drops it elsewhere and honours `NO_COLOR`).

use anstyle::{AnsiColor, Style};
use berth::http::wire::{Resources, Status};
use chrono::{DateTime, Utc};
use comfy_table::{presets, Cell, Color, ContentArrangement, Table};
use serde_json::Value;

use crate::args::Output;

/// Prints the API's JSON, pretty.
pub fn json(v: &Value) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => anstream::println!("{s}"),
        Err(_) => anstream::println!("{v}"),
    }
}

/// One table row from values of any printable type or ready [`Cell`]s.
#[macro_export]
macro_rules! row {
    ($($cell:expr),* $(,)?) => { vec![$(comfy_table::Cell::from($cell)),*] };
}

/// Prints a list: its JSON array, or a table of `rows` under `headers` (the wide columns
/// only with `-o wide`, each header marked by a leading `+`).
pub fn list(out: Output, raw: Vec<Value>, headers: &[&str], rows: Vec<Vec<Cell>>) {
    if out == Output::Json {
        return json(&Value::Array(raw));
    }
    let keep: Vec<usize> = headers
        .iter()
        .enumerate()
        .filter(|(_, h)| out == Output::Wide || !h.starts_with('+'))
        .map(|(i, _)| i)
        .collect();
    let mut t = Table::new();
    if anstream::AutoStream::choice(&std::io::stdout()) == anstream::ColorChoice::Never {
        t.force_no_tty();
    } else {
        t.enforce_styling();
    }
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(
            keep.iter()
                .map(|&i| Cell::new(headers[i].trim_start_matches('+'))),
        );
    for row in rows {
        let mut row = row.into_iter().map(Some).collect::<Vec<_>>();
        t.add_row(keep.iter().map(|&i| {
            row.get_mut(i)
                .and_then(Option::take)
                .unwrap_or_else(|| Cell::new(""))
        }));
    }
    for c in t.column_iter_mut() {
        c.set_padding((0, 3));
    }
    anstream::println!("{}", t.trim_fmt());
}

/// Prints `label: value` lines, aligned.
pub fn fields(pairs: &[(&str, String)]) {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    for (k, v) in pairs {
        anstream::println!("{:<width$} {v}", format!("{k}:"));
    }
}

fn status_colour(s: Status) -> AnsiColor {
    match s {
        Status::Running | Status::Succeeded => AnsiColor::Green,
        Status::Queued => AnsiColor::Yellow,
        Status::Failed => AnsiColor::Red,
        Status::Stopped | Status::Cancelled => AnsiColor::BrightBlack,
    }
}

/// A status, coloured on a terminal.
pub fn status(s: Status) -> String {
    paint(
        &wire_name(&s),
        Style::new().fg_color(Some(status_colour(s).into())),
    )
}

/// A status in a table, coloured on a terminal.
pub fn status_cell(s: Status) -> Cell {
    let colour = match status_colour(s) {
        AnsiColor::Green => Color::Green,
        AnsiColor::Yellow => Color::Yellow,
        AnsiColor::Red => Color::Red,
        _ => Color::DarkGrey,
    };
    Cell::new(wire_name(&s)).fg(colour)
}

pub fn paint(text: &str, style: Style) -> String {
    format!("{style}{text}{style:#}")
}

pub fn bold(text: &str) -> String {
    paint(text, Style::new().bold())
}

/// The snake_case name an enum has in the API's JSON.
pub fn wire_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => String::from("?"),
    }
}

pub fn cpu(millis: i64) -> String {
    if millis % 1000 == 0 {
        format!("{}", millis / 1000)
    } else if millis % 100 == 0 {
        format!("{:.1}", millis as f64 / 1000.0)
    } else {
        format!("{millis}m")
    }
}

pub fn memory(mib: i64) -> String {
    const GI: i128 = 1024;
    const TI: i128 = 1024 * 1024;
    let m = i128::from(mib);
    if m == 0 {
        "0".to_string()
    } else if m % TI == 0 {
        format!("{}Ti", m / TI)
    } else if m % GI == 0 {
        format!("{}Gi", m / GI)
    } else if m >= GI && (m * 10) % GI == 0 {
        format!("{:.1}Gi", mib as f64 / GI as f64)
    } else {
        format!("{mib}Mi")
    }
}

/// Text from the server made safe for a terminal: control characters (which could move the
/// cursor, retitle the window or clear the screen) shown as `\u{…}` escapes.
pub fn clean(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `8 cpu, 32Gi, 2 gpu`.
pub fn resources(r: &Resources) -> String {
    let mut parts = vec![format!("{} cpu", cpu(r.cpu_millis)), memory(r.memory_mib)];
    if r.gpus != 0 {
        parts.push(format!("{} gpu", r.gpus));
    }
    parts.join(", ")
}

/// How long ago, like kubectl's AGE: `45s`, `12m`, `3h`, `5d`.
pub fn age(at: DateTime<Utc>) -> String {
    let s = (Utc::now() - at).num_seconds().max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

pub fn time(at: Option<DateTime<Utc>>) -> String {
    at.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

/// `[#########-----------]  45%`: `used` of `total`, with the queued demand beyond it noted.
pub fn bar(used: i64, total: i64) -> String {
    const WIDTH: i64 = 24;
    if total <= 0 {
        return format!("[{}]   -", " ".repeat(WIDTH as usize));
    }
    let filled = ((used.clamp(0, total) as i128 * WIDTH as i128) / total as i128) as usize;
    let pct = (used as i128 * 100 / total as i128) as i64;
    let colour = match pct {
        90.. => AnsiColor::Red,
        70..=89 => AnsiColor::Yellow,
        _ => AnsiColor::Green,
    };
    format!(
        "[{}{}] {pct:>3}%",
        paint(
            &"#".repeat(filled),
            Style::new().fg_color(Some(colour.into()))
        ),
        "-".repeat(WIDTH as usize - filled)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_print_as_they_are_typed() {
        assert_eq!(cpu(64_000), "64");
        assert_eq!(cpu(1500), "1.5");
        assert_eq!(cpu(250), "250m");
        assert_eq!(memory(512), "512Mi");
        assert_eq!(memory(4096), "4Gi");
        assert_eq!(memory(1536), "1.5Gi");
        assert_eq!(memory(1_048_576), "1Ti");
        assert_eq!(memory(0), "0");
        assert_eq!(memory(i64::MAX), format!("{}Mi", i64::MAX));
        assert!(!memory(i64::MIN).is_empty());
        assert_eq!(cpu(i64::MAX), format!("{}m", i64::MAX));
    }

    #[test]
    fn server_text_cannot_drive_the_terminal() {
        assert_eq!(clean("exit 137"), "exit 137");
        let hostile = "\u{1b}]0;PWNED\u{7}\u{1b}[2Jred\u{9b}1m";
        let shown = clean(hostile);
        assert!(!shown.chars().any(char::is_control), "{shown}");
        assert!(shown.contains("PWNED") && shown.contains("red"));
    }

    #[test]
    fn bars_are_bounded() {
        let plain = |s: String| anstream::adapter::strip_str(&s).to_string();
        assert!(plain(bar(0, 10)).ends_with("  0%"));
        assert!(bar(5, 10).contains("50%"));
        assert!(bar(10, 10).contains("100%"));
        assert!(bar(3, 0).ends_with('-'));
        assert!(!bar(i64::MAX, i64::MAX).is_empty());
    }
}
