//! The comm filter (`comm="python"`, opensnoop's `-n`): does a task's command name contain a
//! substring? Written once, run by the eBPF programs and tested here on the host.
use crate::COMM_LEN;

/// Longest substring that can occur in a comm (`COMM_LEN` less the NUL).
pub const COMM_MAX: usize = COMM_LEN - 1;

/// A substring to look for, zero-padded, with a mask of 0xff over its bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needle {
    pub bytes: [u8; COMM_LEN],
    pub mask: [u8; COMM_LEN],
}

impl Needle {
    pub const EMPTY: Needle = Needle { bytes: [0; COMM_LEN], mask: [0; COMM_LEN] };

    /// The needle for `substring`: 1 to [`COMM_MAX`] bytes, none of them NUL (a comm cannot hold
    /// one), else `None`.
    pub fn new(substring: &[u8]) -> Option<Needle> {
        if substring.is_empty() || substring.len() > COMM_MAX || substring.contains(&0) {
            return None;
        }
        let mut needle = Needle::EMPTY;
        needle.bytes[..substring.len()].copy_from_slice(substring);
        needle.mask[..substring.len()].fill(0xff);
        Some(needle)
    }

    /// Whether the needle occurs in the NUL-padded `comm`. Straight-line code (15 shifted compares
    /// of one 128-bit value): in the eBPF programs a data-dependent loop here cost the verifier a
    /// million steps. Needle bytes are non-zero, so a match cannot run into the padding.
    #[inline(always)]
    pub fn found_in(&self, comm: [u8; COMM_LEN]) -> bool {
        let (hay, needle, mask) =
            (u128::from_le_bytes(comm), u128::from_le_bytes(self.bytes), u128::from_le_bytes(self.mask));
        let at = |start: u32| (hay >> (8 * start)) & mask == needle;
        at(0)
            | at(1)
            | at(2)
            | at(3)
            | at(4)
            | at(5)
            | at(6)
            | at(7)
            | at(8)
            | at(9)
            | at(10)
            | at(11)
            | at(12)
            | at(13)
            | at(14)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comm(name: &[u8]) -> [u8; COMM_LEN] {
        let mut padded = [0; COMM_LEN];
        padded[..name.len()].copy_from_slice(name);
        padded
    }

    #[test]
    fn matches_exactly_the_substrings() {
        let names: [&[u8]; 6] = [b"python3.11", b"cat", b"a", b"kworker/0:1H-kb", b"caf\xc3\xa9", b"x\xffy"];
        for name in names {
            for start in 0..name.len() {
                for end in start + 1..=name.len() {
                    let needle = Needle::new(&name[start..end]).unwrap();
                    for other in names {
                        let expected = other.windows(end - start).any(|w| w == &name[start..end]);
                        assert_eq!(
                            needle.found_in(comm(other)),
                            expected,
                            "{:?} in {:?}",
                            &name[start..end],
                            other
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_15_byte_name_is_matched_at_both_ends() {
        let full = comm(b"abcdefghijklmno");
        assert!(Needle::new(b"abcdefghijklmno").unwrap().found_in(full));
        assert!(Needle::new(b"o").unwrap().found_in(full));
        assert!(!Needle::new(b"op").unwrap().found_in(full));
    }

    #[test]
    fn refuses_what_no_comm_can_contain() {
        assert_eq!(Needle::new(b""), None);
        assert_eq!(Needle::new(b"0123456789abcdef"), None);
        assert_eq!(Needle::new(b"a\0b"), None);
        assert!(Needle::new(b"0123456789abcde").is_some());
    }
}
