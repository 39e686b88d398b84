//! qntx-python-plugin: QNTX's Python provider. The supervisor serves gRPC and runs no Python;
//! worker processes of this same binary embed CPython and run one program at a time.

pub mod catalog;
pub mod cli;
pub mod config;
pub mod env_vars;
pub mod environments;
pub mod host;
pub mod identity;
pub mod ipc;
pub mod logging;
pub mod platform;
pub mod pool;
pub mod proto;
pub mod server;
pub mod service;
pub mod time;
pub mod variant;
pub mod worker;
