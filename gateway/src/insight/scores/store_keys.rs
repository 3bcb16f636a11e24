//! Keys of the engine's day records in the store (tree `scores`): site
//! days and terminal days, by local day, so a day's records are one range.

/// Store key of a site day record: `s`, local day (BE).
pub fn site_day_key(day: i64) -> Vec<u8> {
    let mut k = vec![b's'];
    k.extend_from_slice(&(day.clamp(0, u32::MAX.into()) as u32).to_be_bytes());
    k
}

/// Store key of a terminal day record: `t`, local day (BE), terminal id.
pub fn terminal_day_key(day: i64, terminal: &str) -> Vec<u8> {
    let mut k = vec![b't'];
    k.extend_from_slice(&(day.clamp(0, u32::MAX.into()) as u32).to_be_bytes());
    k.extend_from_slice(terminal.as_bytes());
    k
}

/// Parses a key of either kind: (day, terminal if any).
pub fn parse_day_key(key: &[u8]) -> Option<(i64, Option<&str>)> {
    let (&kind, rest) = key.split_first()?;
    let day = i64::from(u32::from_be_bytes(rest.get(..4)?.try_into().ok()?));
    match kind {
        b's' if rest.len() == 4 => Some((day, None)),
        b't' => Some((day, Some(std::str::from_utf8(&rest[4..]).ok()?))),
        _ => None,
    }
}

/// Key prefix of all site day records, and of a day's terminal records.
pub const SITE_DAYS: &[u8] = b"s";
pub fn terminal_days_of(day: i64) -> Vec<u8> {
    terminal_day_key(day, "")
}
