//! The embedded interpreter and the calls into `qntx_runtime.py`.

use std::ffi::CString;

use pyo3::prelude::*;
use pyo3::types::PyModule;

use super::interrupt::Interrupter;
use crate::ipc::{ModuleCheck, RunRequest, RunStatus};

const RUNTIME_SOURCE: &str = include_str!("python/qntx_runtime.py");

pub struct Runtime {
    module: Py<PyModule>,
    python_version: String,
}

fn describe(py: Python<'_>, error: PyErr) -> String {
    let traceback = error
        .traceback(py)
        .and_then(|tb| tb.format().ok())
        .unwrap_or_default();
    format!("{traceback}{error}")
}

impl Runtime {
    /// Initialises CPython on the calling (main) thread and loads the runtime module.
    pub fn start(environment: &str) -> Result<Self, String> {
        Python::initialize();
        Python::attach(|py| {
            let load = || -> PyResult<(Py<PyModule>, String)> {
                let source = CString::new(RUNTIME_SOURCE)
                    .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
                let module = PyModule::from_code(py, &source, c"qntx_runtime.py", c"qntx_runtime")?;
                let version: String = module.getattr("setup")?.call1((environment,))?.extract()?;
                Ok((module.unbind(), version))
            };
            load()
                .map(|(module, python_version)| Self {
                    module,
                    python_version,
                })
                .map_err(|e| e.to_string())
        })
    }

    pub fn python_version(&self) -> &str {
        &self.python_version
    }

    /// Runs one program; returns (status, result JSON, error text).
    pub fn run(
        &self,
        request: &RunRequest,
        interrupter: &Interrupter,
    ) -> (RunStatus, String, Option<String>) {
        Python::attach(|py| {
            interrupter.begin_run(request.run_id);
            let outcome = self.module.bind(py).getattr("run").and_then(|run| {
                run.call1((
                    &request.code,
                    &request.filename,
                    request.upstream_json.as_deref(),
                    &request.glyph_id,
                    request.python_paths.clone(),
                ))?
                .extract::<(String, String, Option<String>)>()
            });
            interrupter.end_run(py);
            // C stdio buffers belong to this run's output too.
            // SAFETY: fflush(NULL) flushes every open C stream.
            unsafe { libc::fflush(std::ptr::null_mut()) };
            match outcome {
                Ok((status, result, error)) => (parse_status(&status), result, error),
                // Only an interrupt landing inside the runtime's own bookkeeping gets here.
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) => (
                    RunStatus::Interrupted,
                    "null".into(),
                    Some("KeyboardInterrupt\n".into()),
                ),
                Err(e) => (
                    RunStatus::Error,
                    "null".into(),
                    Some(format!("internal error in the worker: {}", describe(py, e))),
                ),
            }
        })
    }

    pub fn check_modules(&self, modules: &[String]) -> Vec<ModuleCheck> {
        Python::attach(|py| {
            let report = self.module.bind(py).getattr("check_modules").and_then(|f| {
                f.call1((modules.to_vec(),))?
                    .extract::<Vec<(String, Option<String>, Option<String>)>>()
            });
            match report {
                Ok(report) => super::module_checks(report),
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
}

fn parse_status(status: &str) -> RunStatus {
    match status {
        "ok" => RunStatus::Ok,
        "interrupted" => RunStatus::Interrupted,
        _ => RunStatus::Error,
    }
}
