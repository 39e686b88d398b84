//! The embedded interpreter and the calls into the plugin's Python modules.

use std::ffi::CString;

use pyo3::prelude::*;
use pyo3::types::PyModule;

use super::host_bridge;
use super::interrupt;
use crate::ipc::{ModuleCheck, RunRequest, RunStatus, Script};

/// The plugin's own Python modules, in import order (each may import the ones before it).
const MODULES: &[(&str, &str)] = &[
    ("qntx_values", include_str!("python/qntx_values.py")),
    ("qntx_handlers", include_str!("python/qntx_handlers.py")),
    ("qntx", include_str!("python/qntx.py")),
    ("qntx_rich", include_str!("python/qntx_rich.py")),
    ("qntx_runtime", include_str!("python/qntx_runtime.py")),
];

/// How a program ended, as Python saw it.
pub struct Ran {
    pub status: RunStatus,
    pub result_json: String,
    pub error: Option<String>,
    /// Threads the program started that are still running.
    pub leftover_threads: Vec<String>,
}

/// Which side of a [`Runtime::fork`] this is.
pub enum Forked {
    Parent(i32),
    Child,
}

pub struct Runtime {
    runtime: Py<PyModule>,
    handlers: Py<PyModule>,
    python_version: String,
}

fn describe(py: Python<'_>, error: PyErr) -> String {
    let traceback = error
        .traceback(py)
        .and_then(|tb| tb.format().ok())
        .unwrap_or_default();
    format!("{traceback}{error}")
}

fn load<'py>(py: Python<'py>, name: &str, source: &str) -> PyResult<Bound<'py, PyModule>> {
    let to_c = |text: &str| {
        CString::new(text).map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
    };
    PyModule::from_code(
        py,
        &to_c(source)?,
        &to_c(&format!("{name}.py"))?,
        &to_c(name)?,
    )
}

impl Runtime {
    /// Initialises CPython on the calling (main) thread and loads the plugin's modules.
    pub fn start(environment: &str) -> Result<Self, String> {
        super::interpreter::initialize().map_err(|e| e.to_string())?;
        Python::attach(|py| {
            let start = || -> PyResult<Self> {
                host_bridge::register(py)?;
                let mut loaded = Vec::new();
                for (name, source) in MODULES {
                    loaded.push(load(py, name, source)?);
                }
                let runtime = py.import("qntx_runtime")?;
                let python_version: String =
                    runtime.getattr("setup")?.call1((environment,))?.extract()?;
                Ok(Self {
                    runtime: runtime.unbind(),
                    handlers: py.import("qntx_handlers")?.unbind(),
                    python_version,
                })
            };
            start().map_err(|e| e.to_string())
        })
    }

    /// Imports the environment's preloaded modules, then freezes everything loaded so far out
    /// of the garbage collector's reach: the collector then never writes to those objects, so
    /// the pages forked runs share with the template stay shared. A module that starts a thread
    /// on import cannot be preloaded (the template must stay single-threaded to fork).
    pub fn preload(&self, modules: &[String]) -> Result<(), String> {
        Python::attach(|py| {
            for module in modules {
                py.import(module.as_str())
                    .map_err(|e| format!("cannot preload module {module}: {}", describe(py, e)))?;
            }
            py.import("gc")
                .and_then(|gc| gc.call_method0("freeze"))
                .map_err(|e| format!("cannot freeze the template's objects: {e}"))?;
            Ok::<(), String>(())
        })?;
        let pid = std::process::id() as i32;
        match crate::platform::thread_count(pid) {
            Some(threads) if threads > 1 => Err(format!(
                "preloading {} left {} threads running; a worker forks each run from a \
                 single-threaded template, so drop the module that starts threads on import from \
                 the variant's `preload`",
                modules.join(", "),
                threads - 1
            )),
            _ => Ok(()),
        }
    }

    /// Forks this process with CPython's fork hooks around the `fork`, so the interpreter's
    /// locks and thread state stay consistent on both sides. Call only while this is the
    /// process's one thread (the template checks before each fork).
    pub fn fork(&self) -> std::io::Result<Forked> {
        Python::attach(|_py| {
            // SAFETY: the GIL is held (attach), as PyOS_BeforeFork and the AfterFork hooks
            // require, and no other thread exists that could hold a lock across the fork.
            unsafe {
                pyo3::ffi::PyOS_BeforeFork();
                let pid = libc::fork();
                if pid == 0 {
                    pyo3::ffi::PyOS_AfterFork_Child();
                    return Ok(Forked::Child);
                }
                let error = std::io::Error::last_os_error();
                pyo3::ffi::PyOS_AfterFork_Parent();
                if pid < 0 {
                    Err(error)
                } else {
                    Ok(Forked::Parent(pid))
                }
            }
        })
    }

    pub fn python_version(&self) -> &str {
        &self.python_version
    }

    /// Runs one program.
    pub fn run(&self, request: &RunRequest) -> Ran {
        host_bridge::set_access(request.host.clone());
        let (handler_key, entry_function) = match &request.handler {
            Some(entry) => (Some(entry.key.as_str()), entry.function.as_deref()),
            None => (None, None),
        };
        Python::attach(|py| {
            interrupt::begin_run();
            let outcome = self.runtime.bind(py).getattr("run").and_then(|run| {
                run.call1((
                    &request.code,
                    &request.filename,
                    request.upstream_json.as_deref(),
                    &request.glyph_id,
                    request.python_paths.clone(),
                    handler_key,
                    entry_function,
                ))?
                .extract::<(String, String, Option<String>, Vec<String>)>()
            });
            interrupt::end_run(py);
            // C stdio buffers belong to this run's output too.
            // SAFETY: fflush(NULL) flushes every open C stream.
            unsafe { libc::fflush(std::ptr::null_mut()) };
            let failed = |error: String| Ran {
                status: RunStatus::Error,
                result_json: "null".into(),
                error: Some(error),
                leftover_threads: Vec::new(),
            };
            match outcome {
                Ok((status, result_json, error, leftover_threads)) => Ran {
                    status: parse_status(&status),
                    result_json,
                    error,
                    leftover_threads,
                },
                // Only an interrupt landing inside the runtime's own bookkeeping gets here.
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) => Ran {
                    status: RunStatus::Interrupted,
                    ..failed("KeyboardInterrupt\n".into())
                },
                Err(e) => failed(format!("internal error in the worker: {}", describe(py, e))),
            }
        })
    }

    pub fn check_modules(&self, modules: &[String]) -> Vec<ModuleCheck> {
        Python::attach(|py| {
            let report = self
                .runtime
                .bind(py)
                .getattr("check_modules")
                .and_then(|f| {
                    f.call1((modules.to_vec(),))?
                        .extract::<Vec<(String, Option<String>, Option<String>)>>()
                });
            match report {
                Ok(report) => report
                    .into_iter()
                    .map(|(module, version, error)| ModuleCheck {
                        module,
                        version,
                        error,
                    })
                    .collect(),
                Err(e) => {
                    let error = describe(py, e);
                    modules
                        .iter()
                        .map(|m| ModuleCheck {
                            module: m.clone(),
                            version: None,
                            error: Some(error.clone()),
                        })
                        .collect()
                }
            }
        })
    }

    /// Reads each script's declarations with `ast`; nothing is executed.
    pub fn declare(&self, scripts: &[Script]) -> Vec<Result<String, String>> {
        Python::attach(|py| {
            let declare = self.handlers.bind(py).getattr("declarations_json");
            scripts
                .iter()
                .map(|script| {
                    let filename = format!("<handler {}>", script.key);
                    let answer = declare
                        .as_ref()
                        .map_err(|e| e.to_string())
                        .and_then(|f| f.call1((&script.code, filename)).map_err(|e| e.to_string()))
                        .and_then(|r| r.extract::<(bool, String)>().map_err(|e| e.to_string()));
                    match answer {
                        Ok((true, declarations)) => Ok(declarations),
                        Ok((false, reason)) | Err(reason) => Err(reason),
                    }
                })
                .collect()
        })
    }
}

fn parse_status(status: &str) -> RunStatus {
    match status {
        "ok" => RunStatus::Ok,
        "interrupted" => RunStatus::Interrupted,
        _ => RunStatus::Error,
    }
}
