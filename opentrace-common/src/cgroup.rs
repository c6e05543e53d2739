//! cgroup v2 paths: where the cgroup2 hierarchy is mounted (from `/proc/self/mountinfo`), which
//! container a cgroup path names (the layouts of the common runtimes), and what its runtime says
//! of it ([`Container`]).

/// The mount point of the cgroup2 hierarchy's root in a `/proc/self/mountinfo` text:
/// `/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on hybrid ones. Octal escapes
/// (`\040`) undone. Only a mount of the hierarchy's root names cgroups by their full path, and
/// mountinfo shows a mount's root relative to the reader's cgroup namespace: from inside one
/// (a Kubernetes pod), the node's tree mounted shows as `/..` (one `/..` per level the namespace
/// is below the root), and a mount made inside it as `/` although it is not the hierarchy's root.
/// So each mount whose root is `/` or only `/..`s is asked `is_root(mount point)` (is this the
/// hierarchy's root? the caller looks at the directory), the first that is wins.
pub fn cgroup2_mount(mountinfo: &str, is_root: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    mountinfo.lines().find_map(|line| {
        // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER"
        let (fields, rest) = line.split_once(" - ")?;
        if rest.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut parts = fields.split_whitespace();
        let root = parts.nth(3)?;
        let mount = unescape(parts.next()?);
        let above = root == "/" || root.strip_prefix('/')?.split('/').all(|c| c == "..");
        (above && is_root(&mount)).then_some(mount)
    })
}

fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') << 6 | (d[1] - b'0') << 3 | (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

const ID_LEN: usize = 64;

fn is_id(name: &[u8]) -> bool {
    name.len() == ID_LEN && name.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// The container id (64 hex digits) a cgroup path names, for the common runtimes' layouts:
/// the systemd driver's `docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `libpod-<id>.scope`, and the cgroupfs driver's `/docker/<id>`, `/kubepods/.../<id>` and
/// podman's `/libpod_parent/.../libpod-<id>`. The deepest component that is one wins (a
/// container's own sub-cgroups stay in it).
pub fn container_id(path: &[u8]) -> Option<&[u8]> {
    let components: Vec<&[u8]> = path.split(|&b| b == b'/').filter(|c| !c.is_empty()).collect();
    for (depth, name) in components.iter().enumerate().rev() {
        for prefix in [&b"docker-"[..], b"cri-containerd-", b"crio-", b"libpod-"] {
            if let Some(id) = name.strip_prefix(prefix).and_then(|rest| rest.strip_suffix(b".scope"))
                && is_id(id)
            {
                return Some(id);
            }
        }
        // podman's cgroupfs manager: no ".scope".
        if let Some(id) = name.strip_prefix(b"libpod-")
            && is_id(id)
            && components[..depth].contains(&&b"libpod_parent"[..])
        {
            return Some(id);
        }
        let under_runtime = components[..depth]
            .iter()
            .any(|c| *c == b"docker" || c.starts_with(b"kubepods") || *c == b"libpod_parent");
        if is_id(name) && under_runtime {
            return Some(name);
        }
    }
    None
}

/// What the runtime that owns a container says of it (each None where it said nothing): its
/// name, its image as the container was created from it, and for a Kubernetes pod's container
/// the pod's name and namespace (the CRI labels `io.kubernetes.pod.name`, `.namespace`). Shared
/// by the events of one container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Container {
    pub name: Option<Box<[u8]>>,
    pub image: Option<Box<[u8]>>,
    pub pod: Option<Box<[u8]>>,
    pub namespace: Option<Box<[u8]>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn finds_the_cgroup2_mount() {
        let any = |_: &[u8]| true;
        let hybrid = "24 1 0:22 / /sys rw - sysfs sysfs rw\n\
            30 24 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n\
            31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n\
            32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(cgroup2_mount(hybrid, any), Some(b"/sys/fs/cgroup/unified".to_vec()));
        let unified = "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(unified, any), Some(b"/sys/fs/cgroup".to_vec()));
        // A container's view: only its own subtree mounted (root not "/"), and an escaped name.
        let partial = "40 39 0:27 /system.slice/x.scope /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n\
            41 39 0:27 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(partial, any), Some(b"/mnt/my cgroups".to_vec()));
        assert_eq!(cgroup2_mount("1 0 8:1 / / rw - ext4 /dev/vda rw\n", any), None);
        // From a cgroup namespace two levels down: its own mount ("/", not the hierarchy's root,
        // as the directory tells) and the node's ("/../..").
        let namespaced = "50 39 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n\
            51 39 0:27 /../.. /host/cgroup rw - cgroup2 cgroup2 rw\n\
            52 39 0:27 /../x /elsewhere rw - cgroup2 cgroup2 rw\n";
        let host = |m: &[u8]| m != b"/sys/fs/cgroup";
        assert_eq!(cgroup2_mount(namespaced, host), Some(b"/host/cgroup".to_vec()));
        assert_eq!(cgroup2_mount(namespaced, |m: &[u8]| m == b"/elsewhere"), None);
    }

    #[test]
    fn container_ids_of_the_common_layouts() {
        for path in [
            format!("/system.slice/docker-{ID}.scope"),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{ID}.scope"
            ),
            format!("/kubepods.slice/kubepods-pod2.slice/crio-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/docker/{ID}"),
            format!("/kubepods/burstable/pod0b1c/{ID}"),
            format!("/docker/{ID}/nested/sub"),
            format!("/libpod_parent/libpod-{ID}"),
            format!("/libpod_parent/pod-x/libpod-{ID}/sub"),
        ] {
            assert_eq!(container_id(path.as_bytes()), Some(ID.as_bytes()), "{path}");
        }
        for path in [
            "/".to_owned(),
            "/user.slice/user-1000.slice/session-2.scope".to_owned(),
            format!("/system.slice/{ID}"), // a bare id outside a runtime's tree
            format!("/system.slice/docker-{}.scope", &ID[1..]), // 63 digits
            format!("/system.slice/docker-{}.scope", ID.to_uppercase()),
            format!("/system.slice/libpod-conmon-{ID}.scope"), // the monitor, not the container
            format!("/libpod_parent/conmon-{ID}"),
            format!("/machine.slice/libpod-{ID}"), // no .scope, outside libpod_parent
        ] {
            assert_eq!(container_id(path.as_bytes()), None, "{path}");
        }
    }
}
