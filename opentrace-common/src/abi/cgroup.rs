//! Cgroup names: the record sent when a cgroup v2 is made or renamed, and where the cgroup
//! tracepoints keep their fields.

/// A cgroup v2 and its path under the hierarchy's root (`path_len` bytes follow), sent when it is
/// made or renamed: events name their cgroup even once it is gone.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupName {
    /// [`super::RecordKind::CgroupName`].
    pub kind: u8,
    pub _pad: [u8; 5],
    pub path_len: u16,
    pub id: u64,
}

pub const CGROUP_NAME_SIZE: usize = core::mem::size_of::<CgroupName>();

/// Where `cgroup:cgroup_mkdir` and `cgroup:cgroup_rename` keep their fields (`int root`,
/// `u64 id`, `__data_loc char[] path`), from their format files.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupFields {
    pub root: u32,
    pub id: u32,
    pub path: u32,
}

impl CgroupFields {
    /// Linux 6.x; the loader reads the format files.
    pub const DEFAULT: CgroupFields = CgroupFields { root: 8, id: 16, path: 24 };
}

super::layouts!(CgroupName = 16, CgroupFields = 12);
