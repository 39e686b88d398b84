//! The command line, parsed before any runtime exists, and the three modes it selects:
//! serving (the default), a worker (started by the plugin itself), and `--check-environment`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::environments::{Declaration, Environments, WorkerSetup};
use crate::service::Plugin;
use crate::variant::Variant;
use crate::{env_vars, identity, logging, server, worker};

/// Long enough to span a gRPC client's round trip between two runs (about 0.1 ms from Go or
/// Rust, 0.2–0.3 ms from Python's grpcio), short enough to be no cost when runs are rare.
const DEFAULT_WORKER_SPIN_US: u64 = 500;
/// A tenth of a second: beyond that, polling is no longer "while the next run is on its way".
const MAX_WORKER_SPIN_US: u64 = 100_000;

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
    /// Worker processes in all, shared by every environment (default: the number of cores, at
    /// least 2). Workers start on first use and stop when idle.
    #[arg(long)]
    workers: Option<usize>,
    /// Runs per environment that may wait for a worker before callers get RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 64)]
    queue_capacity: usize,
    /// A named Python environment (a venv or a Nix `withPackages` env), NAME=PATH; repeatable.
    /// Runs choose one with a `# py:NAME` line.
    #[arg(long = "env", value_name = "NAME=PATH")]
    envs: Vec<String>,
    /// The environment for runs that name none (default: the first declared).
    #[arg(long, value_name = "NAME")]
    default_env: Option<String>,
    /// A single Python environment, named after the plugin (same as --env <name>=PATH).
    #[arg(long, env = env_vars::PYTHON_ENV, value_name = "PATH")]
    python_env: Option<PathBuf>,
    /// Variant file listing the packages an environment must provide: FILE for the default
    /// environment, or NAME=FILE; repeatable.
    #[arg(long, env = env_vars::VARIANT, value_name = "[NAME=]FILE")]
    variant: Vec<String>,
    /// Seconds a worker may sit idle before it stops and frees its share of --workers.
    #[arg(long, default_value_t = 300.0, value_name = "SECS")]
    worker_idle_timeout: f64,
    /// Microseconds a worker keeps polling for the next run after it answers (and when it
    /// starts), before it sleeps; 0 sleeps at once, at most 100000. Back-to-back runs then find
    /// it awake, which spares waking an idle CPU (tens of microseconds on a VM); it costs at
    /// most this much CPU each time.
    #[arg(long, default_value_t = DEFAULT_WORKER_SPIN_US, value_name = "MICROSECONDS",
          value_parser = clap::value_parser!(u64).range(0..=MAX_WORKER_SPIN_US))]
    worker_spin_us: u64,
    /// Also serve the HTTP routes over plain HTTP at HOST:PORT (e.g. 127.0.0.1:8765), with a
    /// page at / that hosts the glyph without a QNTX host.
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// Import every package of each environment's variant, print name and version, exit
    /// non-zero on failure.
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
        /// Modules the template imports once, so every worker has them warm (the variant's
        /// `preload`).
        #[arg(long, value_delimiter = ',')]
        preload: Vec<String>,
        #[arg(long, default_value_t = DEFAULT_WORKER_SPIN_US)]
        spin_us: u64,
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
            ref preload,
            spin_us,
            log_level,
        }) => run_worker(
            worker::WorkerOptions {
                python_env: python_env.clone(),
                preload: preload.clone(),
                spin: Duration::from_micros(spin_us),
            },
            log_level,
        ),
        None => run_plugin(cli),
    }
}

fn run_worker(options: worker::WorkerOptions, log_level: LogLevel) -> ExitCode {
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
    match worker::run(options) {
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

/// The declared environments: `--python-env` (named after the plugin) and each `--env`; with
/// neither, one environment named after the plugin with the embedded interpreter alone.
fn declarations(cli: &Cli, plugin_name: &str) -> Result<Vec<Declaration>, String> {
    // A plugin name need not be a valid environment name ("My Plugin"); then it is "default".
    let implicit_name = if crate::environments::directive::name_problem(plugin_name).is_none() {
        plugin_name
    } else {
        "default"
    };
    let mut declarations = Vec::new();
    if let Some(path) = &cli.python_env {
        let path = path.display().to_string();
        declarations
            .push(Declaration::named(implicit_name, &path, &path).map_err(|e| e.to_string())?);
    }
    for given in &cli.envs {
        declarations.push(Declaration::parse(given).map_err(|e| e.to_string())?);
    }
    if declarations.is_empty() {
        declarations.push(Declaration {
            name: implicit_name.to_owned(),
            path: None,
        });
    }
    Ok(declarations)
}

/// `--variant FILE` (the default environment's) and `--variant NAME=FILE`, loaded.
fn variants(
    cli: &Cli,
    declarations: &[Declaration],
    default: &str,
) -> Result<Vec<(String, Variant)>, String> {
    cli.variant
        .iter()
        .map(|given| {
            let (name, file) = match given.split_once('=') {
                Some((name, file)) if declarations.iter().any(|d| d.name == name) => (name, file),
                Some((name, _)) if crate::environments::directive::name_problem(name).is_none() => {
                    return Err(format!("--variant {given}: no environment named '{name}'"))
                }
                _ => (default, given.as_str()),
            };
            let variant = Variant::load(std::path::Path::new(file)).map_err(|e| e.to_string())?;
            Ok((name.to_owned(), variant))
        })
        .collect()
}

fn environments(cli: &Cli, plugin_name: &str, workers: usize) -> Result<Arc<Environments>, String> {
    let declarations = declarations(cli, plugin_name)?;
    let default = cli
        .default_env
        .clone()
        .unwrap_or_else(|| declarations[0].name.clone());
    let variants = variants(cli, &declarations, &default)?;
    let idle_timeout = Duration::try_from_secs_f64(cli.worker_idle_timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| {
            format!(
                "--worker-idle-timeout {}: give a positive number of seconds",
                cli.worker_idle_timeout
            )
        })?;
    let setup = WorkerSetup {
        executable: std::env::current_exe()
            .map_err(|e| format!("cannot find the plugin's own executable: {e}"))?,
        args: vec![
            "--log-level".to_owned(),
            cli.log_level.as_str().to_owned(),
            "--spin-us".to_owned(),
            cli.worker_spin_us.to_string(),
        ],
        queue_capacity: cli.queue_capacity,
        interrupt_grace: crate::config::INTERRUPT_GRACE,
        startup_timeout: Duration::from_secs(60),
        idle_timeout,
    };
    Environments::new(
        declarations,
        cli.default_env.as_deref(),
        &variants,
        workers,
        &setup,
    )
    .map_err(|e| e.to_string())
}

fn run_plugin(cli: Cli) -> ExitCode {
    logging::init(cli.log_level.as_str(), logging::Sink::Stdout);
    logging::log_panics();
    let argv0 = std::env::args().next();
    let name = identity::plugin_name(cli.name.as_deref(), argv0.as_deref());
    // One thread: the supervisor moves bytes between callers and workers, and a request's
    // tasks (connection, handler, worker slot) then hand it on without waking another thread.
    // Python runs in the workers, and the periodic walk through a run's processes for its
    // limits runs on a blocking thread.
    let runtime = match tokio::runtime::Builder::new_current_thread()
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
        runtime.block_on(check_environment(&cli, &name))
    } else {
        runtime.block_on(serve(&cli, name))
    };
    // Workers are killed by the pools; do not wait for stray blocking tasks.
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

async fn serve(cli: &Cli, name: String) -> Result<ExitCode, String> {
    let (host, port) = match &cli.address {
        Some(address) => split_address(address, cli.port)?,
        None => ("127.0.0.1".to_owned(), cli.port),
    };
    let workers = cli.workers.unwrap_or_else(default_workers).max(1);
    // Checked before binding: a bad flag must not announce a port and then exit.
    let environments = environments(cli, &name, workers)?;
    let listener = server::bind(&host, port).await.map_err(|e| e.to_string())?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    // Announced before any Python starts: the host waits at most 2 s for this line.
    server::announce_port(bound.port()).map_err(|e| e.to_string())?;
    server::warn_if_exposed(bound);

    let plugin = Plugin::new(
        name.clone(),
        Arc::clone(&environments),
        tokio_util::sync::CancellationToken::new(),
    );
    tracing::info!(
        %name,
        address = %bound,
        workers,
        environments = %environments.names().join(","),
        default_environment = %environments.default_name(),
        version = identity::VERSION,
        "serving"
    );
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

/// Imports each environment's variant packages in a worker of that environment and prints
/// what imported; fails naming what did not.
async fn check_environment(cli: &Cli, name: &str) -> Result<ExitCode, String> {
    let environments = environments(cli, name, 1)?;
    let mut failed = Vec::new();
    let mut checked = 0;
    for environment in environments.iter() {
        let label = environment.variant.as_deref().unwrap_or("(no variant)");
        let modules = environment.pool.declared_modules().to_vec();
        if let Some(reason) = &environment.refused {
            println!("environment {}: variant {label}: refused", environment.name);
            eprintln!("error: {reason}");
            failed.push(environment.name.clone());
            continue;
        }
        let report = environment
            .pool
            .check_modules(modules)
            .await
            .map_err(|e| e.to_string())?;
        let python = environment
            .pool
            .stats()
            .python_version
            .get()
            .cloned()
            .unwrap_or_default();
        println!(
            "environment {}: variant {label}: Python {python}",
            environment.name
        );
        for module in &report {
            checked += 1;
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
    }
    environments.shutdown();
    if failed.is_empty() {
        println!("{checked} packages import");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: {} failed to import: {}",
            failed.len(),
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
