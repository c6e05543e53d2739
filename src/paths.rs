//! The path filter (`watch(paths=...)`, `--path`): its entries checked and made into what the
//! programs match (`abi::paths`), and the same match on the host, for io_uring opens (whose path
//! is known only when they complete, in the reader) and as the tests' model of the kernel's.
//!
//! An entry ending in `/` is a directory: everything under it matches, and the directory itself.
//! Any other entry is one exact path; a leading `*` makes the rest a suffix (`*.so`). Entries are
//! made absolute against the current directory and normalized (`.`, `..`, repeated `/`), as full
//! paths are; one whose directories are symbolic links is matched both as given (a failed open
//! names it so) and resolved (a successful open's full path is the resolved one).
use std::path::Path;

use opentrace_common::abi::paths::{ENTRY_MAX, KEY_BYTES, MAX_ENTRIES, PathKey, SUFFIX_WORDS, Suffixes};

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    /// A directory, with its trailing `/` (the root is `/`).
    Under(Vec<u8>),
    Exact(Vec<u8>),
    Suffix(Vec<u8>),
}

/// A watcher's path filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathFilter {
    entries: Vec<Entry>,
    /// When every entry is a directory that exists: each, resolved (see `abi::paths::Learned`).
    dirs: Option<Vec<Vec<u8>>>,
}

impl PathFilter {
    /// The filter of these entries; relative ones are taken from `cwd`.
    pub fn new(given: &[Vec<u8>], cwd: &Path) -> Result<PathFilter> {
        if given.is_empty() {
            return Err(Error::Invalid("paths must name at least one path".into()));
        }
        if given.len() > MAX_ENTRIES {
            return Err(Error::Invalid(format!(
                "paths takes at most {MAX_ENTRIES} entries, not {}",
                given.len()
            )));
        }
        let mut entries = Vec::new();
        let mut dirs = Some(Vec::new());
        for raw in given {
            let parsed = parse(raw, cwd)?;
            // The resolved form comes last; a directory that does not resolve is compared by path.
            match (parsed.last(), &mut dirs) {
                (Some(Entry::Under(dir)), Some(known)) if is_dir(dir) => {
                    if !known.contains(dir) {
                        known.push(dir.clone());
                    }
                }
                _ => dirs = None,
            }
            for entry in parsed {
                if !entries.contains(&entry) {
                    entries.push(entry);
                }
            }
        }
        Ok(PathFilter { entries, dirs })
    }

    /// The directories to match successful opens by, when every entry is one that exists (their
    /// resolved paths, with their trailing `/`).
    pub fn dirs(&self) -> Option<&[Vec<u8>]> {
        self.dirs.as_deref()
    }

    /// The trie's keys: a directory's prefix and the directory itself, an exact path with its NUL.
    pub fn keys(&self) -> Vec<PathKey> {
        let key = |bytes: &[u8], nul: bool| {
            let mut data = [0; KEY_BYTES];
            data[..bytes.len()].copy_from_slice(bytes);
            PathKey { prefix_len: 8 * (bytes.len() + usize::from(nul)) as u32, data }
        };
        let mut keys = Vec::new();
        for entry in &self.entries {
            match entry {
                Entry::Under(dir) => {
                    keys.push(key(dir, false));
                    if dir.len() > 1 {
                        keys.push(key(&dir[..dir.len() - 1], true));
                    }
                }
                Entry::Exact(path) => keys.push(key(path, true)),
                Entry::Suffix(_) => {}
            }
        }
        keys
    }

    /// The suffix entries, as the programs read them.
    pub fn suffixes(&self) -> Suffixes {
        let mut suffixes = Suffixes::NONE;
        for entry in &self.entries {
            if let Entry::Suffix(bytes) = entry {
                let i = suffixes.count as usize;
                suffixes.lens[i] = bytes.len() as u32;
                for (w, chunk) in bytes.chunks(8).enumerate().take(SUFFIX_WORDS) {
                    let mut word = [0; 8];
                    word[..chunk.len()].copy_from_slice(chunk);
                    suffixes.words[i][w] = u64::from_le_bytes(word);
                }
                suffixes.count += 1;
            }
        }
        suffixes
    }

    /// Whether a full path matches, as the programs decide it.
    pub fn matches(&self, full: &[u8]) -> bool {
        self.entries.iter().any(|entry| match entry {
            Entry::Under(dir) => full.starts_with(dir) || full == &dir[..dir.len() - 1],
            Entry::Exact(path) => full == path.as_slice(),
            Entry::Suffix(end) => full.ends_with(end),
        })
    }
}

/// One entry as given, and its resolved form when that differs.
fn parse(raw: &[u8], cwd: &Path) -> Result<Vec<Entry>> {
    let shown = String::from_utf8_lossy(raw);
    if raw.contains(&0) {
        return Err(Error::Invalid(format!("a path entry cannot hold a NUL byte: {shown:?}")));
    }
    if let Some(end) = raw.strip_prefix(b"*") {
        if end.is_empty() {
            return Err(Error::Invalid("a suffix entry needs text after '*' (such as '*.so')".into()));
        }
        check_length(end, &shown)?;
        return Ok(vec![Entry::Suffix(end.to_vec())]);
    }
    if raw.is_empty() {
        return Err(Error::Invalid("a path entry cannot be empty".into()));
    }
    let under = raw.ends_with(b"/");
    let joined = if raw.starts_with(b"/") {
        raw.to_vec()
    } else {
        let mut joined = std::os::unix::ffi::OsStrExt::as_bytes(cwd.as_os_str()).to_vec();
        joined.push(b'/');
        joined.extend_from_slice(raw);
        joined
    };
    let normal = normalize(&joined);
    let mut entries = vec![entry(&normal, under, &shown)?];
    let path: &Path = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&normal).as_ref();
    if let Ok(real) = std::fs::canonicalize(path) {
        let real = std::os::unix::ffi::OsStrExt::as_bytes(real.as_os_str()).to_vec();
        if real != normal {
            entries.push(entry(&real, under, &shown)?);
        }
    }
    Ok(entries)
}

/// Whether `dir` (with its trailing `/`) is a directory that resolves to itself.
fn is_dir(dir: &[u8]) -> bool {
    let path: &Path = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(dir).as_ref();
    std::fs::canonicalize(path).is_ok_and(|real| {
        real.is_dir() && {
            let real = std::os::unix::ffi::OsStrExt::as_bytes(real.as_os_str());
            real == dir || (real.len() + 1 == dir.len() && dir.starts_with(real))
        }
    })
}

fn entry(normal: &[u8], under: bool, shown: &str) -> Result<Entry> {
    if under {
        let mut dir = normal.to_vec();
        if dir != b"/" {
            dir.push(b'/');
        }
        check_length(&dir, shown)?;
        Ok(Entry::Under(dir))
    } else {
        check_length(normal, shown)?;
        Ok(Entry::Exact(normal.to_vec()))
    }
}

fn check_length(bytes: &[u8], shown: &str) -> Result<()> {
    if bytes.len() > ENTRY_MAX {
        return Err(Error::Invalid(format!(
            "a path entry is at most {ENTRY_MAX} bytes (a directory with its trailing '/', after it \
             is made absolute), and {shown:?} is {}: give a shorter directory above it, or a suffix",
            bytes.len()
        )));
    }
    Ok(())
}

/// An absolute path without `.`, `..` or repeated `/` (and no trailing `/` but for the root), as
/// the kernel's walk writes full paths.
fn normalize(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    if parts.is_empty() {
        return b"/".to_vec();
    }
    parts.iter().flat_map(|part| [b"/".as_slice(), part].concat()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(entries: &[&str]) -> PathFilter {
        let given: Vec<Vec<u8>> = entries.iter().map(|e| e.as_bytes().to_vec()).collect();
        PathFilter::new(&given, Path::new("/no/such/cwd")).unwrap()
    }

    #[test]
    fn a_directory_matches_what_is_under_it_and_itself() {
        let f = filter(&["/no/such/dir/"]);
        assert!(f.matches(b"/no/such/dir/a"));
        assert!(f.matches(b"/no/such/dir/a/b/c"));
        assert!(f.matches(b"/no/such/dir"));
        assert!(!f.matches(b"/no/such/directory"));
        assert!(!f.matches(b"/no/such"));
        let keys = f.keys();
        assert_eq!(keys.len(), 2);
        // The prefix "/no/such/dir/", and "/no/such/dir" with its NUL.
        assert_eq!(keys[0].prefix_len, 8 * 13);
        assert_eq!((keys[1].prefix_len, keys[1].data[12]), (8 * 13, 0));
        assert_eq!(&keys[1].data[..12], b"/no/such/dir");
        assert_eq!(f.dirs(), None, "a directory that does not exist is compared by path");
        assert!(filter(&["/"]).matches(b"/anything"));
        assert_eq!(filter(&["/"]).dirs(), Some(&[b"/".to_vec()][..]));
        assert_eq!(filter(&["/", "*.so"]).dirs(), None);
        assert_eq!(filter(&["/"]).keys().len(), 1);
    }

    #[test]
    fn exact_and_suffix_entries() {
        let f = filter(&["/no/f", "*.so"]);
        assert!(f.matches(b"/no/f"));
        assert!(!f.matches(b"/no/f2"));
        assert!(!f.matches(b"/no"));
        assert!(f.matches(b"/lib/libc.so"));
        assert!(!f.matches(b"/lib/libc.so.6"));
        let suffixes = f.suffixes();
        assert_eq!((suffixes.count, suffixes.lens[0]), (1, 3));
        assert_eq!(suffixes.words[0][0], u64::from_le_bytes(*b".so\0\0\0\0\0"));
    }

    #[test]
    fn entries_are_made_absolute_and_normal() {
        let f = filter(&["rel/../x//y/./"]);
        assert!(f.matches(b"/no/such/cwd/x/y/z"));
        assert_eq!(normalize(b"/a/../../b/"), b"/b");
        assert_eq!(normalize(b"/.."), b"/");
    }

    #[test]
    fn a_symlinked_directory_is_matched_both_ways() {
        let dir = std::env::temp_dir().join(format!("opentrace-paths-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("real")).unwrap();
        let link = dir.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(dir.join("real"), &link).unwrap();
        let given = format!("{}/", link.display());
        let f = PathFilter::new(&[given.into_bytes()], Path::new("/")).unwrap();
        let real = std::fs::canonicalize(dir.join("real")).unwrap();
        assert!(f.matches(format!("{}/f", real.display()).as_bytes()));
        assert!(f.matches(format!("{}/f", link.display()).as_bytes()));
        assert_eq!(f.dirs(), Some(&[format!("{}/", real.display()).into_bytes()][..]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_entries_are_refused() {
        let refused = |entries: &[&[u8]]| {
            let given: Vec<Vec<u8>> = entries.iter().map(|e| e.to_vec()).collect();
            PathFilter::new(&given, Path::new("/")).is_err()
        };
        assert!(refused(&[]));
        assert!(refused(&[b""]));
        assert!(refused(&[b"*"]));
        assert!(refused(&[b"/a\0b"]));
        let long = [b"/".as_slice(), &[b'a'; 254], b"/"].concat();
        assert!(refused(&[&long]));
        assert!(!refused(&[&long[..255]]));
        let many: Vec<&[u8]> = vec![b"/x"; MAX_ENTRIES + 1];
        assert!(refused(&many));
    }
}
