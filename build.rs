//! Generates the gRPC code for the host's `protocol` package from `proto/`, points the binary
//! at its libpython, and bakes in where that Python lives.
//!
//! protoc comes from `PROTOC` when set (the Nix build and dev shell set it), else from the
//! protoc-bin-vendored crate, so a fresh machine needs no system protoc.
//!
//! The interpreter pyo3 builds against (`PYO3_PYTHON`, else the `python3` pyo3 finds) is asked
//! for its installation prefix, and the answers become compile-time variables the worker uses
//! to configure CPython explicitly (`src/worker/interpreter.rs`): without them CPython would
//! look for `python3` on the run-time `PATH` and take its standard library and site-packages
//! from whatever it finds there.
//!
//! | variable | value |
//! |---|---|
//! | `QNTX_BUILD_PYTHON_VERSION` | `3.11` |
//! | `QNTX_BUILD_PYTHON_HOME` | `sys.base_prefix`, with `:sys.base_exec_prefix` when that differs |
//! | `QNTX_BUILD_PYTHON_EXECUTABLE` | the base interpreter's executable (a venv's is not used) |
//! | `QNTX_BUILD_PYTHON_STDLIB` | its standard library directory, checked before start-up |
//!
//! A cross build (target other than host, e.g. the macOS checks run from Linux) cannot ask an
//! interpreter of its target: the last three are then empty, and the worker finds its Python
//! beside the libpython it loaded.

use std::path::PathBuf;
use std::process::Command;

/// Messages that carry the host's auth token: their `Debug` is written by hand in src/proto.rs
/// and prints a placeholder for it, so no log line can show the token.
const CARRY_THE_TOKEN: &[&str] = &[
    "protocol.InitializeRequest",
    "protocol.CreateAttestationRequest",
    "protocol.AttestationExistsRequest",
    "protocol.GenerateAttestationRequest",
    "protocol.BatchGenerateAttestationRequest",
    "protocol.GetAttestationsRequest",
    "protocol.EnqueueRequest",
    "protocol.GetJobRequest",
    "protocol.UpdateJobRequest",
    "protocol.ListJobsRequest",
    "protocol.CreateScheduleRequest",
    "protocol.PauseScheduleRequest",
    "protocol.ResumeScheduleRequest",
    "protocol.DeleteScheduleRequest",
    "protocol.GetScheduleRequest",
    "protocol.FetchRequest",
];

const PROTOS: &[&str] = &[
    "proto/domain.proto",
    "proto/python.proto",
    "proto/atsstore.proto",
    "proto/queue.proto",
    "proto/schedule.proto",
    "proto/fetch.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Find the libpython we were built against at run time, not whichever one the loader
    // happens to know (a system libpython of the same minor version may differ).
    pyo3_build_config::add_libpython_rpath_link_args();
    pyo3_build_config::use_pyo3_cfgs();
    bake_python()?;

    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        std::env::set_var("PROTOC", protoc);
    }
    println!("cargo:rerun-if-env-changed=PROTOC");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("protocol_descriptor.bin"))
        .skip_debug(CARRY_THE_TOKEN.iter().map(|name| format!(".{name}")))
        .compile_protos(PROTOS, &["proto"])?;
    Ok(())
}

/// Asks the build interpreter where its base installation is. A venv given as `PYO3_PYTHON`
/// counts as the Python it was made from: libpython and the standard library live there.
const ASK_PYTHON: &str = r#"
import os, sys, sysconfig
version = "%d.%d" % sys.version_info[:2]
candidates = [os.path.join(sys.base_prefix, "bin", name) for name in ("python" + version, "python3")]
candidates.append(getattr(sys, "_base_executable", "") or sys.executable)
executable = next(c for c in candidates if c and os.access(c, os.X_OK))
home = sys.base_prefix
if sys.base_exec_prefix != sys.base_prefix:
    home += ":" + sys.base_exec_prefix
stdlib = sysconfig.get_path("stdlib")  # {installed_base}: the base prefix, also in a venv
print(version, home, executable, stdlib, sep="\n")
"#;

/// Where the build interpreter lives, as `ASK_PYTHON` reports it.
struct Installation {
    home: String,
    executable: String,
    stdlib: String,
}

fn bake_python() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-env-changed=PYO3_CONFIG_FILE");
    let config = pyo3_build_config::get();
    let version = format!("{}.{}", config.version().major, config.version().minor);
    println!("cargo:rustc-env=QNTX_BUILD_PYTHON_VERSION={version}");
    // A cross build (the macOS checks from Linux) has no interpreter of its target to ask; its
    // workers find their Python beside the libpython they load (src/worker/interpreter.rs).
    let cross = std::env::var("TARGET")? != std::env::var("HOST")?;
    let installation = match config.executable() {
        Some(executable) if !cross => ask(executable, &version)?,
        _ => Installation {
            home: String::new(),
            executable: String::new(),
            stdlib: String::new(),
        },
    };
    println!(
        "cargo:rustc-env=QNTX_BUILD_PYTHON_HOME={}",
        installation.home
    );
    println!(
        "cargo:rustc-env=QNTX_BUILD_PYTHON_EXECUTABLE={}",
        installation.executable
    );
    println!(
        "cargo:rustc-env=QNTX_BUILD_PYTHON_STDLIB={}",
        installation.stdlib
    );
    Ok(())
}

fn ask(executable: &str, version: &str) -> Result<Installation, Box<dyn std::error::Error>> {
    // -I: the build machine's PYTHON* variables and user site must not change the answer.
    let output = Command::new(executable)
        .args(["-I", "-c", ASK_PYTHON])
        .output()
        .map_err(|e| format!("cannot run {executable}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{executable} could not report its prefix: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let answer = String::from_utf8(output.stdout)
        .map_err(|_| format!("{executable} lives under a path that is not UTF-8"))?;
    let lines: Vec<&str> = answer.lines().collect();
    let [asked_version, home, base_executable, stdlib] = lines[..] else {
        return Err(format!("unexpected answer from {executable}: {answer:?}").into());
    };
    if asked_version != version {
        return Err(format!(
            "{executable} is Python {asked_version}, but pyo3 is configured for {version}"
        )
        .into());
    }
    Ok(Installation {
        home: home.to_owned(),
        executable: base_executable.to_owned(),
        stdlib: stdlib.to_owned(),
    })
}
