//! Small real venvs for the multi-environment tests: made with the Python the plugin embeds,
//! each holding one marker module, no packages from an index.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Venv {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Venv {
    pub fn arg(&self, name: &str) -> String {
        format!("{name}={}", self.path.display())
    }
}

/// `(major, minor)` of the Python this build embeds.
pub fn embedded_minor() -> (u32, u32) {
    let version = qntx_python_plugin::environments::embedded_python();
    qntx_python_plugin::environments::declaration::major_minor(&version)
        .expect("embedded Python version")
}

/// An interpreter of the embedded minor version: PYO3_PYTHON (what the build used) when set,
/// else `pythonX.Y` on PATH, else pyenv's.
fn interpreter() -> PathBuf {
    let (major, minor) = embedded_minor();
    let wanted = format!("python{major}.{minor}");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let candidates = std::env::var_os("PYO3_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::env::split_paths(&path).map(|d| d.join(&wanted)))
        .chain(pyenv_versions(&format!("{major}.{minor}.")).map(|d| d.join("bin").join(&wanted)));
    for candidate in candidates {
        let Ok(output) = Command::new(&candidate)
            .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
            .output()
        else {
            continue;
        };
        if String::from_utf8_lossy(&output.stdout).trim() == format!("{major}.{minor}") {
            return candidate;
        }
    }
    panic!("no {wanted} found (PYO3_PYTHON, PATH or pyenv) to make test venvs with");
}

fn pyenv_versions(prefix: &str) -> impl Iterator<Item = PathBuf> {
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pyenv")))
        .unwrap_or_default();
    let prefix = prefix.to_owned();
    std::fs::read_dir(root.join("versions"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(move |e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
}

/// A venv (no pip) whose site-packages holds `<marker>_marker.py` with `VALUE = "<marker>"`.
pub fn with_marker(marker: &str) -> Venv {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(format!("{marker}-env"));
    let status = Command::new(interpreter())
        .args(["-m", "venv", "--without-pip"])
        .arg(&path)
        .status()
        .expect("run python -m venv");
    assert!(status.success(), "python -m venv failed");
    std::fs::write(
        site_packages(&path).join(format!("{marker}_marker.py")),
        format!("VALUE = {marker:?}\n"),
    )
    .expect("write the marker module");
    Venv { _dir: dir, path }
}

pub fn site_packages(prefix: &Path) -> PathBuf {
    let (major, minor) = embedded_minor();
    prefix.join(format!("lib/python{major}.{minor}/site-packages"))
}

/// An environment for the next Python minor version (as a venv of it looks to the plugin).
pub fn for_another_python() -> Venv {
    let (major, minor) = embedded_minor();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("other-env");
    std::fs::create_dir_all(path.join(format!("lib/python{major}.{}/site-packages", minor + 1)))
        .expect("make the site-packages");
    std::fs::write(
        path.join("pyvenv.cfg"),
        format!("home = /usr/bin\nversion = {major}.{}.0\n", minor + 1),
    )
    .expect("write pyvenv.cfg");
    Venv { _dir: dir, path }
}
