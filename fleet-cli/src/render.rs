//! Shared output helpers: tables and human times.

use comfy_table::{presets, ContentArrangement, Table};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A borderless, non-wrapping table (stable for scripts and snapshots).
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    t
}

/// Renders a table with trailing spaces trimmed from each line.
pub fn finish(t: Table) -> String {
    let mut out: String = t
        .to_string()
        .lines()
        .map(|l| format!("{}\n", l.trim_end()))
        .collect();
    if out.is_empty() {
        out.push('\n');
    }
    out
}

/// "12s ago", "5m ago", "3h ago", "2d ago"; the raw text when unparsable.
pub fn ago(rfc3339: &str, now: OffsetDateTime) -> String {
    let Ok(t) = OffsetDateTime::parse(rfc3339, &Rfc3339) else {
        return rfc3339.to_string();
    };
    let secs = (now - t).whole_seconds().max(0);
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

pub fn opt<T: std::fmt::Display>(v: Option<T>, unit: &str) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v}{unit}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times() {
        let now = OffsetDateTime::parse("2026-11-22T12:00:00Z", &Rfc3339).unwrap();
        assert_eq!(ago("2026-11-22T11:59:48Z", now), "12s ago");
        assert_eq!(ago("2026-11-22T11:55:00.5Z", now), "4m ago");
        assert_eq!(ago("2026-11-22T09:00:00Z", now), "3h ago");
        assert_eq!(ago("2026-11-19T12:00:00Z", now), "3d ago");
        assert_eq!(ago("yesterday", now), "yesterday");
    }
}
