//! The comm filter (`comm="python"`, opensnoop's `-n`): does a task's command name contain a
//! substring? Written once, run by the eBPF programs and tested here on the host.
use crate::COMM_LEN;

/// Longest substring that can occur in a comm (`COMM_LEN` less the NUL).
pub const COMM_MAX: usize = COMM_LEN - 1;

/// A substring to look for, zero-padded, with a mask of 0xff over its bytes; each as two
/// little-endian words (words, not bytes: the programs read the needle from a global, and a read
/// of 16-byte arrays there is 32 byte loads and as many shifts: ~70 instructions an open).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needle {
    pub bytes: [u64; 2],
    pub mask: [u64; 2],
}

impl Needle {
    pub const EMPTY: Needle = Needle { bytes: [0; 2], mask: [0; 2] };

    /// The needle for `substring`: 1 to [`COMM_MAX`] bytes, none of them NUL (a comm cannot hold
    /// one), else `None`.
    pub fn new(substring: &[u8]) -> Option<Needle> {
        if substring.is_empty() || substring.len() > COMM_MAX || substring.contains(&0) {
            return None;
        }
        let (mut bytes, mut mask) = ([0; COMM_LEN], [0; COMM_LEN]);
        bytes[..substring.len()].copy_from_slice(substring);
        mask[..substring.len()].fill(0xff);
        Some(Needle { bytes: words(bytes), mask: words(mask) })
    }

    /// Whether the needle occurs in the NUL-padded `comm`. Straight-line code (15 shifted compares
    /// of one 128-bit value): in the eBPF programs a data-dependent loop here cost the verifier a
    /// million steps. Needle bytes are non-zero, so a match cannot run into the padding.
    #[inline(always)]
    pub fn found_in(&self, comm: [u8; COMM_LEN]) -> bool {
        let wide = |[lo, hi]: [u64; 2]| u128::from(lo) | u128::from(hi) << 64;
        let (hay, needle, mask) = (u128::from_le_bytes(comm), wide(self.bytes), wide(self.mask));
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

/// 16 bytes as two little-endian words.
fn words(bytes: [u8; COMM_LEN]) -> [u64; 2] {
    let half = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
    [half(0), half(8)]
}

/// A comm read from `task_struct.comm` as two little-endian words, as `bpf_get_current_comm`
/// gives it: the bytes from the first NUL on zeroed, and the last byte always NUL (kernels pad
/// it with NULs when they set it, and end it with one; this does not rely on either).
/// Branch-light word arithmetic, for the eBPF programs.
#[inline(always)]
pub fn comm_from_words(lo: u64, hi: u64) -> [u8; COMM_LEN] {
    let lo_kept = below_first_nul(lo);
    let hi = if lo_kept == u64::MAX { hi & below_first_nul(hi) & (u64::MAX >> 8) } else { 0 };
    let mut comm = [0; COMM_LEN];
    comm[..8].copy_from_slice(&(lo & lo_kept).to_le_bytes());
    comm[8..].copy_from_slice(&hi.to_le_bytes());
    comm
}

/// A mask of the bytes of `word` (little-endian) before its first NUL: all of them if it has none.
#[inline(always)]
fn below_first_nul(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // The lowest set bit is bit 7 of the first NUL byte exactly (a borrow can only make false
    // ones above a NUL).
    let nul = word.wrapping_sub(ONES) & !word & (ONES << 7);
    if nul == 0 {
        return u64::MAX;
    }
    ((nul & nul.wrapping_neg()) >> 7) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_from_words_zeroes_from_the_first_nul_as_the_helper_does() {
        let words = |bytes: [u8; COMM_LEN]| {
            (
                u64::from_le_bytes(bytes[..8].try_into().unwrap()),
                u64::from_le_bytes(bytes[8..].try_into().unwrap()),
            )
        };
        let padded = |name: &[u8]| {
            let mut comm = [0; COMM_LEN];
            comm[..name.len()].copy_from_slice(name);
            comm
        };
        for name in
            [&b""[..], b"a", b"python3", b"python3.", b"python3.1", b"abcdefghijklmno", b"\x80\xff\x01x"]
        {
            let want = padded(name);
            // Padded, as kernels set it; and with bytes left after the NUL (a longer name before).
            let (lo, hi) = words(want);
            assert_eq!(comm_from_words(lo, hi), want, "{name:?}");
            let mut dirty = [0xa5; COMM_LEN];
            dirty[..name.len()].copy_from_slice(name);
            dirty[name.len()] = 0;
            let (lo, hi) = words(dirty);
            assert_eq!(comm_from_words(lo, hi), want, "{name:?} after a longer one");
        }
        // No NUL at all: the last byte is made one, as the helper's copy does.
        let (lo, hi) = words(*b"abcdefghijklmnop");
        assert_eq!(comm_from_words(lo, hi), padded(b"abcdefghijklmno"));
        // A zero byte right after a 0x01 byte (where a borrow runs past): still the first NUL.
        let (lo, hi) = words(*b"\x01\x00\x01\x01\x00zzzzzzzzzzz");
        assert_eq!(comm_from_words(lo, hi), padded(b"\x01"));
    }

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
