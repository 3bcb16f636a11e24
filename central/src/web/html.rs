//! The page frame, its styles, escaping and the number formats pages share.

/// Styles for every page: no external fonts or files. Cards stack on a
/// narrow screen and wide tables scroll inside their card, so the page
/// itself never runs off the right edge of a phone.
const STYLE: &str = "\
*{box-sizing:border-box}\
body{margin:0;font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d232a;background:#f2f4f7}\
header{display:flex;flex-wrap:wrap;gap:.4rem 1.2rem;align-items:center;padding:.6rem 1rem;background:#1d3557;color:#fff}\
header a,header button{color:#fff;font:inherit}\
header .brand{font-weight:600;margin-right:auto}\
header form{margin:0}\
header button{background:none;border:1px solid #fff8;border-radius:4px;padding:.15rem .6rem;cursor:pointer}\
main{padding:1rem;max-width:1200px;margin:0 auto}\
h1{font-size:1.4rem;margin:.2rem 0 1rem}\
h2{font-size:1.05rem;margin:0 0 .6rem}\
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,17rem),1fr));gap:1rem;margin-bottom:1rem}\
.card{background:#fff;border-radius:8px;padding:1rem;box-shadow:0 1px 2px #0002;min-width:0}\
.wide{grid-column:1/-1}\
.figure{font-size:2rem;font-weight:600}\
.muted{color:#5b6670;font-size:.9rem}\
.up{color:#1b7f3b}.down{color:#b3261e}\
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}\
table{border-collapse:collapse;width:100%}\
th,td{padding:.35rem .55rem;text-align:right;white-space:nowrap;border-bottom:1px solid #e3e7eb}\
th{font-size:.8rem;text-transform:uppercase;letter-spacing:.03em;color:#5b6670}\
th.text,td.text{text-align:left}\
form.filters{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:end;margin-bottom:1rem}\
form.filters label{display:flex;flex-direction:column;font-size:.8rem;color:#5b6670}\
form.filters input{font:inherit;padding:.25rem .4rem;width:9rem;max-width:100%}\
form.filters button,.button{font:inherit;padding:.3rem .9rem;border-radius:4px;border:1px solid #1d3557;background:#1d3557;color:#fff;cursor:pointer;text-decoration:none}\
.download{font-size:.85rem;margin-top:.5rem;display:inline-block}\
.error{background:#fdecea;color:#b3261e;padding:1rem;border-radius:8px}\
svg.chart{width:100%;height:auto;display:block}\
fieldset{border:0;padding:0;margin:0;display:flex;flex-wrap:wrap;gap:.3rem 1rem}\
";

/// A whole page: `nav_query` is the period kept by the header's links.
pub fn frame(title: &str, nav_query: &str, body: &str) -> String {
    let q = if nav_query.is_empty() {
        String::new()
    } else {
        format!("?{}", escape(nav_query))
    };
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><link rel=\"icon\" href=\"data:,\">\
         <title>{title}</title><style>{STYLE}</style></head><body>\
         <header><span class=\"brand\">Pressline reports</span>\
         <a href=\"/{q}\">Network</a><a href=\"/compare{q}\">Compare</a>\
         <form method=\"post\" action=\"/logout\"><button>Sign out</button></form></header>\
         <main>{body}</main></body></html>",
        title = escape(title),
    )
}

/// Text made safe inside HTML and SVG, attributes included.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An index as `fleet report` prints it: one decimal, `–` for none.
pub fn index(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.1}"))
}

/// A change with its sign and a colour class.
pub fn change(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v > 0.0 => format!("<span class=\"up\">{v:+.1}</span>"),
        Some(v) if v < 0.0 => format!("<span class=\"down\">{v:+.1}</span>"),
        Some(v) => format!("{v:+.1}"),
    }
}

/// "45 s", "12 min", "3 h 05 min"; `–` for none.
pub fn duration(secs: Option<i64>) -> String {
    match secs {
        None => "–".into(),
        Some(s) if s < 60 => format!("{s} s"),
        Some(s) if s < 3600 => format!("{} min", s / 60),
        Some(s) => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

/// The filter form: the period fields, and what else the page keeps.
pub fn filter_form(action: &str, f: &super::filters::Filters, extra: &str) -> String {
    format!(
        "<form class=\"filters\" method=\"get\" action=\"{action}\">\
         <label>Last day<input type=\"date\" name=\"to\" value=\"{to}\"></label>\
         <label>Days<input type=\"number\" name=\"days\" min=\"1\" value=\"{days}\"></label>\
         <label>Weeks of hours<input type=\"number\" name=\"weeks\" min=\"1\" value=\"{weeks}\"></label>\
         <label>Ranking prior (presses)<input type=\"number\" name=\"prior\" min=\"0\" value=\"{prior}\"></label>\
         {extra}<button>Show</button></form>",
        to = pressline_reports::fmt_date(f.to),
        days = f.days,
        weeks = f.weeks,
        prior = f.prior_presses,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_gateways_cannot_inject_markup() {
        assert_eq!(
            escape("<script>\"x\"&'y'"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;"
        );
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(Some(45)), "45 s");
        assert_eq!(duration(Some(725)), "12 min");
        assert_eq!(duration(Some(3 * 3600 + 300)), "3 h 05 min");
        assert_eq!(duration(None), "–");
    }
}
