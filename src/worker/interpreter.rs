//! Starting CPython with an explicit configuration: always the interpreter the plugin was built
//! for, never one chosen by the environment the plugin happens to be started from.
//!
//! pyo3's `Python::initialize` uses CPython's default ("compat") configuration, which finds its
//! standard library by looking up `python3` on `PATH` and reads `PYTHONHOME`, `PYTHONPATH` and
//! friends. Started from a shell with a venv activated, a worker then ran with that venv's
//! `sys.prefix` and packages; with another Python installation first on `PATH` it loaded that
//! installation's standard library (or did not start at all). Instead every worker starts from
//! CPython's *isolated* configuration with the paths build.rs baked in:
//!
//! * `home` is the build interpreter's base prefix, `program_name` and `executable` its binary,
//!   so nothing is searched on `PATH` and no `pyvenv.cfg` next to a stranger is read;
//! * `PYTHON*` environment variables and the user's `~/.local` site-packages are ignored: what a
//!   program can import is the build interpreter's site-packages plus `--python-env`'s
//!   (added by `qntx_runtime.setup`) plus the configured `python_paths`;
//! * no signal handlers are installed: the worker owns its signals. SIGINT still becomes
//!   KeyboardInterrupt, because `qntx_runtime` installs `signal.default_int_handler` before each
//!   run (see `interrupt.rs`);
//! * the locale is configured as CPython always did here (`LC_CTYPE` from the user's locale, no
//!   UTF-8 mode), so file-name and text encodings do not change.
//!
//! macOS framework builds need nothing special: their base prefix is
//! `Python.framework/Versions/X.Y`, which holds `lib/pythonX.Y` like any other prefix.

use std::ffi::{CStr, CString};
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use pyo3::ffi;

/// The Python the binary was built against, as build.rs found it.
pub struct BuildPython {
    /// `X.Y`.
    pub version: &'static str,
    /// Base prefix, with `:<exec prefix>` when that differs (CPython's `home` syntax).
    pub home: &'static str,
    pub executable: &'static str,
    pub stdlib: &'static str,
}

pub const BUILD_PYTHON: BuildPython = BuildPython {
    version: env!("QNTX_BUILD_PYTHON_VERSION"),
    home: env!("QNTX_BUILD_PYTHON_HOME"),
    executable: env!("QNTX_BUILD_PYTHON_EXECUTABLE"),
    stdlib: env!("QNTX_BUILD_PYTHON_STDLIB"),
};

/// Set by macOS's framework launcher for venv interpreters and inherited by their children;
/// `site.py` reads it even in isolated mode and would make a stranger's venv ours.
const MACOS_VENV_LAUNCHER: &str = "__PYVENV_LAUNCHER__";

#[derive(Debug, thiserror::Error)]
pub enum InterpreterError {
    #[error(
        "the Python {version} this plugin was built for is not installed here ({landmark} is \
         missing); rebuild the plugin against this machine's Python (PYO3_PYTHON=/path/to/python3)"
    )]
    Missing {
        version: &'static str,
        landmark: String,
    },
    #[error("Python path {0:?} contains a NUL byte")]
    NulInPath(String),
    #[error("Python refused its configuration ({step}): {message}")]
    Refused { step: &'static str, message: String },
}

/// A `PyConfig` that is always cleared, whatever happens after it was initialised.
struct Config(ffi::PyConfig);

impl Drop for Config {
    fn drop(&mut self) {
        // SAFETY: self.0 was initialised by PyConfig_InitIsolatedConfig.
        unsafe { ffi::PyConfig_Clear(&mut self.0) };
    }
}

fn check(step: &'static str, status: ffi::PyStatus) -> Result<(), InterpreterError> {
    // SAFETY: PyStatus is a plain value; the functions only read it.
    if unsafe { ffi::PyStatus_Exception(status) } == 0 {
        return Ok(());
    }
    let text = |ptr: *const std::ffi::c_char| {
        // SAFETY: CPython sets these to static C strings or leaves them NULL.
        (!ptr.is_null()).then(|| {
            unsafe { CStr::from_ptr(ptr) }
                .to_string_lossy()
                .into_owned()
        })
    };
    let message = match (text(status.func), text(status.err_msg)) {
        (Some(func), Some(message)) => format!("{func}: {message}"),
        (None, Some(message)) => message,
        _ if unsafe { ffi::PyStatus_IsExit(status) } != 0 => {
            format!("exit with status {}", status.exitcode)
        }
        _ => "no reason given".to_owned(),
    };
    Err(InterpreterError::Refused { step, message })
}

fn c_path(path: &str) -> Result<CString, InterpreterError> {
    CString::new(Path::new(path).as_os_str().as_bytes())
        .map_err(|_| InterpreterError::NulInPath(path.to_owned()))
}

/// Initialises CPython on the calling thread (which becomes Python's main thread) and releases
/// the GIL, so pyo3's `Python::attach` works as after `Python::initialize`.
pub fn initialize() -> Result<(), InterpreterError> {
    let python = &BUILD_PYTHON;
    let landmark = Path::new(python.stdlib).join("os.py");
    if !landmark.is_file() {
        return Err(InterpreterError::Missing {
            version: python.version,
            landmark: landmark.display().to_string(),
        });
    }
    std::env::remove_var(MACOS_VENV_LAUNCHER);
    let home = c_path(python.home)?;
    let executable = c_path(python.executable)?;

    // SAFETY: the calls below follow CPython's documented initialisation sequence (PEP 587):
    // pre-initialise, fill a config initialised by PyConfig_InitIsolatedConfig, initialise from
    // it, clear it (Config's Drop). Nothing else in this process touches Python before this.
    unsafe {
        let mut pre = MaybeUninit::<ffi::PyPreConfig>::uninit();
        ffi::PyPreConfig_InitIsolatedConfig(pre.as_mut_ptr());
        let mut pre = pre.assume_init();
        // What CPython's default configuration did: LC_CTYPE from the user's locale (the
        // isolated preset leaves it "C", which would make file names ASCII-only).
        pre.configure_locale = 1;
        check("pre-initialisation", ffi::Py_PreInitialize(&pre))?;

        let mut config = MaybeUninit::<ffi::PyConfig>::uninit();
        ffi::PyConfig_InitIsolatedConfig(config.as_mut_ptr());
        let mut config = Config(config.assume_init());
        let c: *mut ffi::PyConfig = &mut config.0;
        // The isolated preset already says all of this; spelled out because it is the point.
        (*c).isolated = 1;
        (*c).use_environment = 0;
        (*c).user_site_directory = 0;
        (*c).install_signal_handlers = 0;
        (*c).parse_argv = 0;
        (*c).site_import = 1;
        let set = move |field: *mut *mut libc::wchar_t, value: &CString, step| {
            check(step, ffi::PyConfig_SetBytesString(c, field, value.as_ptr()))
        };
        set(&raw mut (*c).home, &home, "home")?;
        set(&raw mut (*c).program_name, &executable, "program_name")?;
        set(&raw mut (*c).executable, &executable, "executable")?;
        check("initialisation", ffi::Py_InitializeFromConfig(&config.0))?;
        drop(config);
        // The GIL is ours after initialisation; pyo3 attaches and detaches per call.
        ffi::PyEval_SaveThread();
    }
    // Marks pyo3's own start-up as done; Python is already running, so nothing else happens.
    pyo3::Python::initialize();
    Ok(())
}
