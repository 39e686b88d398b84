//! Residue: what a run left in the interpreter that a later run could see.
//!
//! A worker is reused only while every run leaves the interpreter as the fresh worker had it.
//! This file is the Python half of that check (`platform::ProcessState` is the process half).
//! A fresh worker records a [`PythonBaseline`] before its first run; after every run
//! [`PythonBaseline::residue`] names what differs, and any difference retires the worker (see
//! `worker/mod.rs`). Four probes, each cheap, together cover the ways state outlives a run:
//!
//! * **survivors**: after a garbage collection, objects the run created that are still alive.
//!   The fresh worker's objects are frozen out of the collector (`gc.freeze`), so what the
//!   collector still tracks was made since. A cache entry, a patched-in function, a handler
//!   added to a logger, an import hook, a stashed value: each is a new object kept alive by
//!   something older. Costs one collection of the run's own leftovers.
//! * **namespaces**: CPython stamps every dict with a new version on each change. The dicts of
//!   every module and class, and the dicts, instance dicts, lists and sets they hold directly,
//!   are compared with their stamps (lists and sets, which have none, by their items). This
//!   catches rebinding to objects that already existed (`json.dumps = print`,
//!   `logging.root.level = 10`, `del sys.path_hooks[0]`), which creates nothing.
//! * **settings**: interpreter-wide state that lives in no dict (the recursion limit, trace and
//!   profile functions, the collector's switches, atexit callbacks, Python-level signal
//!   handlers, `random`'s generator state, ...), read through getters captured at the start.
//! * **taint**: an audit hook marks a run that reached past the interpreter's own API, where the
//!   probes above cannot follow: raw memory (`ctypes`), every object (`gc.get_objects`,
//!   `gc.get_referrers`), code and defaults of existing functions (`object.__setattr__`), or
//!   another audit hook.
//!
//! Nothing here runs code a program could have replaced: the objects watched, the getters and
//! the collector's functions were captured before any run, and the comparisons are C-level.
//! State kept in C by an extension module beyond what it exposes to Python (a C library's own
//! globals) is out of reach: see the README's trust model.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyModule, PyTuple, PyType};

/// Audit events after which a run's effects cannot be followed by the other probes. A trailing
/// `.` matches every event of that family.
const TAINTING_EVENTS: &[&str] = &[
    "ctypes.",
    "gc.get_objects",
    "gc.get_referrers",
    "gc.get_referents",
    "object.__setattr__",
    "object.__delattr__",
    "sys.addaudithook",
];

/// Index + 1 into [`TAINTING_EVENTS`] of the first such event since the last reset (0: none).
static TAINT: AtomicUsize = AtomicUsize::new(0);
/// Set while the check itself calls a tainting function (it counts survivors with
/// `gc.get_objects`).
static MUTED: AtomicBool = AtomicBool::new(false);

extern "C" {
    // Not wrapped by pyo3-ffi; part of CPython's stable C API since 3.8.
    fn PySys_AddAuditHook(
        hook: Option<unsafe extern "C" fn(*const c_char, *mut ffi::PyObject, *mut c_void) -> c_int>,
        user_data: *mut c_void,
    ) -> c_int;
}

unsafe extern "C" fn on_audit_event(
    event: *const c_char,
    _arguments: *mut ffi::PyObject,
    _user_data: *mut c_void,
) -> c_int {
    if event.is_null() || MUTED.load(Ordering::Relaxed) || TAINT.load(Ordering::Relaxed) != 0 {
        return 0;
    }
    // SAFETY: CPython passes a NUL-terminated event name that lives for the call.
    let event = unsafe { CStr::from_ptr(event) }.to_bytes();
    let tainting = TAINTING_EVENTS.iter().position(|name| {
        let name = name.as_bytes();
        if name.ends_with(b".") {
            event.starts_with(name)
        } else {
            event == name
        }
    });
    if let Some(index) = tainting {
        TAINT.store(index + 1, Ordering::Relaxed);
    }
    0
}

/// Installs the audit hook; once per process, in the template (forks inherit it). A C hook
/// cannot be removed or seen from Python.
pub fn install_audit_hook() -> Result<(), String> {
    // SAFETY: the hook is a plain function that only touches atomics; no user data.
    let status = unsafe { PySys_AddAuditHook(Some(on_audit_event), std::ptr::null_mut()) };
    if status == 0 {
        Ok(())
    } else {
        Err("CPython refused the residue check's audit hook".into())
    }
}

/// The stamp CPython puts on a dict and changes on every modification (PEP 509).
fn dict_version(dict: *mut ffi::PyObject) -> u64 {
    // SAFETY: callers pass a live dict (held by a `Py` of ours); reading the field is a plain
    // load. The field is deprecated from 3.12 on, but still maintained there and in 3.13.
    #[allow(deprecated)]
    unsafe {
        (*(dict as *mut ffi::PyDictObject)).ma_version_tag
    }
}

/// The dict of a class (`tp_dict`); null for static built-in types on 3.12 and later.
fn class_dict(class: &Bound<'_, PyType>) -> *mut ffi::PyObject {
    // SAFETY: `class` is a live type object; reading `tp_dict` is a plain load.
    unsafe { (*class.as_type_ptr()).tp_dict }
}

/// Which objects a list or set holds, in order for a list: a change of any item changes it.
/// Read straight from the list's array or the set's table (no reference counting, so a list of
/// thousands costs microseconds).
fn items_fingerprint(container: &Bound<'_, PyAny>) -> u64 {
    let mix = |hash: u64, pointer: usize| (hash ^ pointer as u64).wrapping_mul(0x100_0000_01b3);
    let object = container.as_ptr();
    // SAFETY: `object` is a live list or set (held by a `Py` of ours) and the GIL is held, so
    // its array or table cannot change while we read it; lengths come from the object itself.
    unsafe {
        if ffi::PyList_Check(object) != 0 {
            let list = object as *mut ffi::PyListObject;
            let len = usize::try_from(ffi::Py_SIZE(object)).unwrap_or(0);
            if len == 0 || (*list).ob_item.is_null() {
                return mix(0, 0);
            }
            let items = std::slice::from_raw_parts((*list).ob_item, len);
            let hash = items
                .iter()
                .fold(0xcbf2_9ce4_8422_2325, |h, item| mix(h, *item as usize));
            return mix(hash, len);
        }
        if ffi::PyAnySet_Check(object) != 0 {
            let set = object as *mut ffi::PySetObject;
            let slots = usize::try_from((*set).mask).unwrap_or(0) + 1;
            let table = std::slice::from_raw_parts((*set).table, slots);
            // A set's order is its table's: a sum of mixed pointers does not depend on it.
            let sum = table
                .iter()
                .filter(|entry| !entry.key.is_null())
                .fold(0u64, |sum, entry| {
                    sum.wrapping_add(mix(0, entry.key as usize))
                });
            return mix(sum, usize::try_from((*set).used).unwrap_or(0));
        }
    }
    0
}

/// Whether a value is made only of None, booleans, numbers, strings and tuples of them (a
/// built-in tuple type: struct sequences count, a program's tuple subclass does not), so that
/// comparing it runs no code of a program's.
fn is_plain(object: *mut ffi::PyObject) -> bool {
    // SAFETY: `object` is live (held by the caller) and the GIL is held; only type pointers,
    // flags and tuple items are read.
    unsafe {
        if object == ffi::Py_None() {
            return true;
        }
        let kind = ffi::Py_TYPE(object);
        let exact = [
            &raw mut ffi::PyLong_Type,
            &raw mut ffi::PyFloat_Type,
            &raw mut ffi::PyUnicode_Type,
            &raw mut ffi::PyBool_Type,
        ];
        if exact.contains(&kind) {
            return true;
        }
        let static_type = (*kind).tp_flags & ffi::Py_TPFLAGS_HEAPTYPE == 0;
        if ffi::PyTuple_Check(object) != 0 && static_type {
            let len = ffi::PyTuple_GET_SIZE(object);
            return (0..len).all(|i| is_plain(ffi::PyTuple_GET_ITEM(object, i)));
        }
        false
    }
}

/// Whether a setting's value is what it was: the same object, or an equal plain value
/// ([`is_plain`]). Anything else counts as changed, so no `__eq__` of a program's ever runs.
fn same_setting(before: &Bound<'_, PyAny>, now: &Bound<'_, PyAny>) -> bool {
    before.is(now)
        || (is_plain(before.as_ptr()) && is_plain(now.as_ptr()) && before.eq(now).unwrap_or(false))
}

struct Watched<T> {
    label: String,
    object: Py<T>,
    stamp: u64,
}

/// Bytes of a C object's own fields (a random generator's state), compared by a hash.
struct CState {
    label: String,
    object: Py<PyAny>,
    offset: usize,
    len: usize,
    stamp: u64,
}

impl CState {
    fn hash(&self) -> u64 {
        // SAFETY: `object` is live (we hold it) and its type's fixed size, checked by the runtime
        // when it listed it, covers `offset..offset + len`; the GIL keeps it from changing.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (self.object.as_ptr() as *const u8).add(self.offset),
                self.len,
            )
        };
        bytes
            .chunks(8)
            .fold(0xcbf2_9ce4_8422_2325_u64, |hash, chunk| {
                let mut word = [0u8; 8];
                word[..chunk.len()].copy_from_slice(chunk);
                (hash ^ u64::from_ne_bytes(word)).wrapping_mul(0x100_0000_01b3)
            })
    }
}

impl<T> Watched<T> {
    /// Watched from now on; its stamp comes with the next `restamp`.
    fn unstamped((label, object): (String, Bound<'_, T>)) -> Self {
        Self {
            label,
            object: object.unbind(),
            stamp: 0,
        }
    }
}

/// Interpreter-wide settings: read all at once (one call, a tuple in `labels` order).
struct Settings {
    labels: Vec<String>,
    read: Py<PyAny>,
    values: Py<PyTuple>,
}

type Labelled<'py, T> = Vec<(String, Bound<'py, T>)>;

/// What `qntx_runtime.residue_watch` returns: namespaces, classes, containers, the settings'
/// labels and reader, and C states (label, object, offset, length).
type WatchList<'py> = (
    Labelled<'py, PyDict>,
    Labelled<'py, PyType>,
    Labelled<'py, PyAny>,
    (Vec<String>, Bound<'py, PyAny>),
    Vec<(String, Bound<'py, PyAny>, usize, usize)>,
);

/// A fresh worker's interpreter, as the residue check compares it.
pub struct PythonBaseline {
    namespaces: Vec<Watched<PyDict>>,
    classes: Vec<Watched<PyType>>,
    containers: Vec<Watched<PyAny>>,
    settings: Settings,
    c_states: Vec<CState>,
    /// `sys.modules` and what it held: compared by content, since each run's `__main__` is put
    /// in and taken out again.
    modules: Py<PyDict>,
    module_entries: Vec<(Py<PyAny>, Py<PyAny>)>,
    get_objects: Py<PyAny>,
    freeze: Py<PyAny>,
    survivors: usize,
}

/// Most things named in one worker's residue; the first ones are enough to say why.
const MAX_NAMED: usize = 5;

impl PythonBaseline {
    /// Collects what to watch (walking every module and class: milliseconds), in the template,
    /// once: every process forked from it shares the objects, so each only [`restamp`]s them.
    ///
    /// [`restamp`]: Self::restamp
    pub fn watch(py: Python<'_>, runtime: &Bound<'_, PyModule>) -> PyResult<Self> {
        let (namespaces, classes, containers, (labels, read), c_states): WatchList =
            runtime.getattr("residue_watch")?.call0()?.extract()?;
        // Stamped by `restamp` below, which every fork repeats for itself.
        let c_states = c_states
            .into_iter()
            .map(|(label, object, offset, len)| CState {
                label,
                object: object.unbind(),
                offset,
                len,
                stamp: 0,
            })
            .collect();
        let namespaces = namespaces.into_iter().map(Watched::unstamped).collect();
        let classes = classes
            .into_iter()
            .filter(|(_, class)| !class_dict(class).is_null())
            .map(Watched::unstamped)
            .collect();
        let containers = containers.into_iter().map(Watched::unstamped).collect();
        let read = read.unbind();
        let modules = py
            .import("sys")?
            .getattr("modules")?
            .cast_into::<PyDict>()?;
        // The stamps, entries, values and survivors are recorded by `restamp`, below.
        let settings = Settings {
            labels,
            values: PyTuple::empty(py).unbind(),
            read,
        };
        let gc = py.import("gc")?;
        let mut baseline = Self {
            namespaces,
            classes,
            containers,
            settings,
            c_states,
            modules: modules.unbind(),
            module_entries: Vec::new(),
            get_objects: gc.getattr("get_objects")?.unbind(),
            freeze: gc.getattr("freeze")?.unbind(),
            survivors: 0,
        };
        baseline.restamp(py)?;
        Ok(baseline)
    }

    /// Records the watched objects as they are now: call in a fresh worker, before its first
    /// run, after everything it does for itself (see `Runtime::prepare_worker`).
    pub fn restamp(&mut self, py: Python<'_>) -> PyResult<()> {
        for watched in &mut self.namespaces {
            watched.stamp = dict_version(watched.object.as_ptr());
        }
        for watched in &mut self.classes {
            watched.stamp = dict_version(class_dict(watched.object.bind(py)));
        }
        for watched in &mut self.containers {
            watched.stamp = items_fingerprint(watched.object.bind(py));
        }
        for state in &mut self.c_states {
            state.stamp = state.hash();
        }
        self.module_entries = self
            .modules
            .bind(py)
            .iter()
            .map(|(name, module)| (name.unbind(), module.unbind()))
            .collect();
        // SAFETY: a full collection with the GIL held.
        unsafe { ffi::PyGC_Collect() };
        self.freeze.bind(py).call0()?;
        // Read after the freeze: what the collector's getters say about it is the baseline's.
        self.settings.values = self
            .settings
            .read
            .bind(py)
            .call0()?
            .cast_into::<PyTuple>()?
            .unbind();
        self.survivors = self.survivors(py)?.0;
        // Counting survivors used gc.get_objects; nothing before counts against the first run.
        TAINT.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Objects the collector tracks that are not frozen (counted after a collection), and the
    /// type names of the first few.
    fn survivors(&self, py: Python<'_>) -> PyResult<(usize, Vec<String>)> {
        MUTED.store(true, Ordering::Relaxed);
        let objects = self.get_objects.bind(py).call0();
        MUTED.store(false, Ordering::Relaxed);
        let objects = objects?.cast_into::<PyList>()?;
        let names = objects
            .iter()
            .take(MAX_NAMED)
            .filter_map(|object| object.get_type().qualname().ok())
            .map(|name| name.to_string())
            .collect();
        Ok((objects.len(), names))
    }

    /// What differs from the baseline: empty when a later run would see a fresh interpreter.
    /// Cheapest probes first; stops once a few things are named.
    pub fn residue(&self, py: Python<'_>) -> Vec<String> {
        // First: a collection runs the finalizers of the run's garbage, which are the run's
        // code too, and whatever they change must be seen by the probes below.
        // SAFETY: a full collection with the GIL held; frozen objects are not looked at.
        unsafe { ffi::PyGC_Collect() };
        let mut found = Vec::new();
        let taint = TAINT.swap(0, Ordering::Relaxed);
        if taint > 0 {
            found.push(format!(
                "it used {}, which reaches state no check can follow",
                TAINTING_EVENTS[taint - 1].trim_end_matches('.')
            ));
        }
        let changed = |label: &str| format!("{label} changed");
        let namespaces = self
            .namespaces
            .iter()
            .filter(|w| dict_version(w.object.as_ptr()) != w.stamp)
            .map(|w| changed(&w.label));
        let classes = self
            .classes
            .iter()
            .filter(|w| dict_version(class_dict(w.object.bind(py))) != w.stamp)
            .map(|w| changed(&w.label));
        let containers = self
            .containers
            .iter()
            .filter(|w| items_fingerprint(w.object.bind(py)) != w.stamp)
            .map(|w| changed(&w.label));
        found.extend(namespaces.chain(classes).chain(containers).take(MAX_NAMED));
        if found.len() >= MAX_NAMED {
            return found;
        }
        if let Some(modules) = self.modules_changed(py) {
            found.push(modules);
        }
        found.extend(self.settings_changed(py));
        found.extend(
            self.c_states
                .iter()
                .filter(|state| state.hash() != state.stamp)
                .map(|state| changed(&state.label)),
        );
        match self.survivors(py) {
            Ok((count, names)) if count > self.survivors => found.push(format!(
                "{} objects it created are still alive ({}{})",
                count - self.survivors,
                names.join(", "),
                if count > names.len() { ", ..." } else { "" }
            )),
            Ok(_) => {}
            Err(error) => found.push(format!("its objects could not be counted: {error}")),
        }
        found
    }

    /// The labels of the settings that differ (all of them if they cannot be read).
    fn settings_changed(&self, py: Python<'_>) -> Vec<String> {
        let before = self.settings.values.bind(py);
        let now = self.settings.read.bind(py).call0();
        let now = match now.as_ref().map(|now| now.cast::<PyTuple>()) {
            Ok(Ok(now)) if now.len() == before.len() => now,
            _ => return vec!["the interpreter's settings could not be read".into()],
        };
        before
            .iter()
            .zip(now.iter())
            .zip(&self.settings.labels)
            .filter(|((before, now), _)| !same_setting(before, now))
            .map(|(_, label)| format!("{label} changed"))
            .collect()
    }

    fn modules_changed(&self, py: Python<'_>) -> Option<String> {
        let modules = self.modules.bind(py);
        if modules.len() != self.module_entries.len() {
            return Some(format!(
                "sys.modules changed ({} modules, {} in a fresh worker)",
                modules.len(),
                self.module_entries.len()
            ));
        }
        self.module_entries.iter().find_map(|(name, module)| {
            let now = modules.get_item(name.bind(py)).ok().flatten();
            match now {
                Some(now) if now.is(module.bind(py)) => None,
                _ => Some(format!("sys.modules[{}] changed", name.bind(py))),
            }
        })
    }
}
