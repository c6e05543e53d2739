//! The names of cgroups v2 as they are made or renamed, for the reader to name events' cgroups
//! even after they are removed (it also looks cgroups up itself; these cover the short-lived).
use aya_ebpf::{
    EbpfContext as _,
    helpers::generated::bpf_probe_read_kernel,
    macros::{map, tracepoint},
    maps::PerCpuArray,
    programs::TracePointContext,
};
use opentrace_common::{
    PATH_MAX,
    abi::{
        RecordKind,
        cgroup::{CGROUP_NAME_SIZE, CgroupFields, CgroupName},
    },
};

use crate::shared::{global, output};

#[unsafe(no_mangle)]
static CGROUP_FIELDS: CgroupFields = CgroupFields::DEFAULT;

#[repr(C)]
struct Named {
    head: CgroupName,
    path: [u8; PATH_MAX],
}

#[map]
static NAMED: PerCpuArray<Named> = PerCpuArray::with_max_entries(1, 0);

/// Attached to `cgroup:cgroup_mkdir` and `cgroup:cgroup_rename`.
#[tracepoint]
pub fn cgroup_named(ctx: TracePointContext) -> u32 {
    let fields = global!(CGROUP_FIELDS);
    // SAFETY: reads of the tracepoint's record, which may fail but cannot fault.
    let fields = unsafe {
        (
            ctx.read_at::<i32>(fields.root as usize),
            ctx.read_at::<u64>(fields.id as usize),
            ctx.read_at::<u32>(fields.path as usize),
        )
    };
    let (Ok(root), Ok(id), Ok(loc)) = fields else { return 0 };
    // Hierarchy 0 is cgroup v2's; the others are v1 controllers.
    if root != 0 {
        return 0;
    }
    let Some(named) = NAMED.get_ptr_mut(0) else { return 0 };
    // SAFETY: this CPU's slot; a tracepoint program is not re-entered on its CPU.
    let named = unsafe { &mut *named };
    // `__data_loc`: the string's offset in the record (low 16 bits) and length with its NUL.
    let (at, len) = (loc & 0xffff, (loc >> 16).saturating_sub(1));
    let len = len.min(PATH_MAX as u32 - 1);
    // SAFETY: at most PATH_MAX - 1 bytes into the slot's path; a probe read of the record.
    let read = unsafe {
        bpf_probe_read_kernel(
            named.path.as_mut_ptr().cast(),
            len & (PATH_MAX as u32 - 1),
            ctx.as_ptr().cast::<u8>().add(at as usize).cast(),
        )
    };
    if read != 0 {
        return 0;
    }
    named.head = CgroupName { kind: RecordKind::CgroupName as u8, _pad: [0; 5], path_len: len as u16, id };
    let size = CGROUP_NAME_SIZE + (len as usize & (PATH_MAX - 1));
    // SAFETY: the header and `len` bytes of path are in the slot.
    let record = unsafe { core::slice::from_raw_parts((named as *const Named).cast::<u8>(), size) };
    // A lost name only means looking it up later, while the cgroup still exists.
    let _ = output(record);
    0
}
