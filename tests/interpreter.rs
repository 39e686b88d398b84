//! The embedded interpreter is the one the plugin was built for, whatever the environment of
//! the process that starts the plugin: another `python3` first on `PATH`, an activated venv,
//! or `PYTHONPATH`/`PYTHONHOME` change nothing in `sys.prefix`, `sys.path` or what imports.

#[path = "support/plugin.rs"]
mod plugin;

use std::path::{Path, PathBuf};
use std::process::Command;

use plugin::{execute, result_object, Launch, Plugin};
use serde_json::Value;

/// The interpreter the binary was built against (baked in by build.rs).
const BUILD_PYTHON: &str = env!("QNTX_BUILD_PYTHON_EXECUTABLE");
const BUILD_VERSION: &str = env!("QNTX_BUILD_PYTHON_VERSION");
const MARKER: &str = "qntx_foreign_marker";

/// What a program sees of its interpreter.
const PROBE: &str = r#"
import importlib.util, sys
probe = {
    "prefix": sys.prefix,
    "base_prefix": sys.base_prefix,
    "exec_prefix": sys.exec_prefix,
    "executable": sys.executable,
    "path": sys.path,
    "marker": importlib.util.find_spec("qntx_foreign_marker") is not None,
}
probe
"#;

/// Variables that would point Python elsewhere; removed for the reference run.
const PYTHON_VARIABLES: &[&str] = &["VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"];

fn neutral() -> Launch {
    PYTHON_VARIABLES.iter().fold(
        Launch::default().args(&["--workers", "1"]),
        |launch, key| launch.env_remove(key),
    )
}

/// Runs the probe in a plugin started with `launch`.
async fn probe(launch: Launch) -> Value {
    let plugin = Plugin::launch(launch);
    let mut client = plugin.python().await;
    let response = execute(&mut client, PROBE).await;
    assert!(
        response.success,
        "the probe failed (the worker may not have started): {}",
        response.error
    );
    result_object(&response)["result"].clone()
}

fn path_with_first(dir: &Path) -> String {
    let inherited = std::env::var("PATH").unwrap_or_default();
    format!("{}:{inherited}", dir.display())
}

/// A package the plugin must never import: `<site-packages>/qntx_foreign_marker`.
fn plant_marker(site_packages: &Path) {
    let package = site_packages.join(MARKER);
    std::fs::create_dir_all(&package).unwrap();
    std::fs::write(package.join("__init__.py"), "FOREIGN = True\n").unwrap();
}

/// A venv of the build interpreter (same version: the most plausible stranger), with the
/// marker package installed.
fn venv(dir: &Path) -> PathBuf {
    let venv = dir.join("venv");
    let status = Command::new(BUILD_PYTHON)
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .expect("run python -m venv");
    assert!(status.success(), "python -m venv failed");
    plant_marker(&venv.join(format!("lib/python{BUILD_VERSION}/site-packages")));
    venv
}

fn assert_unchanged(reference: &Value, seen: &Value, stranger: &Path, what: &str) {
    let stranger = stranger.display().to_string();
    assert_eq!(
        seen["prefix"], reference["prefix"],
        "{what}: sys.prefix changed"
    );
    assert_eq!(seen["base_prefix"], reference["base_prefix"], "{what}");
    assert_eq!(seen["exec_prefix"], reference["exec_prefix"], "{what}");
    assert_eq!(seen["path"], reference["path"], "{what}: sys.path changed");
    assert_eq!(seen["executable"], reference["executable"], "{what}");
    assert_eq!(
        seen["marker"],
        Value::Bool(false),
        "{what}: imports the marker"
    );
    let leaked: Vec<&Value> = seen["path"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry.as_str().unwrap_or_default().starts_with(&stranger))
        .collect();
    assert!(leaked.is_empty(), "{what}: sys.path has {leaked:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_interpreter_is_the_one_the_plugin_was_built_for() {
    let reference = probe(neutral()).await;
    // Absolute, not only relative: the reference itself must not come from PATH.
    let home = env!("QNTX_BUILD_PYTHON_HOME");
    let prefix = home.split(':').next().unwrap();
    assert_eq!(reference["prefix"], Value::from(prefix), "{reference}");
    assert_eq!(reference["base_prefix"], Value::from(prefix), "{reference}");
    assert_eq!(reference["executable"], Value::from(BUILD_PYTHON));
    assert_eq!(reference["marker"], Value::Bool(false));
    let stdlib = format!("{prefix}/lib/python{BUILD_VERSION}");
    assert!(
        reference["path"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str() == Some(stdlib.as_str())),
        "the standard library {stdlib} is not on sys.path: {reference}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_venv_first_on_path_changes_nothing() {
    let reference = probe(neutral()).await;
    let dir = tempfile::tempdir().unwrap();
    let venv = venv(dir.path());
    let seen = probe(neutral().env("PATH", &path_with_first(&venv.join("bin")))).await;
    assert_unchanged(
        &reference,
        &seen,
        dir.path(),
        "a venv's python3 first on PATH",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_activated_venv_and_python_variables_change_nothing() {
    let reference = probe(neutral()).await;
    let dir = tempfile::tempdir().unwrap();
    let venv = venv(dir.path());
    // What `source venv/bin/activate` does, plus the variables Python itself would read.
    let elsewhere = dir.path().join("elsewhere");
    plant_marker(&elsewhere);
    let launch = neutral()
        .env("VIRTUAL_ENV", &venv.display().to_string())
        .env("PATH", &path_with_first(&venv.join("bin")))
        .env("PYTHONPATH", &elsewhere.display().to_string())
        .env("PYTHONHOME", &venv.display().to_string());
    let seen = probe(launch).await;
    assert_unchanged(&reference, &seen, dir.path(), "an activated venv");
}

#[tokio::test(flavor = "multi_thread")]
async fn another_python_installation_first_on_path_changes_nothing() {
    let reference = probe(neutral()).await;
    // Another installation of the same version, as CPython's path search recognises one: an
    // executable `bin/python3` beside `lib/pythonX.Y/os.py`. Its standard library is empty, so
    // an interpreter that took it would not even start.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other");
    let bin = other.join("bin");
    let lib = other.join(format!("lib/python{BUILD_VERSION}"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::write(lib.join("os.py"), "").unwrap();
    plant_marker(&lib.join("site-packages"));
    let python3 = bin.join("python3");
    std::fs::write(&python3, format!("#!/bin/sh\nexec {BUILD_PYTHON} \"$@\"\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&python3, std::fs::Permissions::from_mode(0o755)).unwrap();

    let seen = probe(neutral().env("PATH", &path_with_first(&bin))).await;
    assert_unchanged(
        &reference,
        &seen,
        dir.path(),
        "another python3 first on PATH",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_env_adds_its_packages_and_nothing_else() {
    let reference = probe(neutral()).await;
    let dir = tempfile::tempdir().unwrap();
    let env = venv(dir.path());
    let site_packages = env.join(format!("lib/python{BUILD_VERSION}/site-packages"));
    // A stranger activated in the starting shell stays a stranger.
    let stranger = tempfile::tempdir().unwrap();
    let other = venv(stranger.path());
    std::fs::write(
        other.join(format!(
            "lib/python{BUILD_VERSION}/site-packages/qntx_stranger.py"
        )),
        "",
    )
    .unwrap();
    let launch = neutral()
        .args(&["--python-env", &env.display().to_string()])
        .env("VIRTUAL_ENV", &other.display().to_string())
        .env("PATH", &path_with_first(&other.join("bin")));
    let plugin = Plugin::launch(launch);
    let mut client = plugin.python().await;
    let code = format!(
        "{PROBE}\nprobe['stranger'] = importlib.util.find_spec('qntx_stranger') is not None\nprobe"
    );
    let response = execute(&mut client, &code).await;
    assert!(response.success, "{}", response.error);
    let seen = &result_object(&response)["result"];
    assert_eq!(
        seen["marker"],
        Value::Bool(true),
        "the env's package: {seen}"
    );
    assert_eq!(seen["stranger"], Value::Bool(false), "{seen}");
    assert_eq!(seen["prefix"], reference["prefix"]);
    // As with the venv's own python: its site-packages instead of the base interpreter's.
    let prefix = env!("QNTX_BUILD_PYTHON_HOME").split(':').next().unwrap();
    let base_site = format!("{prefix}/lib/python{BUILD_VERSION}/site-packages");
    let mut expected: Vec<Value> = reference["path"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p.as_str() != Some(base_site.as_str()))
        .cloned()
        .collect();
    expected.push(Value::from(site_packages.display().to_string()));
    assert_eq!(seen["path"], Value::Array(expected), "{seen}");
}
