"""What ../shared/API.md promises, written down once for the tests (the contract lives outside the
project; these lists are its copy). The product takes none of this from here."""

from __future__ import annotations

# OpenEvent's attributes, in the contract's order; to_dict() has all of them but the *_bytes ones.
OPEN_EVENT_FIELDS = (
    "timestamp_ns", "pid", "tid", "uid", "comm", "syscall", "path", "path_bytes", "dfd", "flags", "mode",
    "ret", "fd", "errno", "inode", "dev", "mnt_id", "ppid", "ns_pid", "cgroup_id", "cgroup", "container_id",
    "container_name", "container_image", "pod", "namespace", "full_path", "full_path_bytes",
)
OPEN_EVENT_DICT_KEYS = tuple(f for f in OPEN_EVENT_FIELDS if not f.endswith("_bytes"))
