//! Every environment variable the plugin reads, in one place.

/// Python environment prefix (a venv or a Nix `withPackages` env) the workers add to `sys.path`.
pub const PYTHON_ENV: &str = "QNTX_PYTHON_ENV";
/// Variant file (TOML) naming the packages the environment must provide.
pub const VARIANT: &str = "QNTX_VARIANT";
/// Standard tracing filter; overrides `--log-level`.
pub const RUST_LOG: &str = "RUST_LOG";
/// Set by the supervisor for its workers: the descriptor of the worker's channel.
pub use crate::ipc::WORKER_FD_ENV as WORKER_FD;
