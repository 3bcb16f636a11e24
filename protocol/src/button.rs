//! The four buttons of a terminal. There is deliberately no neutral button.

use core::fmt;

/// One of the four smiley buttons. The discriminant is the score (1–4) that
/// travels on the wire and upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Button {
    VeryUnhappy = 1,
    Unhappy = 2,
    Happy = 3,
    VeryHappy = 4,
}

impl Button {
    /// All buttons, from the unhappiest to the happiest.
    pub const ALL: [Button; 4] = [
        Button::VeryUnhappy,
        Button::Unhappy,
        Button::Happy,
        Button::VeryHappy,
    ];

    /// Score 1 (very unhappy) to 4 (very happy).
    pub const fn score(self) -> u8 {
        self as u8
    }

    /// The stable name used in JSON payloads (`very_unhappy`, `unhappy`,
    /// `happy`, `very_happy`).
    pub const fn name(self) -> &'static str {
        match self {
            Button::VeryUnhappy => "very_unhappy",
            Button::Unhappy => "unhappy",
            Button::Happy => "happy",
            Button::VeryHappy => "very_happy",
        }
    }

    /// The button with this score, if the score is 1–4.
    pub const fn from_score(score: u8) -> Option<Button> {
        match score {
            1 => Some(Button::VeryUnhappy),
            2 => Some(Button::Unhappy),
            3 => Some(Button::Happy),
            4 => Some(Button::VeryHappy),
            _ => None,
        }
    }

    /// The button with this JSON name.
    pub fn from_name(name: &str) -> Option<Button> {
        Button::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Zero-based index, handy for per-button counters.
    pub const fn index(self) -> usize {
        self as usize - 1
    }
}

impl fmt::Display for Button {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_and_names_round_trip() {
        for b in Button::ALL {
            assert_eq!(Button::from_score(b.score()), Some(b));
            assert_eq!(Button::from_name(b.name()), Some(b));
        }
        assert_eq!(Button::from_score(0), None);
        assert_eq!(Button::from_score(5), None);
        assert_eq!(Button::from_name("neutral"), None);
    }
}
