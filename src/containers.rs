//! Containers' names from their runtimes: a process-wide registry, container id -> what its
//! runtime says of it ([`Container`]), filled by the resolver thread
//! (`python/opentrace/_containers.py`, which asks docker, podman, containerd) and read as events
//! are decoded ([`Lookup`]). Reading never waits for a runtime: a container the registry does not
//! know is queued for the resolver ([`containers_wanted`]) and its events carry None until the
//! answer is in.
use std::{
    collections::HashMap,
    sync::{
        Arc, Condvar, LazyLock, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use opentrace_common::cgroup::{Container, container_id};
use pyo3::prelude::*;

/// Most containers the registry holds (the resolver forgets those gone from their runtime);
/// past it, new ones are not asked for and their events carry None.
const MAX_KNOWN: usize = 65536;
/// Most ids waiting for the resolver (one that is not running leaves them here).
const MAX_WANTED: usize = 4096;
/// Most cgroups a [`Lookup`] remembers before it starts afresh.
const MAX_CACHED: usize = 4096;

/// By container id (64 hex digits): what the runtime said, or None (asked, no answer yet or none
/// to give).
type Known = HashMap<Box<[u8]>, Option<Arc<Container>>>;

struct Registry {
    known: RwLock<Known>,
    /// Moves on at every answer or forgotten container: lookups' caches are stale.
    generation: AtomicU64,
    wanted: Mutex<Wanted>,
    ready: Condvar,
}

#[derive(Default)]
struct Wanted {
    ids: Vec<Box<[u8]>>,
    stopped: bool,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Registry {
    known: RwLock::new(HashMap::new()),
    generation: AtomicU64::new(0),
    wanted: Mutex::new(Wanted::default()),
    ready: Condvar::new(),
});

impl Registry {
    /// What is known of container `id`; an id never seen is queued for the resolver.
    fn find_or_ask(&self, id: &[u8]) -> Option<Arc<Container>> {
        if let Some(found) = self.known.read().unwrap_or_else(|e| e.into_inner()).get(id) {
            return found.clone();
        }
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        if known.contains_key(id) || known.len() >= MAX_KNOWN {
            return known.get(id).cloned().flatten();
        }
        known.insert(id.into(), None);
        drop(known);
        let mut wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        if wanted.ids.len() < MAX_WANTED {
            wanted.ids.push(id.into());
            self.ready.notify_one();
        }
        None
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// One reader's view of the registry, by cgroup id: each cgroup's path is parsed for a container
/// id once (until the registry changes), and most events cost one map lookup, or none when they
/// come from the cgroup of the event before (a storm's do).
#[derive(Default)]
pub struct Lookup {
    generation: u64,
    by_cgroup: HashMap<u64, Option<Arc<Container>>>,
    last: Option<(u64, Option<Arc<Container>>)>,
}

impl Lookup {
    /// What the runtime said of the container of cgroup `cgroup_id` (whose path is `path`).
    pub fn get(&mut self, cgroup_id: u64, path: &[u8]) -> Option<Arc<Container>> {
        let now = REGISTRY.generation.load(Ordering::Acquire);
        if now != self.generation || self.by_cgroup.len() >= MAX_CACHED {
            self.by_cgroup.clear();
            self.last = None;
            self.generation = now;
        }
        if let Some((last, found)) = &self.last
            && *last == cgroup_id
        {
            return found.clone();
        }
        let found = match self.by_cgroup.get(&cgroup_id) {
            Some(found) => found.clone(),
            None => {
                let found = container_id(path).and_then(|id| REGISTRY.find_or_ask(id));
                self.by_cgroup.insert(cgroup_id, found.clone());
                found
            }
        };
        self.last = Some((cgroup_id, found.clone()));
        found
    }
}

type Info = (Option<String>, Option<String>, Option<String>, Option<String>);

fn info(container: &Container) -> Info {
    let text = |b: &Option<Box<[u8]>>| b.as_deref().map(|b| String::from_utf8_lossy(b).into_owned());
    (text(&container.name), text(&container.image), text(&container.pod), text(&container.namespace))
}

/// Container ids that events met and the registry does not know, waiting up to `timeout`
/// seconds (GIL released) for one; None once [`containers_stop`] was called.
#[pyfunction]
pub fn containers_wanted(py: Python<'_>, timeout: f64) -> Option<Vec<String>> {
    let timeout = Duration::try_from_secs_f64(timeout).unwrap_or(Duration::ZERO);
    let wanted = py.detach(|| wait_wanted(timeout))?;
    Some(wanted.iter().map(|id| String::from_utf8_lossy(id).into_owned()).collect())
}

fn wait_wanted(timeout: Duration) -> Option<Vec<Box<[u8]>>> {
    let wanted = REGISTRY.wanted.lock().unwrap_or_else(|e| e.into_inner());
    let (mut wanted, _) = REGISTRY
        .ready
        .wait_timeout_while(wanted, timeout, |w| w.ids.is_empty() && !w.stopped)
        .unwrap_or_else(|e| e.into_inner());
    (!wanted.stopped).then(|| std::mem::take(&mut wanted.ids))
}

/// Learns what container `id`'s runtime says of it (all None: it answered nothing).
#[pyfunction]
#[pyo3(signature = (id, name=None, image=None, pod=None, namespace=None))]
pub fn container_learn(
    id: &str,
    name: Option<&str>,
    image: Option<&str>,
    pod: Option<&str>,
    namespace: Option<&str>,
) {
    let field = |s: Option<&str>| s.map(|s| Box::from(s.as_bytes()));
    let container =
        Container { name: field(name), image: field(image), pod: field(pod), namespace: field(namespace) };
    let container = (container != Container::default()).then(|| Arc::new(container));
    REGISTRY.known.write().unwrap_or_else(|e| e.into_inner()).insert(id.as_bytes().into(), container);
    REGISTRY.changed();
}

/// Forgets containers (gone, or to be asked for again at their next event).
#[pyfunction]
pub fn containers_forget(ids: Vec<String>) {
    let mut known = REGISTRY.known.write().unwrap_or_else(|e| e.into_inner());
    for id in ids {
        known.remove(id.as_bytes());
    }
    drop(known);
    REGISTRY.changed();
}

/// Every container id the registry holds, with what is known of it (None: asked, no answer).
#[pyfunction]
pub fn containers_known() -> HashMap<String, Option<Info>> {
    let known = REGISTRY.known.read().unwrap_or_else(|e| e.into_inner());
    known.iter().map(|(id, c)| (String::from_utf8_lossy(id).into_owned(), c.as_deref().map(info))).collect()
}

/// Wakes the resolver for good (at exit), or lets it wait again (`stopped=False`).
#[pyfunction]
#[pyo3(signature = (stopped=true))]
pub fn containers_stop(stopped: bool) {
    REGISTRY.wanted.lock().unwrap_or_else(|e| e.into_inner()).stopped = stopped;
    REGISTRY.ready.notify_all();
}

/// The container id a cgroup path names (as events' `container_id`), for the resolver and
/// `watch(container=...)`.
#[pyfunction]
pub fn cgroup_container_id(path: &[u8]) -> Option<String> {
    container_id(path).map(|id| String::from_utf8_lossy(id).into_owned())
}

/// Every container that a cgroup under the cgroup2 mount names: its id -> the path of the
/// shallowest such cgroup (its own; those below it are its sub-cgroups), for
/// `watch(container=...)`.
#[pyfunction]
pub fn container_cgroups(py: Python<'_>) -> HashMap<String, String> {
    fn walk(dir: &std::path::Path, relative: &mut Vec<u8>, found: &mut HashMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let len = relative.len();
            relative.push(b'/');
            relative.extend_from_slice(entry.file_name().as_encoded_bytes());
            match container_id(relative) {
                // Deeper ones are the container's own sub-cgroups.
                Some(id) => {
                    let path = String::from_utf8_lossy(relative).into_owned();
                    found.entry(String::from_utf8_lossy(id).into_owned()).or_insert(path);
                }
                None => walk(&entry.path(), relative, found),
            }
            relative.truncate(len);
        }
    }
    py.detach(|| {
        let mut found = HashMap::new();
        if let Some(mount) = crate::cgroup::mount() {
            walk(&mount, &mut Vec::new(), &mut found);
        }
        found
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_is_asked_for_once_and_named_once_learned() {
        let id = "ab".repeat(32);
        let path = format!("/docker/{id}");
        let mut lookup = Lookup::default();
        assert_eq!(lookup.get(7, path.as_bytes()), None);
        assert_eq!(lookup.get(7, path.as_bytes()), None);
        let mut other = Lookup::default();
        assert_eq!(other.get(8, format!("/system.slice/docker-{id}.scope").as_bytes()), None);
        assert_eq!(other.get(9, b"/user.slice"), None);
        let asked = wait_wanted(Duration::ZERO).unwrap();
        assert_eq!(asked.iter().filter(|a| a[..] == *id.as_bytes()).count(), 1, "{asked:?}");

        container_learn(&id, Some("web"), Some("nginx:1"), None, None);
        let known = lookup.get(7, path.as_bytes()).unwrap();
        assert_eq!((known.name.as_deref(), known.pod.as_deref()), (Some(&b"web"[..]), None));
        let scope = format!("/system.slice/docker-{id}.scope");
        assert_eq!(other.get(8, scope.as_bytes()), Some(known));
        // Known by cgroup id from then on (each event passes its cgroup's path).
        assert!(other.get(8, b"/not/parsed/again").is_some());

        // Forgotten: asked for again at its next event.
        containers_forget(vec![id.clone()]);
        assert_eq!(lookup.get(7, path.as_bytes()), None);
        assert!(wait_wanted(Duration::ZERO).unwrap().contains(&id.as_bytes().into()));
    }
}
