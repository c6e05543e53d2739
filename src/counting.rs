//! Counting mode's reading end (`watch_counts`, `opentrace top`): the key an open event is
//! counted under (made from the event as the kernel made it), and each interval's counts: the
//! kernel map's per-CPU counters summed, less what they were at the last interval, so that the
//! intervals add up to every open counted.
use std::collections::HashMap;

use aya::maps::{Map, MapData, PerCpuHashMap};
use opentrace_common::{
    abi::{
        count::{BY_CGROUP, BY_COMM, BY_FILE, BY_PID, BY_SYSCALL, CountKey, HASH_START, hash_step},
        open::{STATUS_COUNTED, STATUS_START_DIR},
    },
    open::Open,
};

use crate::error::{Error, Result};

pub struct Counting {
    counts: PerCpuHashMap<MapData, CountKey, u64>,
    by: u32,
    /// Each key's count at the last interval (summed over CPUs).
    then: HashMap<CountKey, u64>,
}

impl Counting {
    /// `map`: the programs' `COUNTS`; `by`: `abi::count::BY_*` bits.
    pub fn new(map: Map, by: u32) -> Result<Counting> {
        let counts = PerCpuHashMap::try_from(map).map_err(|e| Error::kernel("opening the counts", &e))?;
        Ok(Counting { counts, by, then: HashMap::new() })
    }

    /// The key `open` is counted under, and whether the kernel counted it (else the reader
    /// counts it: an io_uring open, which the kernel pairs with its result in user space).
    pub fn key_of(&self, open: Open<'_>) -> (CountKey, bool) {
        let head = open.head;
        let mut key = CountKey::default();
        if self.by & BY_CGROUP != 0 {
            key.cgroup_id = head.cgroup_id;
        }
        if self.by & BY_PID != 0 {
            key.pid = head.pid;
        }
        if self.by & BY_COMM != 0 {
            key.comm = head.comm;
        }
        if self.by & BY_SYSCALL != 0 {
            key.syscall = u32::from(head.syscall);
        }
        if head.ret < 0 {
            key.errno = head.ret.unsigned_abs() as u32;
        }
        let counted = head.status & STATUS_COUNTED != 0;
        if self.by & BY_FILE != 0 {
            if let Some(file) = open.file() {
                (key.file, key.dev) = (file.inode, file.dev);
            } else if counted {
                key.file = path_hash(open.path);
                if head.status & STATUS_START_DIR != 0 {
                    (key.dir, key.dev) = (head.file.inode, head.file.dev);
                }
            } else {
                // Kept apart from the kernel's keys (`dir` all ones): the full path says where
                // a relative path was looked up, which the kernel keys by its start directory.
                (key.file, key.dir) = (path_hash(open.full.unwrap_or(open.path)), u64::MAX);
            }
        }
        (key, counted)
    }

    /// The opens of each key counted by the kernel since the last call (keys with none left out).
    pub fn interval(&mut self) -> Result<Vec<(CountKey, u64)>> {
        let mut rows = Vec::new();
        for entry in self.counts.iter() {
            let (key, values) = entry.map_err(|e| Error::kernel("reading the counts", &e))?;
            let now = values.iter().fold(0u64, |sum, v| sum.saturating_add(*v));
            let then = self.then.insert(key, now).unwrap_or(0);
            if now > then {
                rows.push((key, now - then));
            }
        }
        Ok(rows)
    }
}

/// A path's hash, as the kernel's counting hashes a failed open's path (`abi::count`).
fn path_hash(path: &[u8]) -> u64 {
    path.chunks(8).fold(HASH_START, |hash, chunk| {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        hash_step(hash, u64::from_le_bytes(word))
    })
}

/// A key as Python holds it (its bytes: hashable, compared whole).
pub fn key_bytes(key: &CountKey) -> Vec<u8> {
    // SAFETY: `CountKey` is `#[repr(C)]` plain integers with no padding (its size is fixed).
    unsafe { std::slice::from_raw_parts((key as *const CountKey).cast::<u8>(), size_of::<CountKey>()) }
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_hash_pads_the_last_word_with_zeros() {
        let first = u64::from_le_bytes(*b"/etc/pas");
        let last = u64::from_le_bytes(*b"swd\0\0\0\0\0");
        assert_eq!(path_hash(b"/etc/passwd"), hash_step(hash_step(HASH_START, first), last));
        assert_eq!(path_hash(b""), HASH_START);
    }
}
