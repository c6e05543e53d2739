//! `BPF_MAP_TYPE_TASK_STORAGE` as a BTF map definition (aya-ebpf 0.2 defines the inode, socket
//! and cgroup local storages, not the task one).
use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_LOCAL_STORAGE_GET_F_CREATE, bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE},
    helpers::{bpf_get_current_task_btf, bpf_task_storage_get},
};

/// A value per task, kept in the task itself: no hashing, no table to fill, freed with the task.
/// The fields only carry BTF for the loader.
#[repr(C)]
pub struct TaskStorage<T> {
    r#type: *const [i32; BPF_MAP_TYPE_TASK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: placeholder pointers for BTF, never dereferenced.
unsafe impl<T> Sync for TaskStorage<T> {}

impl<T> TaskStorage<T> {
    pub const fn new() -> Self {
        let null = core::ptr::null();
        TaskStorage {
            r#type: null,
            key: null.cast(),
            value: null.cast(),
            max_entries: null.cast(),
            map_flags: null.cast(),
        }
    }

    /// The current task's value, created (zeroed) when `create` and absent.
    #[inline(always)]
    pub fn current(&self, create: bool) -> Option<*mut T> {
        let flags = if create { u64::from(BPF_LOCAL_STORAGE_GET_F_CREATE) } else { 0 };
        let map = core::ptr::from_ref(self).cast_mut().cast();
        // SAFETY: the helpers are called as documented (this map, the current task's BTF pointer).
        let value =
            unsafe { bpf_task_storage_get(map, bpf_get_current_task_btf(), core::ptr::null_mut(), flags) };
        (!value.is_null()).then_some(value.cast::<T>())
    }
}
