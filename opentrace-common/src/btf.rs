//! Kernel struct member offsets from BTF (`/sys/kernel/btf/vmlinux`): the programs read kernel
//! structures at offsets that differ between kernels, and aya's Rust eBPF has no CO-RE
//! relocations, so the loader looks the few members up here and hands them over as read-only
//! globals (the same idea as the tracepoint offsets from the `format` files, one level down).
//!
//! Only what a lookup needs is decoded: one pass indexes where each type starts (the file is
//! ~5 MB and ~130,000 types); names are compared only for structs and unions. What the programs
//! need of it is put together in [`layout`].
mod layout;

pub use layout::{Layout, layout};

const MAGIC: u16 = 0xeb9f;
const TYPE_SIZE: usize = 12;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// A parsed BTF blob: the raw bytes (owned, or a mapping of the file) and where each type starts.
pub struct Btf<D> {
    data: D,
    types: Vec<usize>,
    strings: (usize, usize),
    /// (name offset, type id) of every named struct and union.
    structs: Vec<(u32, u32)>,
}

/// Where a member lives: its byte offset from the start of the outer struct, its size in bytes,
/// and (for arrays) the size of one element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub offset: u32,
    pub size: u32,
    pub element_size: u32,
}

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

impl<D: AsRef<[u8]>> Btf<D> {
    /// Indexes a BTF blob (little-endian, as on the machines opentrace runs on).
    pub fn parse(blob: D) -> Result<Btf<D>, String> {
        let data = blob.as_ref();
        let bad = |what: &str| format!("malformed BTF: {what}");
        if u16_at(data, 0) != Some(MAGIC) {
            return Err(bad("no BTF magic (or not little-endian)"));
        }
        let header = |at| u32_at(data, at).map(|v| v as usize).ok_or_else(|| bad("short header"));
        let hdr_len = header(4)?;
        let (type_off, type_len) = (hdr_len + header(8)?, header(12)?);
        let (str_off, str_len) = (hdr_len + header(16)?, header(20)?);
        if type_off + type_len > data.len() || str_off + str_len > data.len() {
            return Err(bad("sections beyond the end"));
        }
        // Type ids start at 1; index 0 stands for `void`.
        let mut types = vec![0];
        let mut structs = Vec::new();
        let mut at = type_off;
        while at < type_off + type_len {
            let info = u32_at(data, at + 4).ok_or_else(|| bad("truncated type"))?;
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                0..=19 => 0,
                _ => return Err(bad(&format!("unknown type kind {kind}"))),
            };
            if matches!(kind, KIND_STRUCT | KIND_UNION) {
                let name_off = u32_at(data, at).ok_or_else(|| bad("truncated type"))?;
                if name_off != 0 {
                    structs.push((name_off, types.len() as u32));
                }
            }
            types.push(at);
            at += TYPE_SIZE + extra;
        }
        Ok(Btf { data: blob, types, strings: (str_off, str_len), structs })
    }

    /// The type id of struct `name`, or why there is none.
    pub fn struct_type(&self, name: &str) -> Result<u32, String> {
        self.struct_id(name).ok_or_else(|| format!("this kernel's BTF has no struct {name}"))
    }

    /// The type id of the kernel function `name` (a kfunc a program calls), or why there is none.
    pub fn function(&self, name: &str) -> Result<u32, String> {
        (1..self.types.len() as u32)
            .find(|&id| {
                self.header(id).is_some_and(|(kind, _, _, _, name_off)| {
                    kind == KIND_FUNC && self.name(name_off) == name.as_bytes()
                })
            })
            .ok_or_else(|| format!("this kernel's BTF has no function {name}"))
    }

    /// The id of the struct or union called `name`.
    fn struct_id(&self, name: &str) -> Option<u32> {
        self.structs.iter().find(|(name_off, _)| self.name(*name_off) == name.as_bytes()).map(|(_, id)| *id)
    }

    fn name(&self, name_off: u32) -> &[u8] {
        c_str(self.data.as_ref(), self.strings.0, self.strings.1, name_off as usize).unwrap_or_default()
    }

    /// (kind, vlen, kind_flag, size_or_type, name_off) of type `id`.
    fn header(&self, id: u32) -> Option<(u32, usize, bool, u32, u32)> {
        let at = *self.types.get(id as usize).filter(|_| id != 0)?;
        let data = self.data.as_ref();
        let info = u32_at(data, at + 4)?;
        Some((
            (info >> 24) & 0x1f,
            (info & 0xffff) as usize,
            info >> 31 == 1,
            u32_at(data, at + 8)?,
            u32_at(data, at)?,
        ))
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..32 {
            let (kind, _, _, next, _) = self.header(id)?;
            match kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => id = next,
                _ => return Some(id),
            }
        }
        None
    }

    /// Size in bytes of type `id`.
    fn size_of(&self, id: u32) -> Option<u32> {
        let id = self.resolve(id)?;
        let (kind, _, _, size, _) = self.header(id)?;
        match kind {
            KIND_PTR => Some(8),
            KIND_ARRAY => {
                let at = self.types[id as usize] + TYPE_SIZE;
                let (element, count) = (u32_at(self.data.as_ref(), at)?, u32_at(self.data.as_ref(), at + 8)?);
                self.size_of(element)?.checked_mul(count)
            }
            _ => Some(size),
        }
    }

    /// The member `name` of struct or union `id`, looked for in anonymous members too:
    /// (byte offset, member type id).
    fn find_member(&self, id: u32, name: &[u8]) -> Option<(u32, u32)> {
        let (kind, vlen, kind_flag, _, _) = self.header(self.resolve(id)?)?;
        if !matches!(kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        let base = self.types[self.resolve(id)? as usize] + TYPE_SIZE;
        for i in 0..vlen {
            let at = base + 12 * i;
            let data = self.data.as_ref();
            let (name_off, ty, offset) = (u32_at(data, at)?, u32_at(data, at + 4)?, u32_at(data, at + 8)?);
            // With kind_flag set, the top 8 bits hold a bitfield's size.
            let bits = if kind_flag { offset & 0xff_ffff } else { offset };
            if !bits.is_multiple_of(8) {
                continue;
            }
            if name_off == 0 {
                if let Some((inner, found)) = self.find_member(ty, name) {
                    return Some((bits / 8 + inner, found));
                }
            } else if self.name(name_off) == name {
                return Some((bits / 8, ty));
            }
        }
        None
    }

    /// `"f_path.dentry"` in `struct file`: a dotted path of members, through embedded structs
    /// (not through pointers).
    pub fn member(&self, outer: &str, path: &str) -> Result<Member, String> {
        let missing = || format!("this kernel's BTF has no member {path} in struct {outer}");
        let mut id =
            self.struct_id(outer).ok_or_else(|| format!("this kernel's BTF has no struct {outer}"))?;
        let mut offset = 0;
        for part in path.split('.') {
            let (at, ty) = self.find_member(id, part.as_bytes()).ok_or_else(missing)?;
            offset += at;
            id = ty;
        }
        let size = self.size_of(id).ok_or_else(missing)?;
        let element_size = match self.resolve(id).and_then(|r| self.header(r)) {
            Some((KIND_ARRAY, ..)) => {
                let resolved = self.resolve(id).ok_or_else(missing)?;
                let element = u32_at(self.data.as_ref(), self.types[resolved as usize] + TYPE_SIZE);
                element.and_then(|e| self.size_of(e)).ok_or_else(missing)?
            }
            _ => size,
        };
        Ok(Member { offset, size, element_size })
    }

    /// The size of struct `name`.
    pub fn struct_size(&self, name: &str) -> Result<u32, String> {
        let id = self.struct_id(name).ok_or_else(|| format!("this kernel's BTF has no struct {name}"))?;
        self.size_of(id).ok_or_else(|| format!("this kernel's BTF has a malformed struct {name}"))
    }

    /// The arguments a raw tracepoint program of tracepoint `name` gets, from the kernel's
    /// `btf_trace_<name>` typedef (a pointer to the probe's prototype, whose first parameter is
    /// the probe's private data, not an argument).
    pub fn raw_tracepoint_args(&self, name: &str) -> Result<Vec<Param>, String> {
        let typedef = format!("btf_trace_{name}");
        let missing = || format!("this kernel's BTF has no tracepoint {name}");
        let id = (1..self.types.len() as u32)
            .find(|&id| {
                self.header(id).is_some_and(|(kind, _, _, _, name_off)| {
                    kind == KIND_TYPEDEF && self.name(name_off) == typedef.as_bytes()
                })
            })
            .ok_or_else(missing)?;
        let malformed = || format!("this kernel's BTF has a malformed {typedef}");
        let proto = match self.resolve(id).and_then(|p| self.header(p)) {
            Some((KIND_PTR, _, _, target, _)) => self.resolve(target).ok_or_else(malformed)?,
            _ => return Err(malformed()),
        };
        let Some((KIND_FUNC_PROTO, vlen, ..)) = self.header(proto) else { return Err(malformed()) };
        let base = self.types[proto as usize] + TYPE_SIZE;
        (1..vlen)
            .map(|i| {
                let ty = u32_at(self.data.as_ref(), base + 8 * i + 4).ok_or_else(malformed)?;
                Ok(self.param(ty))
            })
            .collect()
    }

    fn param(&self, ty: u32) -> Param {
        let Some((kind, _, _, size_or_type, _)) = self.resolve(ty).and_then(|t| self.header(t)) else {
            return Param::Other;
        };
        match kind {
            KIND_INT => Param::Int { size: size_or_type },
            KIND_PTR => match self.resolve(size_or_type).and_then(|t| self.header(t)) {
                Some((KIND_STRUCT | KIND_UNION, _, _, _, name_off)) => {
                    Param::StructPointer(String::from_utf8_lossy(self.name(name_off)).into_owned())
                }
                _ => Param::Pointer,
            },
            _ => Param::Other,
        }
    }
}

/// One argument of a raw tracepoint, as far as the loader cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Param {
    /// A pointer to the struct or union of that name.
    StructPointer(String),
    /// Any other pointer (`void *`).
    Pointer,
    /// An integer of `size` bytes.
    Int {
        size: u32,
    },
    Other,
}

fn c_str(data: &[u8], start: usize, len: usize, at: usize) -> Option<&[u8]> {
    let strings = data.get(start..start + len)?;
    let rest = strings.get(at..)?;
    Some(&rest[..rest.iter().position(|&b| b == 0)?])
}

#[cfg(test)]
mod tests {
    use super::{layout::uring_args, *};
    use crate::{NO_FIELD, abi::uring::UringArgs};

    /// A BTF blob of `strings` (NUL-separated, starting with a NUL) and the types `build` adds
    /// with `ty(name, kind, vlen, size_or_type, extra words)`, names given by `s("name")`.
    fn blob(
        strings: &[u8],
        build: impl FnOnce(&dyn Fn(&str) -> u32, &mut dyn FnMut(u32, u32, u32, u32, &[u32])),
    ) -> Vec<u8> {
        let s = |name: &str| {
            let needle = [&[0u8][..], name.as_bytes(), &[0]].concat();
            strings.windows(needle.len()).position(|w| w == needle).unwrap() as u32 + 1
        };
        let mut types = Vec::new();
        let mut ty = |name: u32, kind: u32, vlen: u32, size: u32, extra: &[u32]| {
            for word in [name, kind << 24 | vlen, size].iter().chain(extra) {
                types.extend_from_slice(&word.to_le_bytes());
            }
        };
        build(&s, &mut ty);
        let mut blob = Vec::new();
        for word in
            [u32::from(MAGIC) | 1 << 16, 24, 0, types.len() as u32, types.len() as u32, strings.len() as u32]
        {
            blob.extend_from_slice(&word.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(strings);
        blob
    }

    /// A tiny BTF blob: `struct inner { int a; union { long b; char c; }; }` and
    /// `struct outer { char pad[4]; struct inner in; const struct inner *p; }`.
    fn sample() -> Vec<u8> {
        blob(b"\0int\0long\0char\0inner\0a\0b\0c\0outer\0pad\0in\0p\0", |s, ty| {
            ty(s("int"), KIND_INT, 0, 4, &[32]); // 1
            ty(s("long"), KIND_INT, 0, 8, &[64]); // 2
            ty(s("char"), KIND_INT, 0, 1, &[8]); // 3
            ty(0, KIND_UNION, 2, 8, &[s("b"), 2, 0, s("c"), 3, 0]); // 4
            ty(s("inner"), KIND_STRUCT, 2, 16, &[s("a"), 1, 0, 0, 4, 64]); // 5
            ty(0, KIND_CONST, 0, 5, &[]); // 6
            ty(0, KIND_PTR, 0, 6, &[]); // 7
            ty(0, KIND_ARRAY, 0, 0, &[3, 1, 4]); // 8: char[4]
            ty(s("outer"), KIND_STRUCT, 3, 32, &[s("pad"), 8, 0, s("in"), 5, 64, s("p"), 7, 192]); // 9
        })
    }

    #[test]
    fn members_through_embedded_and_anonymous_members() {
        let btf = Btf::parse(sample()).unwrap();
        assert_eq!(btf.member("outer", "pad").unwrap(), Member { offset: 0, size: 4, element_size: 1 });
        assert_eq!(btf.member("outer", "in.a").unwrap(), Member { offset: 8, size: 4, element_size: 4 });
        assert_eq!(btf.member("outer", "in.c").unwrap(), Member { offset: 16, size: 1, element_size: 1 });
        assert_eq!(btf.member("outer", "p").unwrap(), Member { offset: 24, size: 8, element_size: 8 });
        assert_eq!(btf.struct_size("inner").unwrap(), 16);
        assert!(btf.member("outer", "in.zz").unwrap_err().contains("no member in.zz in struct outer"));
        assert!(btf.member("nope", "a").unwrap_err().contains("no struct nope"));
    }

    /// The io_uring tracepoints as Linux 6.0 to 6.12 declare them: `io_uring_complete(ctx, req,
    /// user_data, res, cflags, extra1, extra2)`.
    #[test]
    fn io_uring_complete_of_linux_6_0() {
        let strings = b"\0int\0u64\0io_kiocb\0btf_trace_io_uring_submit_req\0unsigned int\0btf_trace_io_uring_complete\0";
        let blob = blob(strings, |s, ty| {
            ty(s("int"), KIND_INT, 0, 4, &[1 << 24 | 32]); // 1
            ty(s("u64"), KIND_INT, 0, 8, &[64]); // 2
            ty(s("io_kiocb"), KIND_STRUCT, 0, 8, &[]); // 3
            ty(0, KIND_PTR, 0, 3, &[]); // 4: struct io_kiocb *
            ty(0, KIND_PTR, 0, 0, &[]); // 5: void *
            ty(0, KIND_FUNC_PROTO, 2, 0, &[0, 5, 0, 4]); // 6: (void *__data, struct io_kiocb *req)
            ty(0, KIND_PTR, 0, 6, &[]); // 7
            ty(s("btf_trace_io_uring_submit_req"), KIND_TYPEDEF, 0, 7, &[]); // 8
            ty(s("unsigned int"), KIND_INT, 0, 4, &[32]); // 9
            ty(0, KIND_FUNC_PROTO, 8, 0, &[0, 5, 0, 5, 0, 5, 0, 2, 0, 1, 0, 9, 0, 2, 0, 2]); // 10
            ty(0, KIND_PTR, 0, 10, &[]); // 11
            ty(s("btf_trace_io_uring_complete"), KIND_TYPEDEF, 0, 11, &[]); // 12
        });
        let btf = Btf::parse(blob).unwrap();
        assert_eq!(
            btf.raw_tracepoint_args("io_uring_submit_req").unwrap(),
            [Param::StructPointer("io_kiocb".into())]
        );
        assert_eq!(
            uring_args(&btf).unwrap(),
            UringArgs {
                complete_req: 1,
                complete_res: 3,
                complete_res_at: NO_FIELD,
                complete_args: 7,
                req_failed: 0
            }
        );
    }

    #[test]
    fn refuses_what_is_not_btf() {
        assert!(Btf::parse(b"hello".to_vec()).is_err());
        let mut truncated = sample();
        truncated.truncate(40);
        assert!(Btf::parse(truncated).is_err());
    }

    #[test]
    fn the_running_kernel() {
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else { return };
        let btf = Btf::parse(data).unwrap();
        let parent = btf.member("task_struct", "real_parent").unwrap();
        assert_eq!(parent.size, 8);
        assert_eq!(btf.member("task_struct", "tgid").unwrap().size, 4);
        // Inside anonymous unions on recent kernels.
        assert_eq!(btf.member("dentry", "d_name.len").unwrap().size, 4);
        assert_eq!(btf.member("file", "f_path.dentry").unwrap().size, 8);
        let layout = layout(&btf).unwrap();
        layout.full_path.unwrap();
        // The shape the programs were written against (Linux 6.x).
        assert_eq!(layout.io_uring.unwrap(), UringArgs::DEFAULT);
        assert_eq!(layout.offsets.task_real_parent, parent.offset);
        assert_eq!(
            btf.raw_tracepoint_args("sched_process_fork").unwrap(),
            [Param::StructPointer("task_struct".into()), Param::StructPointer("task_struct".into())]
        );
        assert!(btf.raw_tracepoint_args("no_such_tracepoint").unwrap_err().contains("no tracepoint"));
        // Linux 6.2 and newer: the kfunc, and the type it is given.
        assert!(layout.rdonly_cast.is_ok_and(|id| id > 0));
        assert_eq!(Ok(layout.offsets.btf_dentry), btf.struct_type("dentry"));
        assert_eq!(Ok(layout.offsets.btf_super_block), btf.struct_type("super_block"));
        assert_eq!(Ok(layout.offsets.btf_mount), btf.struct_type("mount"));
        assert_eq!(Ok(layout.offsets.btf_fd_slot), btf.struct_type("fd"));
        assert_eq!(Ok(layout.offsets.btf_word), btf.struct_type("timespec64"));
        // The comm, the uid and the cgroup id by direct loads.
        assert_eq!(layout.offsets.task_comm, btf.member("task_struct", "comm").unwrap().offset);
        assert_eq!(layout.offsets.task_cred, btf.member("task_struct", "cred").unwrap().offset);
        assert_eq!(layout.offsets.kernfs_node_id, btf.member("kernfs_node", "id").unwrap().offset);
        assert_ne!(layout.offsets.task_cgroups, crate::NO_FIELD);
        assert!([layout.offsets.btf_file, layout.offsets.btf_inode].iter().all(|&id| id > 0));
        assert!(btf.function("no_such_function").unwrap_err().contains("no function"));
    }
}
