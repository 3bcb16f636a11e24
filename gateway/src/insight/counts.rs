//! Press counts and the day records reports are built from: compact, so
//! that what the gateway keeps follows configuration (terminals, days of
//! aggregate retention), not the number of presses.

use pressline_protocol::Button;
use serde::Serialize;

/// Presses per button, and presses not counted as opinions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub very_unhappy: u32,
    pub unhappy: u32,
    pub happy: u32,
    pub very_happy: u32,
    pub not_counted: u32,
}

impl Counts {
    pub fn add(&mut self, button: Button, counted: bool) {
        if !counted {
            self.not_counted = self.not_counted.saturating_add(1);
            return;
        }
        let slot = match button {
            Button::VeryUnhappy => &mut self.very_unhappy,
            Button::Unhappy => &mut self.unhappy,
            Button::Happy => &mut self.happy,
            Button::VeryHappy => &mut self.very_happy,
        };
        *slot = slot.saturating_add(1);
    }

    pub fn merge(&mut self, other: &Counts) {
        self.very_unhappy = self.very_unhappy.saturating_add(other.very_unhappy);
        self.unhappy = self.unhappy.saturating_add(other.unhappy);
        self.happy = self.happy.saturating_add(other.happy);
        self.very_happy = self.very_happy.saturating_add(other.very_happy);
        self.not_counted = self.not_counted.saturating_add(other.not_counted);
    }

    /// Takes `other` away again (a day leaving the aggregate retention).
    pub fn subtract(&mut self, other: &Counts) {
        self.very_unhappy = self.very_unhappy.saturating_sub(other.very_unhappy);
        self.unhappy = self.unhappy.saturating_sub(other.unhappy);
        self.happy = self.happy.saturating_sub(other.happy);
        self.very_happy = self.very_happy.saturating_sub(other.very_happy);
        self.not_counted = self.not_counted.saturating_sub(other.not_counted);
    }

    pub fn counted(&self) -> u64 {
        u64::from(self.very_unhappy)
            + u64::from(self.unhappy)
            + u64::from(self.happy)
            + u64::from(self.very_happy)
    }

    pub fn is_empty(&self) -> bool {
        *self == Counts::default()
    }

    /// The figures the API shows.
    pub fn figures(&self) -> Figures {
        let counted = self.counted();
        let share = |n: u32, m: u32| (counted > 0).then(|| f64::from(n + m) / counted as f64);
        Figures {
            very_unhappy: self.very_unhappy.into(),
            unhappy: self.unhappy.into(),
            happy: self.happy.into(),
            very_happy: self.very_happy.into(),
            counted,
            not_counted: self.not_counted.into(),
            satisfaction: share(self.happy, self.very_happy),
            unhappy_share: share(self.unhappy, self.very_unhappy),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        for v in [
            self.very_unhappy,
            self.unhappy,
            self.happy,
            self.very_happy,
            self.not_counted,
        ] {
            put_varint(out, v);
        }
    }

    fn decode(r: &mut &[u8]) -> Option<Counts> {
        Some(Counts {
            very_unhappy: take_varint(r)?,
            unhappy: take_varint(r)?,
            happy: take_varint(r)?,
            very_happy: take_varint(r)?,
            not_counted: take_varint(r)?,
        })
    }
}

/// Press counts and the satisfaction index, as the API shows them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    pub very_unhappy: u64,
    pub unhappy: u64,
    pub happy: u64,
    pub very_happy: u64,
    /// Presses counted as opinions (the four above).
    pub counted: u64,
    /// Presses the misuse filter did not count.
    pub not_counted: u64,
    /// Share (0–1) of happy + very happy among counted presses.
    pub satisfaction: Option<f64>,
    /// Share (0–1) of unhappy + very unhappy among counted presses.
    pub unhappy_share: Option<f64>,
}

/// Slots of a local day: 96 quarters of an hour.
pub const SLOTS: u8 = 96;
pub const SLOT_MS: i64 = 15 * 60_000;

/// One local day's counts per quarter hour (only the quarters with
/// presses: a terminal pressed now and then costs a few bytes a day).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaySlots {
    /// (slot, counts), sorted by slot.
    slots: Vec<(u8, Counts)>,
}

impl DaySlots {
    pub fn add(&mut self, slot: u8, button: Button, counted: bool) {
        self.slot_mut(slot).add(button, counted);
    }

    fn slot_mut(&mut self, slot: u8) -> &mut Counts {
        let i = match self.slots.binary_search_by_key(&slot, |(s, _)| *s) {
            Ok(i) => i,
            Err(i) => {
                self.slots.insert(i, (slot, Counts::default()));
                i
            }
        };
        &mut self.slots[i].1
    }

    pub fn merge(&mut self, other: &DaySlots) {
        for (slot, counts) in &other.slots {
            self.slot_mut(*slot).merge(counts);
        }
    }

    pub fn slots(&self) -> impl Iterator<Item = (u8, &Counts)> {
        self.slots.iter().map(|(s, c)| (*s, c))
    }

    pub fn total(&self) -> Counts {
        let mut all = Counts::default();
        for (_, c) in &self.slots {
            all.merge(c);
        }
        all
    }

    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(|(_, c)| c.is_empty())
    }

    /// `n`, then per slot its number and five counts (varints).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.slots.len() * 7);
        put_varint(&mut out, self.slots.len() as u32);
        for (slot, counts) in &self.slots {
            out.push(*slot);
            counts.encode(&mut out);
        }
        out
    }

    /// Decodes [`DaySlots::encode`]; `None` for a damaged record.
    pub fn decode(bytes: &[u8]) -> Option<DaySlots> {
        let mut r = bytes;
        let n = take_varint(&mut r)?;
        if n > u32::from(SLOTS) {
            return None;
        }
        let mut slots: Vec<(u8, Counts)> = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let (&slot, rest) = r.split_first()?;
            r = rest;
            if slot >= SLOTS || slots.last().is_some_and(|(s, _)| *s >= slot) {
                return None;
            }
            slots.push((slot, Counts::decode(&mut r)?));
        }
        r.is_empty().then_some(DaySlots { slots })
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(r: &mut &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for shift in (0..35).step_by(7) {
        let (&b, rest) = r.split_first()?;
        *r = rest;
        v |= u32::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_records_round_trip_and_merge_slot_by_slot() {
        let mut a = DaySlots::default();
        a.add(40, Button::Happy, true);
        a.add(3, Button::VeryUnhappy, true);
        a.add(40, Button::Happy, false);
        let mut b = DaySlots::default();
        b.add(40, Button::Unhappy, true);
        b.add(95, Button::VeryHappy, true);
        assert_eq!(DaySlots::decode(&a.encode()), Some(a.clone()));
        a.merge(&b);
        let slots: Vec<(u8, u64, u32)> = a
            .slots()
            .map(|(s, c)| (s, c.counted(), c.not_counted))
            .collect();
        assert_eq!(slots, vec![(3, 1, 0), (40, 2, 1), (95, 1, 0)]);
        assert_eq!(a.total().figures().counted, 4);
        assert!(a.encode().len() < 30, "{} bytes", a.encode().len());
    }

    #[test]
    fn damaged_day_records_are_refused() {
        assert_eq!(
            DaySlots::decode(&[1, 96, 0, 0, 0, 0, 0]),
            None,
            "slot out of range"
        );
        assert_eq!(
            DaySlots::decode(&[2, 5, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0]),
            None,
            "slot twice"
        );
        assert_eq!(DaySlots::decode(&[1, 5, 0, 0]), None, "short");
        assert_eq!(
            DaySlots::decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(DaySlots::decode(&[0]), Some(DaySlots::default()));
    }

    #[test]
    fn figures_share_counted_presses_only() {
        let mut c = Counts::default();
        c.add(Button::Happy, true);
        c.add(Button::Unhappy, true);
        c.add(Button::Unhappy, false);
        let f = c.figures();
        assert_eq!(
            (f.counted, f.not_counted, f.satisfaction),
            (2, 1, Some(0.5))
        );
        assert_eq!(Counts::default().figures().satisfaction, None);
    }
}
