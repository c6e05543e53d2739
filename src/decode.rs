//! From ring buffer records to events: opens (with their full paths put together and their
//! cgroups named), io_uring requests paired with their completions, any tracepoint's records,
//! and the records that only inform the reader (a followed process exited, a cgroup was named).
//! Over 400 lines with its unit tests of io_uring pairing, which build records byte by byte.
use std::{collections::HashMap, sync::Arc};

use opentrace_common::{
    abi::{
        RecordKind,
        cgroup::{CGROUP_NAME_SIZE, CgroupName},
        open::{OpenHeader, STATUS_DEV_UNSURE, STATUS_FILE_ID, STATUS_PATH_FAULT, Syscall, full},
        tracepoint::{TP_RAW_MAX, TracepointHeader},
        uring::{URING_COMPLETE_SIZE, URING_PENDING_MAX, UringComplete},
    },
    open::{self, DecodeError, Open},
    tracepoint::{self, Schema},
};

use crate::{cgroup, diag, paths::PathFilter};

/// Most io_uring open requests waiting for their completion (four times what the kernel's map
/// holds): past that, the oldest is forgotten, and counted as lost.
const URING_WAITING: usize = 4 * URING_PENDING_MAX as usize;

/// Why a record could not be decoded.
#[derive(Debug)]
pub enum Error {
    Open(DecodeError),
    Tracepoint(tracepoint::DecodeError),
}

impl From<DecodeError> for Error {
    fn from(err: DecodeError) -> Error {
        Error::Open(err)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Open(err) => err.fmt(f),
            Error::Tracepoint(err) => err.fmt(f),
        }
    }
}

/// The kernel's `O_LARGEFILE` (libc's is 0 on 64-bit targets).
#[cfg(target_arch = "aarch64")]
const O_LARGEFILE: u64 = 0o400000;
#[cfg(not(target_arch = "aarch64"))]
const O_LARGEFILE: u64 = 0o100000;

/// What a record was.
pub enum Record<'a> {
    /// An open, ready to hand out.
    Open(Decoded<'a>),
    /// A record of a watched tracepoint, and its schema.
    Tracepoint(tracepoint::Event<'a>, &'a Arc<Schema>),
    /// A followed process exited.
    ProcessExit,
    /// Something the decoder keeps (a cgroup's name, an io_uring request until it completes), or
    /// an io_uring completion whose request was filtered out.
    Kept,
}

/// An open event, decoded: [`Decoded::open`] lends it as an [`Open`].
pub struct Decoded<'a> {
    head: OpenHeader,
    path: &'a [u8],
    full: Option<&'a [u8]>,
    /// The path of the event's cgroup, when the reader shows it.
    pub cgroup: Option<Arc<[u8]>>,
    /// What the runtime of the cgroup's container says of it, as far as known now.
    container: Option<Arc<opentrace_common::cgroup::Container>>,
}

impl Decoded<'_> {
    pub fn open(&self) -> Open<'_> {
        let (cgroup, container) = (self.cgroup.as_deref(), self.container.as_ref());
        Open { head: &self.head, path: self.path, full: self.full, cgroup, container }
    }
}

/// io_uring requests whose completions were read but not decoded when the watcher ended, or left
/// unread in the rings, by (address, submission time): their events were not lost, only never
/// handed out (as any event a watcher ends before reading).
pub type Completed = std::collections::HashSet<(u64, u64)>;

/// The request an io_uring completion's record completes, as `Completed` keys it; None for any
/// other record.
pub fn completes(record: &[u8]) -> Option<(u64, u64)> {
    if record.first() != Some(&(RecordKind::UringComplete as u8)) {
        return None;
    }
    let (done, _) = uring_complete(record).ok()?;
    Some((done.req, done.submitted_ns))
}

pub struct Decoder {
    /// Where full paths that are not one piece of a record are put together.
    scratch: Vec<u8>,
    /// Full paths left None since the last report, by `full::*` code.
    unresolved: [u64; 256],
    /// The paths of the cgroups events come from.
    cgroups: cgroup::Names,
    /// Submitted io_uring open requests, by the request's address: their header and path.
    uring: HashMap<u64, (OpenHeader, Box<[u8]>)>,
    /// The path of the io_uring request being handed out (taken out of `uring`).
    completed: Box<[u8]>,
    /// `failed=True`: whether an io_uring open failed is only known at its completion.
    failed_only: bool,
    /// io_uring open requests found never to complete (their events are lost), since the reader
    /// last took the count.
    pub orphaned: u64,
    /// The watched tracepoints, by id.
    tracepoints: HashMap<u16, Arc<Schema>>,
    /// The header of the tracepoint record being handed out.
    tracepoint_head: TracepointHeader,
    /// String arguments the program could not read from the process, since the last report.
    unread_strings: u64,
    /// Tracepoint records cut short (their last fields are None), since the last report.
    cut_short: u64,
    /// io_uring open events whose path (or `open_how`) could not be read, since the last report.
    unread_uring_paths: u64,
    /// The path filter, for io_uring opens: their full path is known at their completion, after
    /// the request was sent (the syscalls' opens are matched in the kernel).
    paths: Option<PathFilter>,
    /// Whether events carry their full path (asked for); else io_uring's, resolved for the path
    /// filter, are dropped once matched.
    full_path: bool,
}

impl Decoder {
    /// The path of cgroup `id` under the cgroup2 mount, as events name theirs (None if it is
    /// gone and was never named).
    pub fn cgroup_path(&mut self, id: u64) -> Option<Arc<[u8]>> {
        self.cgroups.get(id)
    }

    /// `cgroup::Names::learn_existing`.
    pub fn learn_existing_cgroups(&mut self) {
        self.cgroups.learn_existing();
    }

    pub fn new(failed_only: bool, tracepoints: impl IntoIterator<Item = Arc<Schema>>) -> Decoder {
        Decoder {
            scratch: Vec::new(),
            unresolved: [0; 256],
            cgroups: cgroup::Names::new(),
            uring: HashMap::new(),
            completed: Box::default(),
            failed_only,
            orphaned: 0,
            tracepoints: tracepoints.into_iter().map(|s| (s.id as u16, s)).collect(),
            tracepoint_head: TracepointHeader::default(),
            unread_strings: 0,
            cut_short: 0,
            unread_uring_paths: 0,
            paths: None,
            full_path: true,
        }
    }

    /// io_uring opens are matched against `paths` as they complete; events carry their full
    /// path only with `full_path`.
    pub fn with_paths(mut self, paths: Option<PathFilter>, full_path: bool) -> Decoder {
        self.paths = paths;
        self.full_path = full_path;
        self
    }

    /// Says, through the `opentrace` logger's notes, what was decoded incompletely since the last
    /// call (values left None, and why), and starts counting afresh.
    pub fn report(&mut self) {
        let unread = std::mem::take(&mut self.unread_strings);
        if unread > 0 {
            diag::note(
                diag::Level::Info,
                format!(
                    "{unread} string arguments are None: the process's memory holding them could not \
                     be read when the tracepoint fired (not paged in yet, or not a valid pointer)"
                ),
            );
        }
        let cut = std::mem::take(&mut self.cut_short);
        if cut > 0 {
            diag::note(
                diag::Level::Info,
                format!(
                    "{cut} tracepoint records were longer than the {TP_RAW_MAX} bytes copied: their fields \
                     past that are None"
                ),
            );
        }
        let unread = std::mem::take(&mut self.unread_uring_paths);
        if unread > 0 {
            diag::note(
                diag::Level::Warning,
                format!(
                    "{unread} io_uring open events have an empty path: the kernel's copy of it could not \
                     be read"
                ),
            );
        }
        for (code, count) in self.unresolved.iter_mut().enumerate().filter(|(_, n)| **n > 0) {
            let why = open::unresolved(code as u8).unwrap_or("an unknown reason");
            let note = match (self.full_path, self.paths.is_some()) {
                (true, false) => format!("full_path is None for {count} events: {why}"),
                (true, true) => format!(
                    "full_path is None for {count} events: {why} (the path filter lets those it cannot compare through)"
                ),
                (false, _) => format!(
                    "the path filter let {count} events through without comparing them: their full path is unknown ({why})"
                ),
            };
            diag::note(diag::Level::Info, note);
            *count = 0;
        }
    }

    /// The table of waiting requests is full: the oldest quarter is forgotten (their events are
    /// lost), at once, so that a stream of requests that never complete costs one sort per
    /// 16,384 of them rather than a scan of the table each.
    fn forget_oldest(&mut self) {
        let mut stamps: Vec<u64> = self.uring.values().map(|(head, _)| head.timestamp_ns).collect();
        let (_, &mut cutoff, _) = stamps.select_nth_unstable(URING_WAITING / 4);
        let before = self.uring.len();
        self.uring.retain(|_, (head, _)| head.timestamp_ns > cutoff);
        self.orphaned += (before - self.uring.len()) as u64;
    }

    /// Whether the submission of the io_uring request at `request`, made at `submitted_ns`,
    /// waits here for its completion.
    pub fn is_waiting(&self, request: u64, submitted_ns: u64) -> bool {
        self.uring.get(&request).is_some_and(|(head, _)| head.timestamp_ns == submitted_ns)
    }

    /// io_uring open requests still waiting for their completion, forgotten (the watcher ends):
    /// their events are lost, but for those whose completion was read and not decoded
    /// (`completed`, by address and submission time). How many.
    pub fn forget_waiting(&mut self, completed: &Completed) -> u64 {
        let waiting =
            self.uring.iter().filter(|(req, (head, _))| !completed.contains(&(**req, head.timestamp_ns)));
        let lost = waiting.count() as u64;
        self.uring.clear();
        lost
    }

    /// Decodes one record. `name_cgroups`: whether the reader shows events' cgroups.
    pub fn decode<'a>(&'a mut self, record: &'a [u8], name_cgroups: bool) -> Result<Record<'a>, Error> {
        let (mut head, path, walked) = match record.first().copied().and_then(RecordKind::from_u8) {
            Some(RecordKind::ProcessExit) => return Ok(Record::ProcessExit),
            Some(RecordKind::Tracepoint) => {
                let (head, raw, strings) = tracepoint::split(record).map_err(Error::Tracepoint)?;
                let id = head.id;
                let schema = self
                    .tracepoints
                    .get(&id)
                    .ok_or(Error::Tracepoint(tracepoint::DecodeError::Unknown(id)))?;
                let wanted = schema.config.n_strings as usize;
                self.unread_strings += strings.iter().take(wanted).filter(|s| s.is_none()).count() as u64;
                self.cut_short += u64::from(head.truncated != 0);
                self.tracepoint_head = head;
                let event = tracepoint::Event { schema, head: &self.tracepoint_head, raw, strings };
                return Ok(Record::Tracepoint(event, schema));
            }
            Some(RecordKind::CgroupName) => {
                if let Some((id, path)) = cgroup_name(record) {
                    self.cgroups.insert(id, path);
                }
                return Ok(Record::Kept);
            }
            Some(RecordKind::UringSubmit) => {
                let open::Decoded { mut head, path, .. } = open::decode(record)?;
                // io_uring adds it to every open on a 64-bit kernel, as the open syscalls do
                // inside the kernel; their events show the flags as passed, so these do too.
                head.flags &= !O_LARGEFILE;
                if self.uring.len() >= URING_WAITING {
                    self.forget_oldest();
                }
                // The submit program puts the request's address where the result goes. The kernel
                // reuses requests: one still waiting at this address never completed for us (its
                // entry was evicted from the kernel's full map, or its completion was lost).
                if self.uring.insert(head.ret as u64, (head, path.into())).is_some() {
                    self.orphaned += 1;
                }
                return Ok(Record::Kept);
            }
            Some(RecordKind::UringComplete) => {
                let (done, walked) = uring_complete(record)?;
                let Some((mut head, path)) = self.uring.remove(&done.req) else { return Ok(Record::Kept) };
                if head.timestamp_ns > done.submitted_ns {
                    // A later request waits at this address (from sharded rings, its submission
                    // can be decoded first): it stays. This completion's own submission never
                    // reached us (its program's run was skipped: counted there).
                    self.uring.insert(done.req, (head, path));
                    return Ok(Record::Kept);
                }
                if head.timestamp_ns != done.submitted_ns {
                    // The request waiting at this address is an older one that never completed
                    // for us; this completion's own submission never reached us, as above.
                    self.orphaned += 1;
                    return Ok(Record::Kept);
                }
                if self.failed_only && done.ret >= 0 {
                    return Ok(Record::Kept);
                }
                (head.ret, head.full, head.full_len) = (done.ret, done.full, done.full_len);
                head.status |= done.status & (STATUS_FILE_ID | STATUS_DEV_UNSURE);
                head.file = done.file;
                // An open event like any other from here on (equal to its copy, pickled or not).
                head.kind = RecordKind::Open as u8;
                // The kernel's copy of the path could not be read (the syscalls' programs say so in
                // their own log; io_uring's cannot). Not for opens refused before submission: the
                // path they carry is the caller's, and unreadable is why they were refused.
                self.unread_uring_paths += u64::from(head.status & STATUS_PATH_FAULT != 0);
                self.completed = path;
                (head, &self.completed[..], walked)
            }
            _ => {
                let open::Decoded { head, path, walked } = open::decode(record)?;
                (head, path, walked)
            }
        };
        if head.full >= full::FIRST_UNRESOLVED {
            self.unresolved[usize::from(head.full)] += 1;
        }
        // An event's cgroup is named now, while it surely exists.
        let cgroup = if name_cgroups { self.cgroups.get(head.cgroup_id) } else { None };
        let container = cgroup.as_deref().and_then(|path| self.cgroups.container(head.cgroup_id, path));
        let mut full = open::full_path(&head, path, walked, &mut self.scratch);
        if head.syscall == Syscall::IoUring as u8
            && let Some(paths) = &self.paths
        {
            // A full path that could not be resolved may match: the event says why it is None.
            if let Some(full) = full
                && !paths.matches(
                    full.strip_suffix(open::DELETED)
                        .filter(|_| head.full == full::FILE_DELETED)
                        .unwrap_or(full),
                )
            {
                return Ok(Record::Kept);
            }
            // Resolved to be matched, not asked for (as the syscalls' programs do).
            if !self.full_path && head.full < full::FIRST_UNRESOLVED {
                (head.full, head.full_len, full) = (full::NOT_ASKED, 0, None);
            }
        }
        Ok(Record::Open(Decoded { head, path, full, cgroup, container }))
    }
}

/// A `CgroupName` record: the cgroup's id and its path under the hierarchy's root.
fn cgroup_name(record: &[u8]) -> Option<(u64, &[u8])> {
    let head = record.get(..CGROUP_NAME_SIZE)?;
    // SAFETY: the length is checked; `CgroupName` is plain integers, read unaligned.
    let head = unsafe { head.as_ptr().cast::<CgroupName>().read_unaligned() };
    Some((head.id, record.get(CGROUP_NAME_SIZE..CGROUP_NAME_SIZE + usize::from(head.path_len))?))
}

/// A `UringComplete` record and the full path after it.
fn uring_complete(record: &[u8]) -> Result<(UringComplete, &[u8]), DecodeError> {
    let head = record.get(..URING_COMPLETE_SIZE).ok_or(DecodeError::Short { len: record.len() })?;
    // SAFETY: the length is checked; `UringComplete` is plain integers, read unaligned.
    let head = unsafe { head.as_ptr().cast::<UringComplete>().read_unaligned() };
    let walked = record
        .get(URING_COMPLETE_SIZE..URING_COMPLETE_SIZE + usize::from(head.full_len))
        .ok_or(DecodeError::PathLen { path_len: 0, full_len: head.full_len, len: record.len() })?;
    Ok((head, walked))
}

#[cfg(test)]
mod tests {
    use opentrace_common::abi::open::{OPEN_HEADER_SIZE, Syscall};

    use super::*;

    fn bytes<T>(value: &T, size: usize) -> Vec<u8> {
        // SAFETY: `T` is one of the plain-integer record headers, `size` its size.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size) }.to_vec()
    }

    fn submit(req: u64, path: &[u8], timestamp_ns: u64) -> Vec<u8> {
        let head = OpenHeader {
            kind: RecordKind::UringSubmit as u8,
            syscall: Syscall::IoUring as u8,
            ret: req as i64,
            flags: 0o100000 | 0o2,
            path_len: path.len() as u16,
            timestamp_ns,
            ..OpenHeader::default()
        };
        [bytes(&head, OPEN_HEADER_SIZE), path.to_vec()].concat()
    }

    /// The completion of the request submitted at `req` with `timestamp_ns` `submitted_ns`.
    fn complete(req: u64, submitted_ns: u64, ret: i64) -> Vec<u8> {
        let done = UringComplete {
            kind: RecordKind::UringComplete as u8,
            full: full::NOT_ASKED,
            full_len: 0,
            status: 0,
            _pad: [0; 3],
            req,
            ret,
            submitted_ns,
            file: Default::default(),
        };
        bytes(&done, URING_COMPLETE_SIZE)
    }

    /// The path and result of the open a record completes, if any.
    fn opened(decoder: &mut Decoder, record: &[u8]) -> Option<(Vec<u8>, i64, u64)> {
        match decoder.decode(record, false).unwrap() {
            Record::Open(d) => Some((d.open().path.to_vec(), d.open().head.ret, d.open().head.flags)),
            _ => None,
        }
    }

    #[test]
    fn requests_pair_with_their_completions_by_address() {
        let mut decoder = Decoder::new(false, []);
        assert_eq!(opened(&mut decoder, &submit(0x1000, b"/a", 1)), None);
        assert_eq!(opened(&mut decoder, &submit(0x2000, b"/b", 2)), None);
        // Completed out of order; O_LARGEFILE is not the request's.
        assert_eq!(opened(&mut decoder, &complete(0x2000, 2, -2)), Some((b"/b".to_vec(), -2, 0o2)));
        assert_eq!(opened(&mut decoder, &complete(0x1000, 1, 5)), Some((b"/a".to_vec(), 5, 0o2)));
        // A completion of a request not seen (filtered out, or from before the watcher).
        assert_eq!(opened(&mut decoder, &complete(0x1000, 1, 5)), None);
        assert_eq!(decoder.orphaned, 0);
    }

    #[test]
    fn a_request_never_completed_is_counted_when_its_address_is_reused() {
        let mut decoder = Decoder::new(false, []);
        opened(&mut decoder, &submit(0x1000, b"/lost", 1));
        opened(&mut decoder, &submit(0x1000, b"/next", 2));
        assert_eq!(decoder.orphaned, 1);
        assert_eq!(opened(&mut decoder, &complete(0x1000, 2, 3)), Some((b"/next".to_vec(), 3, 0o2)));
    }

    #[test]
    fn a_full_table_forgets_its_oldest_quarter() {
        let mut decoder = Decoder::new(false, []);
        for i in 0..URING_WAITING as u64 {
            opened(&mut decoder, &submit(0x1000 + 64 * i, b"/w", 1 + i));
        }
        assert_eq!(decoder.orphaned, 0);
        opened(&mut decoder, &submit(1, b"/new", u64::MAX));
        assert_eq!(decoder.orphaned, URING_WAITING as u64 / 4 + 1);
        assert_eq!(decoder.forget_waiting(&Completed::new()), (URING_WAITING - URING_WAITING / 4) as u64);
    }

    #[test]
    fn requests_still_waiting_are_forgotten_and_counted() {
        let mut decoder = Decoder::new(false, []);
        opened(&mut decoder, &submit(0x1000, b"/a", 1));
        opened(&mut decoder, &submit(0x2000, b"/b", 2));
        opened(&mut decoder, &complete(0x1000, 1, 3));
        assert_eq!(decoder.forget_waiting(&Completed::new()), 1);
        assert_eq!(decoder.forget_waiting(&Completed::new()), 0);
        assert_eq!(opened(&mut decoder, &complete(0x2000, 2, 4)), None);
    }

    #[test]
    fn a_request_whose_completion_was_read_is_not_lost_at_the_end() {
        let mut decoder = Decoder::new(false, []);
        opened(&mut decoder, &submit(0x1000, b"/a", 1));
        opened(&mut decoder, &submit(0x2000, b"/b", 2));
        // /a's completion was read; the one read at 0x2000 is another request's (submitted at
        // 5), so /b's event is lost.
        let completed = Completed::from([(0x1000, 1), (0x2000, 5)]);
        assert_eq!(decoder.forget_waiting(&completed), 1);
    }

    #[test]
    fn a_completed_request_is_an_open_event_like_any_other() {
        let mut decoder = Decoder::new(false, []);
        opened(&mut decoder, &submit(0x1000, b"/a", 1));
        let record = complete(0x1000, 1, 3);
        let Record::Open(done) = decoder.decode(&record, false).unwrap() else { panic!("not an open") };
        assert_eq!(done.open().head.kind, RecordKind::Open as u8);
    }

    #[test]
    fn a_completion_pairs_only_with_its_own_submission() {
        let mut decoder = Decoder::new(false, []);
        // An older request at this address never completed for us; the next one's submission
        // never reached us: its completion is not the older one's.
        opened(&mut decoder, &submit(0x1000, b"/old", 1));
        assert_eq!(opened(&mut decoder, &complete(0x1000, 7, 3)), None);
        assert_eq!(decoder.orphaned, 1);
        assert_eq!(decoder.forget_waiting(&Completed::new()), 0);
    }

    #[test]
    fn an_older_requests_completion_leaves_a_later_request_waiting() {
        // Request 1 at 0x1000 (submitted at 1) never reached us; request 2 reused its address
        // and its submission was decoded first (from another shard).
        let mut decoder = Decoder::new(false, []);
        opened(&mut decoder, &submit(0x1000, b"/later", 5));
        assert_eq!(opened(&mut decoder, &complete(0x1000, 1, 3)), None);
        assert_eq!(decoder.orphaned, 0);
        assert!(opened(&mut decoder, &complete(0x1000, 5, 6)).is_some());
    }

    /// A completion whose full path was resolved: `walked`.
    fn complete_walked(req: u64, submitted_ns: u64, walked: &[u8]) -> Vec<u8> {
        let done = UringComplete {
            kind: RecordKind::UringComplete as u8,
            full: full::FILE,
            full_len: walked.len() as u16,
            status: 0,
            _pad: [0; 3],
            req,
            ret: 3,
            submitted_ns,
            file: Default::default(),
        };
        [bytes(&done, URING_COMPLETE_SIZE), walked.to_vec()].concat()
    }

    #[test]
    fn io_uring_opens_are_matched_by_their_full_path_and_carry_it_only_when_asked() {
        let filter = PathFilter::new(&[b"/d/".to_vec()], std::path::Path::new("/")).unwrap();
        for asked in [false, true] {
            let mut decoder = Decoder::new(false, []).with_paths(Some(filter.clone()), asked);
            opened(&mut decoder, &submit(0x1000, b"f", 1));
            opened(&mut decoder, &submit(0x2000, b"g", 2));
            assert!(matches!(
                decoder.decode(&complete_walked(0x1000, 1, b"/e/f"), false).unwrap(),
                Record::Kept
            ));
            let record = complete_walked(0x2000, 2, b"/d/g");
            let Record::Open(done) = decoder.decode(&record, false).unwrap() else { panic!("not kept") };
            let open = done.open();
            assert_eq!((open.path, open.full), (&b"g"[..], asked.then_some(&b"/d/g"[..])));
            assert_eq!(open.head.full, if asked { full::FILE } else { full::NOT_ASKED });
        }
    }

    #[test]
    fn failed_only_keeps_failed_completions() {
        let mut decoder = Decoder::new(true, []);
        opened(&mut decoder, &submit(0x1000, b"/ok", 1));
        opened(&mut decoder, &submit(0x2000, b"/no", 2));
        assert_eq!(opened(&mut decoder, &complete(0x1000, 1, 3)), None);
        assert_eq!(opened(&mut decoder, &complete(0x2000, 2, -13)), Some((b"/no".to_vec(), -13, 0o2)));
    }
}
