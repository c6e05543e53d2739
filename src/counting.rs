//! Counting mode's reading end (`watch_counts`, `opentrace top`): the key an open event is
//! counted under (made from the event as the kernel made it), and each interval's counts: the
//! kernel map's per-CPU counters summed, less what they were at the last interval, so that the
//! intervals add up to every open counted. Keys that stop counting are taken out of the kernel's
//! table (their last counts read as they go), so that keys that come and go (containers,
//! processes, files) never fill it.
use std::{
    collections::HashMap,
    os::fd::AsFd,
    time::{Duration, Instant},
};

use aya::maps::{Map, MapData, PerCpuHashMap};
use opentrace_common::{
    abi::{
        count::{BY_FILE, CountKey, HASH_START, hash_step},
        open::{STATUS_COUNTED, STATUS_START_DIR},
    },
    open::Open,
};

use crate::{
    diag,
    error::{Error, Result},
    sys,
};

/// A key whose count has not changed for this long leaves the kernel's table.
const IDLE: Duration = Duration::from_secs(60);
/// The kernel's own "operation not supported" (not in libc: not meant for user space).
const ENOTSUPP: i32 = 524;

pub struct Counting {
    map: Map,
    by: u32,
    /// Keys the table holds at most (`max_keys`).
    capacity: usize,
    /// Possible CPUs: a per-CPU value is one u64 for each.
    cpus: usize,
    /// Whether idle keys can be taken out (not before Linux 5.14; see `take_out`).
    prunes: bool,
    /// Each key's count at the last interval (summed over CPUs), and when it last changed.
    then: HashMap<CountKey, Seen>,
    /// The opens read from the kernel and not yet handed out (see [`Counting::told`]).
    untold: HashMap<CountKey, u64>,
}

struct Seen {
    count: u64,
    changed: Instant,
}

impl Counting {
    /// `map`: the programs' `COUNTS`, of `capacity` keys; `by`: `abi::count::BY_*` bits.
    pub fn new(map: Map, by: u32, capacity: usize) -> Result<Counting> {
        if !matches!(map, Map::PerCpuHashMap(_)) {
            return Err(Error::Other("the counts map is not a per-CPU hash map".into()));
        }
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| Error::kernel(what, &e))?;
        Ok(Counting { map, by, capacity, cpus, prunes: true, then: HashMap::new(), untold: HashMap::new() })
    }

    /// The key `open` is counted under, and whether the kernel counted it (else the reader
    /// counts it: an io_uring open, which the kernel pairs with its result in user space).
    pub fn key_of(&self, open: Open<'_>) -> (CountKey, bool) {
        let head = open.head;
        let mut key =
            CountKey::of_task(self.by, head.syscall, head.ret, || head.cgroup_id, head.pid, || head.comm);
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

    /// The opens of each key counted by the kernel and not yet handed out (keys with none left
    /// out): what this read found since the last one, added to what earlier reads found and the
    /// caller has not said it handed out ([`told`](Self::told)). A caller interrupted between
    /// this read and handing its counts out (a Ctrl-C raised as the call returns) loses none:
    /// the kernel's counters are taken once, and kept here until told. Keys unchanged for
    /// [`IDLE`] leave the table, and with the table three quarters full, every key unchanged
    /// since the last call: a key that counts again comes back from zero.
    pub fn interval(&mut self) -> Result<Vec<(CountKey, u64)>> {
        let now = Instant::now();
        let mut unchanged = Vec::new();
        let mut held = 0;
        let counts: PerCpuHashMap<&MapData, CountKey, u64> =
            PerCpuHashMap::try_from(&self.map).map_err(|e| Error::kernel("opening the counts", &e))?;
        for entry in counts.iter() {
            let (key, values) = entry.map_err(|e| Error::kernel("reading the counts", &e))?;
            held += 1;
            let count = values.iter().fold(0u64, |sum, v| sum.saturating_add(*v));
            let seen = self.then.entry(key).or_insert(Seen { count: 0, changed: now });
            if count > seen.count {
                *self.untold.entry(key).or_default() += count - seen.count;
                (seen.count, seen.changed) = (count, now);
            } else if count > 0 {
                // (A key at 0 is one a program has just made and is about to count.)
                unchanged.push((key, now.duration_since(seen.changed)));
            }
        }
        let crowded = held * 4 >= self.capacity * 3;
        for (key, idle) in unchanged {
            if self.prunes && (crowded || idle >= IDLE) {
                self.take_out(key)?;
            }
        }
        Ok(self.untold.iter().map(|(key, opens)| (*key, *opens)).collect())
    }

    /// The counts the last [`interval`](Self::interval) gave are handed out: the next starts
    /// from none.
    pub fn told(&mut self) {
        self.untold.clear();
    }

    /// Takes `key` out of the table, its opens since the last read into the untold ones.
    fn take_out(&mut self, key: CountKey) -> Result<()> {
        let Map::PerCpuHashMap(data) = &self.map else { return Ok(()) };
        let mut values = vec![0u8; self.cpus * size_of::<u64>()];
        let found = match sys::lookup_and_delete(data.fd().as_fd(), &key_bytes(&key), &mut values) {
            Ok(found) => found,
            // A kernel before 5.14 cannot take a key out of a per-CPU hash map with its value:
            // the keys stay (a full table is counted lost, as it always is).
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTSUP | ENOTSUPP)) => {
                let message = format!("this kernel cannot take idle keys out of the counts ({e}): they stay");
                diag::note(diag::Level::Info, message);
                self.prunes = false;
                return Ok(());
            }
            Err(e) => return Err(Error::kernel("taking an idle key out of the counts", &e)),
        };
        let before = self.then.remove(&key).map_or(0, |seen| seen.count);
        if found {
            let last = values
                .chunks_exact(size_of::<u64>())
                .map(|v| u64::from_ne_bytes(v.try_into().unwrap_or_default()))
                .fold(0u64, u64::saturating_add);
            if last > before {
                *self.untold.entry(key).or_default() += last - before;
            }
        }
        Ok(())
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
