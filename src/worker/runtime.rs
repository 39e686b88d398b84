//! The embedded interpreter and the calls into the plugin's Python modules.

use pyo3::prelude::*;
use pyo3::types::PyModule;

use super::host_bridge;
use super::interrupt::Interrupter;
use super::residue::PythonBaseline;
use crate::ipc::{ModuleCheck, Program, Run, RunOutput, RunStatus, Script};
use crate::platform;

/// The plugin's own Python modules, in import order (each may import the ones before it).
const MODULES: &[(&str, &str)] = &[
    ("qntx_values", include_str!("python/qntx_values.py")),
    ("qntx_handlers", include_str!("python/qntx_handlers.py")),
    ("qntx", include_str!("python/qntx.py")),
    ("qntx_rich", include_str!("python/qntx_rich.py")),
    ("qntx_runtime", include_str!("python/qntx_runtime.py")),
];

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

/// Loads one of the plugin's modules. Its names resolve in a private copy of `builtins`, taken
/// before any program ran: a program that replaces `builtins.print` or `isinstance` changes
/// what it sees itself, not what the runtime uses to build its answer.
fn load<'py>(py: Python<'py>, name: &str, source: &str) -> PyResult<Bound<'py, PyModule>> {
    let module = PyModule::new(py, name)?;
    let namespace = module.dict();
    let builtins = py.import("builtins")?.dict().copy()?;
    namespace.set_item("__builtins__", builtins)?;
    namespace.set_item("__file__", format!("{name}.py"))?;
    // In sys.modules before it runs, as an import would have it (the next modules import it).
    py.import("sys")?
        .getattr("modules")?
        .set_item(name, &module)?;
    let code =
        py.import("builtins")?
            .getattr("compile")?
            .call1((source, format!("{name}.py"), "exec"))?;
    py.import("builtins")?
        .getattr("exec")?
        .call1((code, &namespace))?;
    Ok(module)
}

impl Runtime {
    /// Initialises CPython on the calling (main) thread, loads the plugin's modules and imports
    /// `preload`. Runs in the template, once.
    pub fn start(environment: &str, preload: &[String]) -> Result<Self, String> {
        super::interpreter::initialize().map_err(|e| e.to_string())?;
        super::residue::install_audit_hook()?;
        Python::attach(|py| {
            let start = || -> PyResult<Self> {
                host_bridge::register(py)?;
                for (name, source) in MODULES {
                    load(py, name, source)?;
                }
                let runtime = py.import("qntx_runtime")?;
                let python_version: String =
                    runtime.getattr("setup")?.call1((environment,))?.extract()?;
                let failed: Vec<(String, String)> = runtime
                    .getattr("preload")?
                    .call1((preload.to_vec(),))?
                    .extract()?;
                for (module, error) in failed {
                    tracing::warn!(
                        module,
                        error,
                        "cannot preload module {module}; runs import it themselves"
                    );
                }
                Ok(Self {
                    runtime: runtime.unbind(),
                    handlers: py.import("qntx_handlers")?.unbind(),
                    python_version,
                })
            };
            start().map_err(|e| e.to_string())
        })
    }

    pub fn python_version(&self) -> &str {
        &self.python_version
    }

    /// Runs one program. Its output streams are captured at the file-descriptor level, by the
    /// caller: they are left empty here.
    pub fn run(&self, run: &Run, interrupter: &Interrupter) -> RunOutput {
        let program = &run.program;
        host_bridge::set_access(program.host.clone());
        let (handler_key, entry_function) = match &program.handler {
            Some(entry) => (Some(entry.key.as_str()), entry.function.as_deref()),
            None => (None, None),
        };
        let (status, result_json, error, leftover_threads, threads) = Python::attach(|py| {
            interrupter.begin_run(run.run_id);
            let outcome = self.runtime.bind(py).getattr("run").and_then(|run| {
                run.call1((
                    &program.code,
                    &program.filename,
                    program.upstream_json.as_deref(),
                    &program.glyph_id,
                    program.python_paths.clone(),
                    handler_key,
                    entry_function,
                ))?
                .extract::<(String, String, Option<String>, Vec<String>)>()
            });
            interrupter.end_run(py);
            // C stdio buffers belong to this run's output too.
            // SAFETY: fflush(NULL) flushes every open C stream.
            unsafe { libc::fflush(std::ptr::null_mut()) };
            let threads = python_threads(py);
            let failed =
                |status, error| (status, "null".to_owned(), Some(error), Vec::new(), threads);
            match outcome {
                Ok((status, result_json, error, named)) => {
                    (parse_status(&status), result_json, error, named, threads)
                }
                // Only an interrupt landing inside the runtime's own bookkeeping gets here.
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) => {
                    failed(RunStatus::Interrupted, "KeyboardInterrupt\n".into())
                }
                Err(e) => failed(
                    RunStatus::Error,
                    format!("internal error in the worker: {}", describe(py, e)),
                ),
            }
        });
        RunOutput {
            run_id: run.run_id,
            status,
            stdout: Default::default(),
            stderr: Default::default(),
            result_json,
            error,
            leftovers: still_running(leftover_threads, threads),
        }
    }

    /// What the residue check watches, collected once in the template (see residue.rs).
    pub fn watch(&self) -> Result<PythonBaseline, String> {
        Python::attach(|py| PythonBaseline::watch(py, self.runtime.bind(py)))
            .map_err(|e| format!("cannot list what the residue check watches: {e}"))
    }

    /// Readies a process just forked from the template to serve as a worker: reseeds what does
    /// not reseed itself, runs a trivial program through the whole run path (a forked process
    /// pays a page copy for every page of the template it writes to, so this takes that cost
    /// before a request instead of during one), and records the baseline the residue check
    /// compares with. The warm-up is the same in every worker and prints nothing.
    pub fn prepare_worker(
        &self,
        interrupter: &Interrupter,
        baseline: &mut PythonBaseline,
    ) -> Result<(), String> {
        Python::attach(|py| -> PyResult<()> {
            self.runtime.bind(py).getattr("after_fork")?.call0()?;
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        let warm_up = Run {
            run_id: 0,
            program: Box::new(Program::new("_ = 1 + 1\n_".into(), "<warm-up>")),
        };
        if let Some(error) = self.run(&warm_up, interrupter).error {
            return Err(format!("the warm-up run failed: {error}"));
        }
        Python::attach(|py| baseline.restamp(py))
            .map_err(|e| format!("cannot record the worker's baseline: {e}"))
    }

    /// Threads that have run Python code and still exist, the main one included (see
    /// [`python_threads`]).
    pub fn python_threads(&self) -> usize {
        Python::attach(python_threads)
    }

    /// What the last request left behind (see residue.rs); empty when nothing.
    pub fn residue(&self, baseline: &PythonBaseline) -> Vec<String> {
        Python::attach(|py| baseline.residue(py))
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

/// Threads and processes a run left running, named for its answer (two cheap checks, so the
/// caller learns about them with the result): the threads `threading` names, and how many
/// more the interpreter counts (`threads`, the main one included), so one started past
/// `threading` (with `_thread`) counts too.
fn still_running(named: Vec<String>, threads: usize) -> Vec<String> {
    let mut leftovers: Vec<String> = named.iter().map(|t| format!("thread '{t}'")).collect();
    let unnamed = threads.saturating_sub(1 + named.len());
    if unnamed > 0 {
        leftovers.push(format!("{unnamed} thread(s) started outside `threading`"));
    }
    leftovers.extend(
        platform::running_children()
            .into_iter()
            .map(|pid| format!("process {pid}")),
    );
    leftovers
}

/// Threads that have run Python code and still exist, the main one included: counted in the
/// interpreter's own list, which a raw `_thread` thread joins too.
fn python_threads(_py: Python<'_>) -> usize {
    // SAFETY: walking the interpreter's thread states with the GIL held (`_py`), which keeps
    // the list from changing under us.
    unsafe {
        let mut count = 0;
        let mut state =
            pyo3::ffi::PyInterpreterState_ThreadHead(pyo3::ffi::PyInterpreterState_Get());
        while !state.is_null() {
            count += 1;
            state = pyo3::ffi::PyThreadState_Next(state);
        }
        count
    }
}

fn parse_status(status: &str) -> RunStatus {
    match status {
        "ok" => RunStatus::Ok,
        "interrupted" => RunStatus::Interrupted,
        _ => RunStatus::Error,
    }
}
