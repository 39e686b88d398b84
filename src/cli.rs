//! The command line, parsed before any runtime exists, and the three modes it selects:
//! serving (the default), a worker (started by the plugin itself), and `--check-environment`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::pool::{Pool, PoolConfig, WorkerCommand};
use crate::service::{EnvironmentReport, Plugin};
use crate::variant::Variant;
use crate::{env_vars, identity, logging, server, worker};

#[derive(Debug, Parser)]
#[command(
    name = "qntx-python-plugin",
    version,
    about = "QNTX's Python provider plugin",
    args_override_self = true
)]
pub struct Cli {
    /// Port to listen on; if taken, the next 9 ports are tried. 0 picks a free one.
    #[arg(short, long, default_value_t = 9000)]
    port: u16,
    /// Address to listen on, HOST:PORT (host names such as localhost:9000 work). Overrides --port.
    #[arg(short, long)]
    address: Option<String>,
    /// Plugin name (Metadata, handler prefix). Default: from the executable name
    /// qntx-<name>-plugin, else "python".
    #[arg(long)]
    name: Option<String>,
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    log_level: LogLevel,
    /// Worker processes (default: the number of cores, at least 2).
    #[arg(long)]
    workers: Option<usize>,
    /// Runs that may wait for a worker before callers get RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 64)]
    queue_capacity: usize,
    /// Python environment (venv or Nix env prefix) whose site-packages the workers use.
    #[arg(long, env = env_vars::PYTHON_ENV)]
    python_env: Option<PathBuf>,
    /// Variant file listing the packages the environment must provide.
    #[arg(long, env = env_vars::VARIANT)]
    variant: Option<PathBuf>,
    /// Also serve the HTTP routes over plain HTTP at HOST:PORT (e.g. 127.0.0.1:8765), with a
    /// page at / that hosts the glyph without a QNTX host.
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// Import every package of the variant, print name and version, exit non-zero on failure.
    #[arg(long)]
    check_environment: bool,
    #[command(subcommand)]
    mode: Option<Mode>,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Internal: a worker process, started by the plugin itself.
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        python_env: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = LogLevel::Info)]
        log_level: LogLevel,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.mode {
        Some(Mode::Worker {
            ref python_env,
            log_level,
        }) => run_worker(python_env.clone(), log_level),
        None => run_plugin(cli),
    }
}

fn run_worker(python_env: Option<PathBuf>, log_level: LogLevel) -> ExitCode {
    // Keep the supervisor's stdout for logs before output capture takes fd 1.
    // SAFETY: dup of a descriptor we inherited; the copy is ours.
    let log_fd = unsafe { libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 10) };
    if log_fd >= 0 {
        use std::os::fd::FromRawFd;
        // SAFETY: log_fd was just created and is owned by this File.
        logging::init(
            log_level.as_str(),
            logging::Sink::File(unsafe { std::fs::File::from_raw_fd(log_fd) }),
        );
        logging::log_panics();
    }
    match worker::run(worker::WorkerOptions { python_env }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "worker stopped");
            ExitCode::FAILURE
        }
    }
}

fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2)
}

fn pool_config(cli: &Cli, workers: usize) -> Result<PoolConfig, String> {
    let executable = std::env::current_exe()
        .map_err(|e| format!("cannot find the plugin's own executable: {e}"))?;
    let mut args = vec!["--log-level".to_owned(), cli.log_level.as_str().to_owned()];
    if let Some(env) = &cli.python_env {
        args.push("--python-env".into());
        args.push(env.display().to_string());
    }
    Ok(PoolConfig {
        workers,
        queue_capacity: cli.queue_capacity,
        worker: WorkerCommand { executable, args },
        interrupt_grace: Duration::from_secs(1),
        startup_timeout: Duration::from_secs(60),
    })
}

fn run_plugin(cli: Cli) -> ExitCode {
    logging::init(cli.log_level.as_str(), logging::Sink::Stdout);
    logging::log_panics();
    let argv0 = std::env::args().next();
    let name = identity::plugin_name(cli.name.as_deref(), argv0.as_deref());
    let variant = match cli.variant.as_deref().map(Variant::load).transpose() {
        Ok(variant) => variant,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = if cli.check_environment {
        runtime.block_on(check_environment(&cli, variant))
    } else {
        runtime.block_on(serve(&cli, name, variant))
    };
    // Workers are killed by the pool; do not wait for stray blocking tasks.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(code) => code,
        Err(error) => {
            tracing::error!(%error, "plugin stopped");
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: &Cli, name: String, variant: Option<Variant>) -> Result<ExitCode, String> {
    let (host, port) = match &cli.address {
        Some(address) => split_address(address, cli.port)?,
        None => ("127.0.0.1".to_owned(), cli.port),
    };
    let listener = server::bind(&host, port).await.map_err(|e| e.to_string())?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    // Announced before any Python starts: the host waits at most 2 s for this line.
    server::announce_port(bound.port()).map_err(|e| e.to_string())?;

    let workers = cli.workers.unwrap_or_else(default_workers).max(1);
    let pool = Pool::start(pool_config(cli, workers)?);
    let plugin = Plugin::new(
        name.clone(),
        Arc::clone(&pool),
        tokio_util::sync::CancellationToken::new(),
    );
    tracing::info!(%name, address = %bound, workers, version = identity::VERSION, "serving");
    if let Some(variant) = variant {
        spawn_environment_check(Arc::clone(&plugin), variant);
    }
    if let Some(address) = &cli.http {
        let (host, port) = split_address(address, 8765)?;
        let listener = server::bind(&host, port).await.map_err(|e| e.to_string())?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(http = %bound, "serving the HTTP routes and the glyph page at http://{bound}/");
        tokio::spawn(crate::service::http::standalone::serve(
            listener,
            Arc::clone(&plugin),
        ));
    }
    server::serve(listener, plugin)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

/// Health reports how many of the variant's packages import; checked once, off the hot path.
fn spawn_environment_check(plugin: Arc<Plugin>, variant: Variant) {
    tokio::spawn(async move {
        let modules = variant.modules();
        match plugin.pool.check_modules(modules.clone()).await {
            Ok(report) => {
                let failures: Vec<String> = report
                    .iter()
                    .filter_map(|m| m.error.as_ref().map(|e| format!("{}: {e}", m.module)))
                    .collect();
                for failure in &failures {
                    tracing::warn!(variant = %variant.name, %failure, "package does not import");
                }
                *plugin
                    .environment
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Some(EnvironmentReport {
                    packages: modules.len(),
                    failures,
                });
            }
            Err(error) => tracing::warn!(%error, "environment check did not run"),
        }
    });
}

async fn check_environment(cli: &Cli, variant: Option<Variant>) -> Result<ExitCode, String> {
    let pool = Pool::start(pool_config(cli, 1)?);
    let modules = variant.as_ref().map(Variant::modules).unwrap_or_default();
    let report = pool
        .check_modules(modules)
        .await
        .map_err(|e| e.to_string())?;
    let python = pool
        .stats()
        .python_version
        .get()
        .cloned()
        .unwrap_or_default();
    let label = variant
        .as_ref()
        .map(|v| v.name.as_str())
        .unwrap_or("(no variant)");
    println!("variant {label}: Python {python}");
    let mut failed = Vec::new();
    for module in &report {
        match (&module.version, &module.error) {
            (Some(version), None) => println!("{} {version}", module.module),
            (_, error) => {
                println!(
                    "{} FAILED: {}",
                    module.module,
                    error.as_deref().unwrap_or("unknown error")
                );
                failed.push(module.module.clone());
            }
        }
    }
    pool.shutdown();
    if failed.is_empty() {
        println!("{} packages import", report.len());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: {} of {} packages failed to import: {}",
            failed.len(),
            report.len(),
            failed.join(", ")
        );
        Ok(ExitCode::FAILURE)
    }
}

/// `HOST:PORT`, `[v6]:PORT`, or a bare `HOST` (then `--port` applies).
fn split_address(address: &str, default_port: u16) -> Result<(String, u16), String> {
    if let Some((host, port)) = address
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty() && !host.ends_with(':'))
    {
        let port = port
            .parse()
            .map_err(|_| format!("--address {address}: '{port}' is not a port number"))?;
        return Ok((
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
        ));
    }
    Ok((address.to_owned(), default_port))
}

#[cfg(test)]
mod tests {
    use super::split_address;

    #[test]
    fn addresses() {
        assert_eq!(
            split_address("localhost:9000", 1).unwrap(),
            ("localhost".into(), 9000)
        );
        assert_eq!(
            split_address("0.0.0.0:7", 1).unwrap(),
            ("0.0.0.0".into(), 7)
        );
        assert_eq!(split_address("[::1]:7", 1).unwrap(), ("::1".into(), 7));
        assert_eq!(
            split_address("localhost", 5).unwrap(),
            ("localhost".into(), 5)
        );
        assert!(split_address("localhost:http", 5).is_err());
    }
}
