//! Charts drawn on the server as SVG: plain shapes and text, so a browser
//! shows them without scripts and the e-mailed reports can rasterise the
//! same drawing.

use pressline_reports::ranking::{HourCell, WEEKDAYS};
use pressline_reports::site::Week;

use super::html::escape;

const WIDTH: f64 = 720.0;
const FONT: &str = "font-family=\"DejaVu Sans, Arial, sans-serif\"";
/// Line colours of the series, in turn (distinguishable with the common
/// colour-vision deficiencies).
const PALETTE: [&str; 6] = [
    "#1d3557", "#e76f51", "#2a9d8f", "#8e44ad", "#e9c46a", "#6c757d",
];

/// The colour of an index: red at 0, amber at 50, green at 100.
pub fn index_colour(index: f64) -> String {
    let stops = [
        (0.0, [179, 38, 30]),
        (50.0, [245, 190, 65]),
        (100.0, [27, 127, 59]),
    ];
    let v = index.clamp(0.0, 100.0);
    let (a, b) = if v <= 50.0 {
        (stops[0], stops[1])
    } else {
        (stops[1], stops[2])
    };
    let t = (v - a.0) / (b.0 - a.0);
    let c: Vec<u8> = (0..3)
        .map(|i| (f64::from(a.1[i]) + t * (f64::from(b.1[i]) - f64::from(a.1[i]))).round() as u8)
        .collect();
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The Happy Index per week, one line per series; a week without presses
/// breaks the line.
pub fn trend(series: &[(String, Vec<Week>)]) -> String {
    let (left, right, top, bottom) = (36.0, 12.0, 12.0, 40.0);
    let height = 240.0;
    let plot_w = WIDTH - left - right;
    let plot_h = height - top - bottom;
    let weeks = series.iter().map(|(_, w)| w.len()).max().unwrap_or(0);
    let x = |i: usize| left + plot_w * i as f64 / (weeks.max(2) - 1) as f64;
    let y = |v: f64| top + plot_h * (100.0 - v.clamp(0.0, 100.0)) / 100.0;
    let mut svg = format!(
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height}\" \
         width=\"{WIDTH}\" height=\"{height}\" role=\"img\" aria-label=\"Happy Index per week\" {FONT} font-size=\"11\">\
         <rect width=\"{WIDTH}\" height=\"{height}\" fill=\"#ffffff\"/>"
    );
    for v in [0.0, 25.0, 50.0, 75.0, 100.0] {
        svg.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e3e7eb\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#5b6670\">{v}</text>",
            WIDTH - right,
            left - 6.0,
            y(v) + 4.0,
            y = y(v),
        ));
    }
    // Month labels under the first week of each month; the chart's first
    // month only when it has room before the next, with its year (as
    // January has).
    if let Some((_, first)) = series.first() {
        let mut starts: Vec<(f64, i32, u8)> = Vec::new();
        for (i, w) in first.iter().enumerate() {
            let month = (w.from.year(), u8::from(w.from.month()));
            if starts.last().is_none_or(|s| (s.1, s.2) != month) {
                starts.push((x(i), month.0, month.1));
            }
        }
        if starts.len() > 1 && starts[1].0 - starts[0].0 < 64.0 {
            starts.remove(0);
        }
        // Where the last label ends (about 6.5 units a character at 11).
        let mut last_end = f64::NEG_INFINITY;
        for (n, (at, year, month)) in starts.into_iter().enumerate() {
            if at < last_end {
                continue;
            }
            let name = MONTHS[usize::from(month.clamp(1, 12) - 1)];
            let label = if n == 0 || month == 1 {
                format!("{name} {year}")
            } else {
                name.to_string()
            };
            svg.push_str(&format!(
                "<text x=\"{at:.1}\" y=\"{}\" fill=\"#5b6670\">{label}</text>",
                height - bottom + 16.0
            ));
            last_end = at + label.len() as f64 * 6.5 + 8.0;
        }
    }
    for (n, (name, weeks)) in series.iter().enumerate() {
        let colour = PALETTE[n % PALETTE.len()];
        let mut path = String::new();
        let mut pen_down = false;
        for (i, w) in weeks.iter().enumerate() {
            match w.happy_index {
                Some(v) => {
                    path.push_str(&format!(
                        "{}{:.1},{:.1} ",
                        if pen_down { "L" } else { "M" },
                        x(i),
                        y(v)
                    ));
                    pen_down = true;
                    svg.push_str(&format!(
                        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{colour}\"><title>{} week of {}: {v:.1} ({} presses)</title></circle>",
                        x(i),
                        y(v),
                        escape(name),
                        pressline_reports::fmt_date(w.from),
                        w.presses
                    ));
                }
                None => pen_down = false,
            }
        }
        if !path.is_empty() {
            svg.push_str(&format!(
                "<path d=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>",
                path.trim_end()
            ));
        }
        if series.len() > 1 {
            let lx = left + 8.0 + 150.0 * n as f64;
            svg.push_str(&format!(
                "<rect x=\"{lx}\" y=\"{}\" width=\"12\" height=\"4\" fill=\"{colour}\"/>\
                 <text x=\"{}\" y=\"{}\" fill=\"#1d232a\">{}</text>",
                height - 12.0,
                lx + 16.0,
                height - 7.0,
                escape(name)
            ));
        }
    }
    svg.push_str("</svg>");
    svg
}

/// Hour × weekday cells coloured by their index, the index written in
/// each; hours from the first to the last with presses.
pub fn heat_map(cells: &[HourCell]) -> String {
    let lo = cells.iter().map(|c| c.hour).min().unwrap_or(0);
    let hi = cells.iter().map(|c| c.hour).max().unwrap_or(23).max(lo);
    let columns = f64::from(hi - lo + 1);
    let (left, top) = (40.0, 22.0);
    let cell_w = ((WIDTH - left) / columns).min(60.0);
    let cell_h = 26.0;
    let width = left + cell_w * columns;
    let height = top + cell_h * 7.0;
    let mut svg = format!(
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width:.0} {height:.0}\" \
         width=\"{width:.0}\" height=\"{height:.0}\" role=\"img\" aria-label=\"Happy Index by hour and weekday\" {FONT} font-size=\"10\">\
         <rect width=\"{width:.0}\" height=\"{height:.0}\" fill=\"#ffffff\"/>"
    );
    for hour in lo..=hi {
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"14\" text-anchor=\"middle\" fill=\"#5b6670\">{hour:02}</text>",
            left + cell_w * f64::from(hour - lo) + cell_w / 2.0
        ));
    }
    for (row, day) in WEEKDAYS.iter().enumerate() {
        let y = top + cell_h * row as f64;
        svg.push_str(&format!(
            "<text x=\"4\" y=\"{:.1}\" fill=\"#5b6670\">{day}</text>",
            y + cell_h / 2.0 + 4.0
        ));
        for hour in lo..=hi {
            let x = left + cell_w * f64::from(hour - lo);
            let cell = cells.iter().find(|c| c.weekday == *day && c.hour == hour);
            let (fill, label, title) = match cell.and_then(|c| c.happy_index.map(|i| (c, i))) {
                Some((c, i)) => (
                    index_colour(i),
                    format!("{i:.0}"),
                    format!("{day} {hour:02}:00: {i:.1} ({} presses)", c.presses),
                ),
                None => (
                    "#eef0f2".into(),
                    String::new(),
                    format!("{day} {hour:02}:00: no presses"),
                ),
            };
            svg.push_str(&format!(
                "<g><title>{title}</title><rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#1d232a\">{label}</text></g>",
                x + 1.0,
                cell_w - 2.0,
                cell_h - 2.0,
                x + cell_w / 2.0,
                y + cell_h / 2.0 + 4.0
            ));
        }
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn colours_run_from_red_through_amber_to_green() {
        assert_eq!(index_colour(0.0), "#b3261e");
        assert_eq!(index_colour(50.0), "#f5be41");
        assert_eq!(index_colour(100.0), "#1b7f3b");
        assert_eq!(index_colour(250.0), "#1b7f3b");
    }

    #[test]
    fn a_week_without_presses_breaks_the_line() {
        let week = |d, i: Option<f64>| Week {
            from: d,
            presses: if i.is_some() { 10 } else { 0 },
            happy_index: i,
        };
        let svg = trend(&[(
            "arena".into(),
            vec![
                week(date!(2026 - 03 - 02), Some(60.0)),
                week(date!(2026 - 03 - 09), Some(70.0)),
                week(date!(2026 - 03 - 16), None),
                week(date!(2026 - 03 - 23), Some(50.0)),
            ],
        )]);
        let path = svg
            .split("<path d=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(path.matches('M').count(), 2, "{path}");
        assert_eq!(svg.matches("<circle").count(), 3);
    }

    #[test]
    fn the_heat_map_writes_each_cells_index_and_its_presses() {
        let cells = [HourCell {
            weekday: "sat",
            hour: 12,
            presses: 8,
            happy_index: Some(62.6),
        }];
        let svg = heat_map(&cells);
        assert!(svg.contains(">63</text>"), "{svg}");
        assert!(svg.contains("sat 12:00: 62.6 (8 presses)"));
    }
}
