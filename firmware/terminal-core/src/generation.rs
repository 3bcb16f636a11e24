//! Boot numbers that never repeat for a terminal id, whatever happens to
//! its flash.
//!
//! A press is known everywhere by `(terminal, boot, seq)`: the gateway
//! deduplicates on it, and central keys its table on it. A counter that
//! starts at 0 repeats when a flash starts over (a board erased and
//! reflashed, a spare provisioned under a broken terminal's id), and then
//! the new presses look like resends: acked, and never stored. So a
//! terminal starts a new *generation* of boot numbers at a random point of
//! the 32-bit space when its flash holds no boot counter, or one counted
//! under another terminal id; within a generation the counter goes up by
//! one per boot as before. Two generations of one id meet with odds of
//! about (boots a terminal makes) in 4 billion.

/// Who the terminal is, and the randomness it was given at this boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Digest of the terminal id the boot counter counts for.
    pub identity: u32,
    /// 32 random bits from the board (its hardware RNG, or the OS).
    pub entropy: u32,
}

impl Origin {
    pub fn new(terminal: &str, entropy: u32) -> Origin {
        Origin {
            identity: digest(terminal.as_bytes()),
            entropy,
        }
    }
}

/// The first boot of a generation: away from 0 (where earlier firmware
/// counted from) and from the top of the space (room for 16 million boots
/// before the counter wraps).
pub fn first_boot(entropy: u32) -> u32 {
    const FLOOR: u32 = 1 << 24;
    FLOOR + entropy % (u32::MAX - 2 * FLOOR)
}

/// What a boot continues from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootNumber {
    pub boot: u32,
    /// A new generation under another terminal id: what is queued was
    /// pressed as that terminal and must not go out as this one.
    pub drop_queue: bool,
}

/// The boot number to use, from what the flash holds: the last boot and
/// the identity it counted for (`None`: not there).
pub fn next_boot(previous: Option<u32>, counted_for: Option<u32>, origin: Origin) -> BootNumber {
    match (previous, counted_for) {
        // A fresh or erased flash.
        (None, _) => BootNumber {
            boot: first_boot(origin.entropy),
            drop_queue: false,
        },
        // Provisioned as another terminal since.
        (Some(_), Some(id)) if id != origin.identity => BootNumber {
            boot: first_boot(origin.entropy),
            drop_queue: true,
        },
        // Firmware from before identities were kept: the counter may be
        // another terminal's (a spare re-provisioned and upgraded at
        // once), so a new generation; what is queued is most likely this
        // terminal's own, from before the upgrade, and goes out.
        (Some(_), None) => BootNumber {
            boot: first_boot(origin.entropy),
            drop_queue: false,
        },
        // The same terminal.
        (Some(boot), Some(_)) => BootNumber {
            boot: boot.wrapping_add(1),
            drop_queue: false,
        },
    }
}

/// FNV-1a: a stable digest (not a secret; only to notice a change).
fn digest(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_flash_starts_a_new_generation_away_from_zero() {
        let origin = Origin::new("gate-a-01", 0);
        let first = next_boot(None, None, origin);
        assert_eq!(
            first,
            BootNumber {
                boot: 1 << 24,
                drop_queue: false
            }
        );
        let other = next_boot(None, None, Origin::new("gate-a-01", u32::MAX));
        assert!(other.boot > 1 << 24 && other.boot < u32::MAX - (1 << 24));
    }

    #[test]
    fn the_same_terminal_counts_on_and_an_upgrade_starts_a_generation_keeping_its_queue() {
        let origin = Origin::new("gate-a-01", 99);
        assert_eq!(next_boot(Some(7), Some(origin.identity), origin).boot, 8);
        // Firmware from before identities: the counter may have counted
        // for another id (small numbers every terminal used), so not on
        // from it.
        assert_eq!(
            next_boot(Some(7), None, origin),
            BootNumber {
                boot: first_boot(99),
                drop_queue: false
            }
        );
    }

    #[test]
    fn a_spare_provisioned_as_another_terminal_starts_over_and_drops_its_queue() {
        let old = Origin::new("spare-07", 1);
        let new = Origin::new("gate-a-01", 12345);
        let next = next_boot(Some(40), Some(old.identity), new);
        assert!(next.drop_queue);
        assert_eq!(next.boot, first_boot(12345));
    }
}
