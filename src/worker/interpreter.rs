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
//! `Python.framework/Versions/X.Y`, which holds `lib/pythonX.Y` like any other prefix. A cross
//! build (which could not ask an interpreter of its target, see build.rs) takes the prefix of
//! the libpython the process loaded instead: `<prefix>/lib/libpythonX.Y.so` or `.dylib`, or
//! the framework's `Versions/X.Y/Python`.

use std::ffi::{CStr, CString, OsStr};
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use pyo3::ffi;

/// The Python the binary was built against, as build.rs found it.
pub struct BuildPython {
    /// `X.Y`.
    pub version: &'static str,
    /// Base prefix, with `:<exec prefix>` when that differs (CPython's `home` syntax). This and
    /// the next two are empty in a cross build.
    pub home: &'static str,
    pub executable: &'static str,
    pub stdlib: &'static str,
}

/// Where this process's Python lives.
struct Installation {
    home: PathBuf,
    executable: PathBuf,
    stdlib: PathBuf,
}

impl BuildPython {
    fn installation(&self) -> Result<Installation, InterpreterError> {
        if !self.home.is_empty() {
            return Ok(Installation {
                home: self.home.into(),
                executable: self.executable.into(),
                stdlib: self.stdlib.into(),
            });
        }
        let library = loaded_libpython().ok_or(InterpreterError::NoLibrary)?;
        beside(&library, self.version).ok_or_else(|| InterpreterError::Missing {
            version: self.version,
            landmark: library.display().to_string(),
        })
    }
}

/// The installation a libpython belongs to: the nearest directory above it with a standard
/// library (`lib/pythonX.Y/os.py`, or `lib64/...`), as CPython's own search does. That covers
/// `<prefix>/lib/libpythonX.Y.so` (or `.dylib`), Debian's `<prefix>/lib/<triplet>/...` and a
/// macOS framework's `Versions/X.Y/Python`.
fn beside(library: &Path, version: &str) -> Option<Installation> {
    library.ancestors().skip(1).take(3).find_map(|prefix| {
        ["lib", "lib64"].iter().find_map(|lib| {
            let stdlib = prefix.join(lib).join(format!("python{version}"));
            stdlib.join("os.py").is_file().then(|| Installation {
                home: prefix.to_owned(),
                executable: prefix.join(format!("bin/python{version}")),
                stdlib,
            })
        })
    })
}

/// The file libpython was loaded from (this binary itself if it was linked statically).
fn loaded_libpython() -> Option<PathBuf> {
    let symbol = ffi::Py_IsInitialized as *const libc::c_void;
    // SAFETY: dladdr only reads the dynamic loader's tables; `info` is ours to fill.
    let name = unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(symbol, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        CStr::from_ptr(info.dli_fname)
    };
    Some(PathBuf::from(OsStr::from_bytes(name.to_bytes())))
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
    #[error("cannot tell where the loaded libpython is, so not where its Python lives")]
    NoLibrary,
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

fn c_path(path: &Path) -> Result<CString, InterpreterError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| InterpreterError::NulInPath(path.display().to_string()))
}

/// Initialises CPython on the calling thread (which becomes Python's main thread) and releases
/// the GIL, so pyo3's `Python::attach` works as after `Python::initialize`.
pub fn initialize() -> Result<(), InterpreterError> {
    let python = BUILD_PYTHON.installation()?;
    let landmark = python.stdlib.join("os.py");
    if !landmark.is_file() {
        return Err(InterpreterError::Missing {
            version: BUILD_PYTHON.version,
            landmark: landmark.display().to_string(),
        });
    }
    std::env::remove_var(MACOS_VENV_LAUNCHER);
    let home = c_path(&python.home)?;
    let executable = c_path(&python.executable)?;

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

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake installation under `root`: the library file and `<prefix>/<lib>/python3.13/os.py`.
    fn layout(root: &Path, library: &str, prefix: &str, lib: &str) -> PathBuf {
        let stdlib = root.join(prefix).join(lib).join("python3.13");
        std::fs::create_dir_all(&stdlib).unwrap();
        std::fs::write(stdlib.join("os.py"), "").unwrap();
        let library = root.join(library);
        std::fs::create_dir_all(library.parent().unwrap()).unwrap();
        std::fs::write(&library, "").unwrap();
        library
    }

    #[test]
    fn an_installation_is_found_beside_its_libpython() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        for (library, prefix, lib) in [
            ("opt/lib/libpython3.13.so.1.0", "opt", "lib"),
            ("deb/lib/x86_64-linux-gnu/libpython3.13.so", "deb", "lib"),
            ("fedora/lib64/libpython3.13.so", "fedora", "lib64"),
            (
                "Python.framework/Versions/3.13/Python",
                "Python.framework/Versions/3.13",
                "lib",
            ),
        ] {
            let found = beside(&layout(root, library, prefix, lib), "3.13").unwrap();
            assert_eq!(found.home, root.join(prefix), "{library}");
            assert_eq!(found.stdlib, root.join(prefix).join(lib).join("python3.13"));
            assert_eq!(found.executable, root.join(prefix).join("bin/python3.13"));
        }
        let stray = root.join("nowhere/libpython3.13.so");
        std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
        assert!(beside(&stray, "3.13").is_none());
    }

    #[test]
    fn the_libpython_loaded_is_the_one_build_rs_found() {
        // What a cross build would work out at run time agrees with what a native build baked.
        let library = loaded_libpython().expect("this test binary links libpython");
        let found = beside(&library, BUILD_PYTHON.version).unwrap();
        let baked_prefix = BUILD_PYTHON.home.split(':').next().unwrap();
        assert_eq!(
            found.home.canonicalize().unwrap(),
            Path::new(baked_prefix).canonicalize().unwrap(),
            "{}",
            library.display()
        );
        assert_eq!(found.stdlib, Path::new(BUILD_PYTHON.stdlib));
    }
}
