//! A BPF ring buffer read in place: a record is read where its producer wrote it and stays there,
//! its room still taken, until the reader frees it by moving the ring's consumer position past
//! it. aya 0.14's `RingBuf` frees each record as the next is read, so a reader that holds records
//! back (the merge of sharded rings, until it can put them in time order) had to copy them out:
//! that copy, and reading the copy once it had left the CPU's cache, cost the Python loop ~20 ns
//! an event from two warm shards and ~80 in a watcher's first burst, with the merge's whole-ring
//! passes (bench/consumer_cost.py; see `merge`).
//!
//! The kernel's layout (kernel/bpf/ringbuf.c): a page holding the consumer position (the reader
//! writes it), a page holding the producer position, then the data pages, mapped twice in a row
//! so that a record that wraps around the end reads as one piece. Each record starts with an
//! 8-byte header, its length with a busy bit (still being written) and a discard bit; records
//! are 8-byte aligned.
use std::{
    io,
    os::fd::{AsFd, AsRawFd, RawFd},
    sync::atomic::{AtomicU32, AtomicU64, Ordering, fence},
};

use aya::maps::MapData;

// The kernel's positions are `unsigned long`s, read here as 64-bit words.
const _: () = assert!(usize::BITS == 64);

const HEADER: u64 = 8;
const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;

/// A mapping of the ring's fd, unmapped on drop.
struct Mapping {
    base: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    fn new(fd: RawFd, len: usize, prot: libc::c_int, offset: usize) -> io::Result<Mapping> {
        // SAFETY: a new shared mapping of the ring's pages at `offset`, of `len` bytes; the kernel
        // checks both against the ring (and refuses write access beyond the consumer page).
        let base = unsafe {
            libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, offset as libc::off_t)
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { base, len })
    }

    /// The word at `offset`, which the kernel and the reader access atomically.
    fn word(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset + 8 <= self.len && offset.is_multiple_of(8));
        // SAFETY: inside the mapping (callers pass the first word of a page), aligned, and only
        // ever accessed atomically.
        unsafe { &*self.base.cast::<u8>().add(offset).cast::<AtomicU64>() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, of this length, unmapped once.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// What `Ring::next` found.
pub enum Next<'a> {
    /// A record, at `at` (a position to give `record` and `free_to`).
    Record { at: u64, data: &'a [u8] },
    /// A producer is still writing the next record (for the microsecond it takes).
    Busy,
    /// Nothing more was written.
    Empty,
}

pub struct Ring {
    map: MapData,
    /// The consumer position's page, writable.
    consumer: Mapping,
    /// The producer position's page, then the data pages twice.
    producer: Mapping,
    page: usize,
    mask: u64,
    /// Where reading is up to: records before it have been read (freed or not).
    read: u64,
    /// The producer position last seen: records before it are there to read.
    written: u64,
    /// The consumer position last written: records before it are freed.
    freed: u64,
}

// SAFETY: the mappings are only accessed through `&self`/`&mut self` (the words atomically), and
// unmapped once, on drop.
unsafe impl Send for Ring {}

impl Ring {
    pub fn new(map: MapData) -> io::Result<Ring> {
        let size = map.info().map_err(io::Error::other)?.max_entries() as usize;
        // SAFETY: sysconf reads a constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let fd = map.fd().as_fd().as_raw_fd();
        let consumer = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = Mapping::new(fd, page + 2 * size, libc::PROT_READ, page)?;
        let read = consumer.word(0).load(Ordering::Acquire);
        Ok(Ring { map, consumer, producer, page, mask: size as u64 - 1, read, written: read, freed: read })
    }

    pub fn fd(&self) -> RawFd {
        self.map.fd().as_fd().as_raw_fd()
    }

    /// Where the producers are: every record before it has been reserved.
    pub fn producer(&self) -> u64 {
        self.producer.word(0).load(Ordering::Acquire)
    }

    /// Where reading is up to.
    pub fn read(&self) -> u64 {
        self.read
    }

    /// The 8-byte header of the record at position `at` (read or about to be).
    fn header(&self, at: u64) -> &AtomicU32 {
        let offset = self.page + (at & self.mask) as usize;
        // SAFETY: `offset` is inside the first copy of the data pages, 8-byte aligned (every
        // position is); the producer writes the header atomically (its commit is an xchg).
        unsafe { &*self.producer.base.cast::<u8>().add(offset).cast::<AtomicU32>() }
    }

    /// The data of the record whose header is at `at`, `len` bytes.
    fn data(&self, at: u64, len: u32) -> &[u8] {
        let offset = self.page + (at & self.mask) as usize + HEADER as usize;
        // SAFETY: a committed record's data: inside the mapping (the data pages are mapped twice,
        // and a record is at most the ring's size), written before its header's busy bit was
        // cleared (which `next` read with Acquire), and left alone by the kernel until the
        // consumer position moves past it, which only `free_to` does, with `&mut self`.
        unsafe { std::slice::from_raw_parts(self.producer.base.cast::<u8>().add(offset), len as usize) }
    }

    /// The next record after `read`, now `read` past it; discarded records are skipped. A record
    /// stays where it is until `free_to` frees it.
    pub fn next(&mut self) -> Next<'_> {
        loop {
            // The producer position is looked at again only once reading has caught up with it:
            // producers write it at every record.
            if self.read == self.written {
                self.written = self.producer();
                if self.read == self.written {
                    return Next::Empty;
                }
            }
            let at = self.read;
            let header = self.header(at).load(Ordering::Acquire);
            if header & BUSY != 0 {
                return Next::Busy;
            }
            let len = header & !(BUSY | DISCARD);
            self.read = at + (HEADER + len as u64).next_multiple_of(8);
            if header & DISCARD == 0 {
                return Next::Record { at, data: self.data(at, len) };
            }
        }
    }

    /// What a watcher that ends reads of the ring: the records up to its producers' position now,
    /// each passed to `visit` (what producers write meanwhile is left). The caller frees them.
    pub fn read_rest(&mut self, mut visit: impl FnMut(&[u8])) {
        let until = self.producer();
        while self.read < until {
            let Next::Record { data, .. } = self.next() else { break };
            visit(data);
        }
    }

    /// A record `next` returned at `at`, not freed since.
    pub fn record(&self, at: u64) -> &[u8] {
        debug_assert!(self.freed <= at && at < self.read);
        let header = self.header(at).load(Ordering::Relaxed);
        self.data(at, header & !(BUSY | DISCARD))
    }

    /// Frees the room of every record before `at` (a record's position, or `read`): producers
    /// may write there now.
    pub fn free_to(&mut self, at: u64) {
        debug_assert!(self.freed <= at && at <= self.read);
        if self.freed == at {
            return;
        }
        self.freed = at;
        // Release: the records' reads come before the kernel reuses their room.
        self.consumer.word(0).store(at, Ordering::Release);
        // A producer that commits after this sees the new position and wakes a reader that
        // waits, or the reader's next look at the producer position sees its record (the
        // kernel wakes only at a record committed at the consumer position).
        fence(Ordering::SeqCst);
    }
}
