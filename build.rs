//! Generates the gRPC code for the host's `protocol` package from `proto/`, and points the
//! binary at its libpython.
//!
//! protoc comes from `PROTOC` when set (the Nix build and dev shell set it), else from the
//! protoc-bin-vendored crate, so a fresh machine needs no system protoc.

use std::path::PathBuf;

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
