//! Load generator for a running (or self-launched) qntx-python-plugin; see docs/benchmark.md.
//!
//!   cargo run --release --example loadgen                        # launches target/release/…
//!   cargo run --release --example loadgen -- --address 127.0.0.1:9000 --json
//!
//! Every phase is bounded in calls or time; loopback only. Exits non-zero only when a call
//! fails unexpectedly or the plugin cannot be started, never because a target is missed.

mod doors;
mod environments;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use qntx_python_plugin::proto::domain_plugin_service_client::DomainPluginServiceClient;
use qntx_python_plugin::proto::python_service_client::PythonServiceClient;
use qntx_python_plugin::proto::{Empty, HealthResponse, PythonExecuteRequest};
use serde_json::{json, Value};
use tonic::transport::Channel;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Domain = DomainPluginServiceClient<Channel>;
type Python = PythonServiceClient<Channel>;

const TRIVIAL: &str = "x = 1 + 1";
const CPU_BOUND: &str = "sum(range(200000))";
/// Leaves state behind (an attribute on a module every worker has), so its worker is replaced.
const LEAVES_STATE: &str = "import json\njson.qntx_loadgen = 1";
const SPIN: &str = "while True: pass";
const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, Parser)]
#[command(about = "Latency, throughput, startup and memory figures for qntx-python-plugin")]
struct Args {
    /// Plugin to measure, HOST:PORT (loopback). Without it, the plugin is launched (--spawn).
    #[arg(long, conflicts_with = "spawn")]
    address: Option<String>,
    /// Binary to launch as `qntx-python-plugin --port 0 --workers N` (also startup and memory).
    #[arg(long, default_value = "target/release/qntx-python-plugin")]
    spawn: PathBuf,
    /// Workers of the launched plugin.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Sequential calls per latency figure (after warm-up).
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    /// Seconds per throughput phase (1 client, then 4).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Launches for the startup medians.
    #[arg(long, default_value_t = 5)]
    launches: usize,
    /// gRPC deadline of the spinning runs that keep every worker busy during the Health phase.
    #[arg(long, default_value_t = 3.0)]
    busy_secs: f64,
    /// Machine-readable output (one JSON object) instead of the table.
    #[arg(long)]
    json: bool,
    /// Python (of the minor version the plugin embeds) that makes the two small venvs of the
    /// environments phase. Default: $PYO3_PYTHON, else python3.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Skip the environments phase (routing cost, cold start, budget sharing).
    #[arg(long)]
    no_environments: bool,
    /// Only Metadata then Execute, and their ratios: a short loop to profile the run path
    /// under `perf` or `strace` without the other phases in the samples.
    #[arg(long)]
    latency_only: bool,
}

/// A launched plugin: its own copy of the binary in a temporary directory, as the host installs it.
struct Launched {
    child: Child,
    port: u16,
    port_line: Duration,
    started: Instant,
    _dir: tempfile::TempDir,
}

impl Launched {
    fn start(binary: &Path, workers: usize, extra: &[String]) -> Result<Self, Error> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("qntx-python-plugin");
        if std::fs::hard_link(binary, &path).is_err() {
            std::fs::copy(binary, &path)
                .map_err(|e| format!("{}: {e} (cargo build --release first)", binary.display()))?;
        }
        let mut command = Command::new(&path);
        command
            .args(["--port", "0", "--log-level", "warn", "--workers"])
            .arg(workers.to_string())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let started = Instant::now();
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        // Reads the port line, then drains the logs so the plugin never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = line.trim().strip_prefix("QNTX_PLUGIN_PORT=") {
                    if let (Some(tx), Ok(port)) = (tx.take(), port.parse::<u16>()) {
                        let _ = tx.send((port, started.elapsed()));
                    }
                }
            }
        });
        let mut launched = Self {
            child,
            port: 0,
            port_line: Duration::ZERO,
            started,
            _dir: dir,
        };
        let (port, port_line) = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "no QNTX_PLUGIN_PORT line within 10 s")?;
        (launched.port, launched.port_line) = (port, port_line);
        Ok(launched)
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        // SIGTERM lets the plugin kill its workers; SIGKILL if it has not gone within 3 s.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(address: &str) -> Result<Channel, Error> {
    let endpoint = Channel::from_shared(format!("http://{address}"))?.tcp_nodelay(true);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match endpoint.connect().await {
            Ok(channel) => return Ok(channel),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("connect {address}: {e}").into())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Loopback address of a launched plugin.
impl Launched {
    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// One Execute; an error unless the program ran and succeeded.
async fn execute(client: &mut Python, code: &str, timeout: Option<Duration>) -> Result<(), Error> {
    let mut request = tonic::Request::new(PythonExecuteRequest {
        code: code.into(),
        ..Default::default()
    });
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    let response = client.execute(request).await?.into_inner();
    if !response.success {
        return Err(format!("Execute of {code:?} failed: {}", response.error).into());
    }
    Ok(())
}

async fn health(client: &mut Domain) -> Result<HealthResponse, Error> {
    Ok(client.health(Empty {}).await?.into_inner())
}

fn detail(health: &HealthResponse, key: &str) -> usize {
    health
        .details
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits until nothing runs or waits, then brings every worker of the default environment up
/// (workers start on first use): `total` concurrent runs until Health counts them all.
async fn settle(address: &str, client: &mut Domain) -> Result<usize, Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = health(client).await?;
        let total = detail(&h, "workers_total");
        let idle = detail(&h, "workers_busy") == 0 && detail(&h, "queue_depth") == 0;
        if total > 0 && idle && detail(&h, "workers_ready") >= total {
            return Ok(total);
        }
        if Instant::now() > deadline {
            return Err(format!("workers never settled: {:?}", h.details).into());
        }
        if idle {
            let mut runs = tokio::task::JoinSet::new();
            for _ in 0..total {
                let mut python = Python::new(connect(address).await?);
                runs.spawn(async move { execute(&mut python, TRIVIAL, None).await });
            }
            while let Some(joined) = runs.join_next().await {
                joined??;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// p50 and p99 (nearest rank) in milliseconds.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |p: f64| {
        let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len().max(1));
        samples
            .get(rank - 1)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    (at(0.50), at(0.99))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Latencies of one RPC and the wall time of the blocks they were measured in.
#[derive(Default)]
struct Samples {
    calls: Vec<Duration>,
    wall: Duration,
}

/// `n` sequential calls, appended to `samples`.
async fn sequential<F, Fut>(n: usize, samples: &mut Samples, call: &mut F) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let began = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        call().await?;
        samples.calls.push(t.elapsed());
    }
    samples.wall += began.elapsed();
    Ok(())
}

/// `n` pairs of calls, one of each in turn: both then see the same placement of the client's
/// and the plugin's threads on the CPUs, which decides much of a round trip on a VM.
async fn interleaved<F, Fut, G, Gut>(
    n: usize,
    (first_samples, first): (&mut Samples, &mut F),
    (second_samples, second): (&mut Samples, &mut G),
) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
    G: FnMut() -> Gut,
    Gut: std::future::Future<Output = Result<(), Error>>,
{
    for _ in 0..n {
        sequential(1, first_samples, first).await?;
        sequential(1, second_samples, second).await?;
    }
    Ok(())
}

/// CPU-bound runs from `clients` clients (one connection each) for `duration`: calls/s.
/// Client `i`'s `k`-th call runs `codes[(i + k * clients) % codes.len()]`: with one code every
/// call is the same; with two and an even number of clients, each client keeps to one, and a
/// single client alternates.
async fn throughput(
    address: &str,
    clients: usize,
    duration: Duration,
    codes: &'static [&'static str],
) -> Result<f64, Error> {
    let mut tasks = tokio::task::JoinSet::new();
    let began = Instant::now();
    let end = began + duration;
    for i in 0..clients {
        let mut client = Python::new(connect(address).await?);
        tasks.spawn(async move {
            let mut done = 0u64;
            while Instant::now() < end {
                let code = codes[(i + done as usize * clients) % codes.len()];
                execute(&mut client, code, Some(Duration::from_secs(30))).await?;
                done += 1;
            }
            Ok::<u64, Error>(done)
        });
    }
    let mut total = 0;
    while let Some(joined) = tasks.join_next().await {
        total += joined??;
    }
    Ok(total as f64 / began.elapsed().as_secs_f64())
}

/// Health latency while `workers` runs spin: (p50 ms, p99 ms, samples, all-busy share).
async fn health_while_busy(
    address: &str,
    workers: usize,
    busy: Duration,
) -> Result<(f64, f64, usize, f64), Error> {
    let mut domain = Domain::new(connect(address).await?);
    let mut spinners = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let mut client = Python::new(connect(address).await?);
        // The deadline ends the run: the plugin interrupts it, or kills the worker.
        spinners.spawn(async move { execute(&mut client, SPIN, Some(busy)).await });
    }
    // The plugin stops a run well before its caller's deadline (1.25 s early for deadlines over
    // 2.5 s, half of it for shorter ones: src/service/deadline.rs), so measure in the first half.
    let window_end = Instant::now() + busy.mul_f64(0.5);
    while detail(&health(&mut domain).await?, "workers_busy") < workers {
        if Instant::now() > window_end {
            return Err("the workers never all became busy".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (mut samples, mut all_busy) = (Vec::new(), 0usize);
    while Instant::now() < window_end && samples.len() < 5000 {
        let t = Instant::now();
        let h = health(&mut domain).await?;
        samples.push(t.elapsed());
        all_busy += usize::from(detail(&h, "workers_busy") >= workers);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    while let Some(joined) = spinners.join_next().await {
        // Ending with a timeout (an error answer or DEADLINE_EXCEEDED) is the point.
        if let Ok(Ok(())) = joined {
            return Err("a `while True: pass` run ended successfully".into());
        }
    }
    settle(address, &mut domain).await?;
    let n = samples.len();
    let (p50, p99) = percentiles(samples);
    Ok((p50, p99, n, all_busy as f64 / n.max(1) as f64))
}

/// Exec → port line and exec → first successful Execute, median of `launches` launches.
async fn startup(binary: &Path, workers: usize, launches: usize) -> Result<(f64, f64), Error> {
    let (mut port_lines, mut first_runs) = (Vec::new(), Vec::new());
    for _ in 0..launches.max(1) {
        let plugin = Launched::start(binary, workers, &[])?;
        let mut python = Python::new(connect(&plugin.address()).await?);
        execute(&mut python, TRIVIAL, Some(Duration::from_secs(60))).await?;
        first_runs.push(plugin.started.elapsed().as_secs_f64() * 1e3);
        port_lines.push(plugin.port_line.as_secs_f64() * 1e3);
    }
    Ok((median(port_lines), median(first_runs)))
}

fn rss_mib(pid: i32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0 / MIB)
}

/// Proportional set size: shared pages divided among the processes sharing them.
fn pss_mib(pid: i32) -> Option<f64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = rollup.lines().find(|l| l.starts_with("Pss:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0 / MIB)
}

/// Pids whose parent is `parent`, from /proc/*/stat (field 4, after the parenthesised name).
fn children(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
                after.split_whitespace().nth(1) == Some(parent.to_string().as_str())
            })
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// One reported figure and its target.
struct Row {
    key: String,
    label: String,
    value: Option<f64>,
    unit: &'static str,
    /// The target and whether it was met (None: not measured, e.g. without --spawn).
    target: Option<(&'static str, Option<bool>)>,
}

/// The unit follows from the key's suffix.
fn row(key: impl Into<String>, label: impl Into<String>, value: impl Into<Option<f64>>) -> Row {
    let key = key.into();
    let unit = [
        ("_ms", "ms"),
        ("_per_s", "/s"),
        ("_mib", "MiB"),
        ("_x", "x"),
    ]
    .into_iter()
    .find_map(|(suffix, unit)| key.ends_with(suffix).then_some(unit))
    .unwrap_or("");
    Row {
        key,
        label: label.into(),
        value: value.into(),
        unit,
        target: None,
    }
}

impl Row {
    fn target(mut self, text: &'static str, pass: impl Fn(f64) -> bool) -> Self {
        self.target = Some((text, self.value.map(pass)));
        self
    }
}

fn main() -> Result<(), Error> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rows = runtime.block_on(run(&args))?;
    if args.json {
        let mut figures = serde_json::Map::new();
        for r in &rows {
            let target = r.target.map(|(t, pass)| json!({"target": t, "pass": pass}));
            figures.insert(
                r.key.clone(),
                json!({"value": r.value, "unit": r.unit, "target": target}),
            );
        }
        println!("{}", Value::Object(figures));
    } else {
        println!("{:<44} {:>12}  {:<30} result", "figure", "value", "target");
        for r in &rows {
            let value = r
                .value
                .map_or("n/a".to_owned(), |v| format!("{v:.3} {}", r.unit));
            let (target, verdict) = match r.target {
                Some((t, Some(pass))) => (t, if pass { "PASS" } else { "MISS" }),
                Some((t, None)) => (t, "n/a"),
                None => ("", ""),
            };
            println!("{:<44} {:>12}  {:<30} {verdict}", r.label, value, target);
        }
    }
    Ok(())
}

/// Metadata, Execute and the ratios of the two measured in the same run (issue 12's targets):
/// each in a phase of its own, and in alternating calls (`paired`: Metadata, Execute).
fn latency_rows(meta: Samples, exec: Samples, paired: (Samples, Samples)) -> Vec<Row> {
    let (paired_meta_p50, paired_meta_p99) = percentiles(paired.0.calls);
    let (paired_exec_p50, paired_exec_p99) = percentiles(paired.1.calls);
    let exec_rate = exec.calls.len() as f64 / exec.wall.as_secs_f64();
    let (meta_p50, meta_p99) = percentiles(meta.calls);
    let (exec_p50, exec_p99) = percentiles(exec.calls);
    vec![
        row(
            "metadata_p50_ms",
            "Metadata p50 (transport floor)",
            meta_p50,
        ),
        row("metadata_p99_ms", "Metadata p99", meta_p99),
        row("execute_p50_ms", "Execute `x = 1 + 1` p50", exec_p50),
        row("execute_p99_ms", "Execute `x = 1 + 1` p99", exec_p99),
        row("execute_per_s", "Execute `x = 1 + 1` sequential", exec_rate),
        row(
            "execute_over_metadata_x",
            "Execute p50 / Metadata p50",
            exec_p50 / meta_p50,
        )
        .target("<= 1.2x", |v| v <= 1.2),
        row(
            "execute_over_metadata_p99_x",
            "Execute p99 / Metadata p99",
            exec_p99 / meta_p99,
        )
        .target("<= 2x", |v| v <= 2.0),
        row(
            "interleaved_metadata_p50_ms",
            "Metadata p50, calls interleaved",
            paired_meta_p50,
        ),
        row(
            "interleaved_execute_p50_ms",
            "Execute p50, calls interleaved",
            paired_exec_p50,
        ),
        row(
            "interleaved_execute_over_metadata_x",
            "Execute p50 / Metadata p50, interleaved",
            paired_exec_p50 / paired_meta_p50,
        )
        .target("<= 1.2x", |v| v <= 1.2),
        row(
            "interleaved_execute_over_metadata_p99_x",
            "Execute p99 / Metadata p99, interleaved",
            paired_exec_p99 / paired_meta_p99,
        )
        .target("<= 2x", |v| v <= 2.0),
    ]
}

async fn run(args: &Args) -> Result<Vec<Row>, Error> {
    let binary = &args.spawn;
    let launched = match &args.address {
        Some(_) => None,
        None => Some(Launched::start(binary, args.workers, &[])?),
    };
    let address = match (&args.address, &launched) {
        (Some(address), _) => address.clone(),
        (None, Some(plugin)) => plugin.address(),
        (None, None) => return Err("nothing to measure".into()),
    };
    let channel = connect(&address).await?;
    let mut domain = Domain::new(channel.clone());
    let python = Python::new(channel);
    let workers = settle(&address, &mut domain).await?;
    eprintln!(
        "loadgen: {address}, {workers} workers; Metadata and Execute {TRIVIAL:?}, {} calls each",
        args.calls
    );

    let mut metadata = || {
        let mut d = domain.clone();
        async move { Ok(d.metadata(Empty {}).await.map(drop)?) }
    };
    // Idle Health on a connection of its own: its delays must not change the TCP state that
    // Metadata and Execute see.
    let health_domain = Domain::new(connect(&address).await?);
    let mut health_idle = || {
        let mut d = health_domain.clone();
        async move { health(&mut d).await.map(drop) }
    };
    let mut trivial = || {
        let mut p = python.clone();
        async move { execute(&mut p, TRIVIAL, None).await }
    };
    // Warm-up (connection windows, allocators, Python's caches), then one phase per RPC, then
    // the two in alternating calls. In phases, Metadata's p50 on this VM is either about
    // 0.03 ms or about 0.09 ms, depending on whether the client's and the supervisor's threads
    // share a CPU; alternating calls compare the two under the same placement.
    let warm_up = (args.calls / 10).max(20);
    let (mut meta, mut exec, mut idle) = Default::default();
    sequential(warm_up, &mut Samples::default(), &mut metadata).await?;
    sequential(args.calls, &mut meta, &mut metadata).await?;
    sequential(warm_up, &mut Samples::default(), &mut trivial).await?;
    sequential(args.calls, &mut exec, &mut trivial).await?;
    let (mut meta_paired, mut exec_paired) = Default::default();
    interleaved(
        args.calls,
        (&mut meta_paired, &mut metadata),
        (&mut exec_paired, &mut trivial),
    )
    .await?;
    let paired = (meta_paired, exec_paired);
    if args.latency_only {
        return Ok(latency_rows(meta, exec, paired));
    }
    sequential(warm_up, &mut Samples::default(), &mut health_idle).await?;
    sequential((args.calls / 10).max(50), &mut idle, &mut health_idle).await?;
    // A run that leaves state behind: its worker retires after answering and a fresh fork
    // serves the next run (what isolation costs when it acts).
    let mut dirty = Samples::default();
    let mut leaves_state = || {
        let mut p = python.clone();
        async move { execute(&mut p, LEAVES_STATE, None).await }
    };
    let dirty_calls = (args.calls / 4).max(50);
    sequential(
        warm_up.min(dirty_calls),
        &mut Samples::default(),
        &mut leaves_state,
    )
    .await?;
    sequential(dirty_calls, &mut dirty, &mut leaves_state).await?;
    let dirty_rate = dirty.calls.len() as f64 / dirty.wall.as_secs_f64();
    let (dirty_p50, dirty_p99) = percentiles(dirty.calls);
    let meta_p50_p99 = percentiles(meta.calls.clone());
    let (idle_p50, idle_p99) = percentiles(idle.calls);
    eprintln!(
        "loadgen: ExecuteJob and HTTP /execute of {TRIVIAL:?}, {} calls each",
        args.calls
    );
    let door_rows = doors::measure(&domain, args.calls, warm_up, meta_p50_p99).await?;

    let duration = Duration::from_secs_f64(args.duration);
    eprintln!("loadgen: {CPU_BOUND:?} with 1 client, then 4, {duration:?} each");
    let one = throughput(&address, 1, duration, &[CPU_BOUND]).await?;
    let four = throughput(&address, 4, duration, &[CPU_BOUND]).await?;
    eprintln!("loadgen: {TRIVIAL:?} with 4 clients, {duration:?}");
    let trivial_four = throughput(&address, 4, duration, &[TRIVIAL]).await?;

    eprintln!("loadgen: Health while {workers} workers spin");
    let busy = Duration::from_secs_f64(args.busy_secs);
    let (h50, h99, samples, busy_share) = health_while_busy(&address, workers, busy).await?;
    eprintln!(
        "loadgen: {samples} Health calls, {:.0}% saw every worker busy",
        busy_share * 100.0
    );

    let spawned = launched.is_some();
    let (mut supervisor, mut worker_rss, mut slot_pss) = (None, Vec::new(), Vec::new());
    if let Some(plugin) = &launched {
        // Idle, after all the runs above: what a long-lived plugin holds. Each child is a
        // worker slot's template; its worker and standby are the template's children, and
        // share most of its pages, which proportional set size counts once.
        supervisor = rss_mib(plugin.pid());
        for template in children(plugin.pid()) {
            worker_rss.extend(rss_mib(template));
            let slot: Option<f64> = std::iter::once(template)
                .chain(children(template))
                .map(pss_mib)
                .sum();
            slot_pss.extend(slot);
        }
    }
    drop(launched);
    let (mut port_line, mut first_run) = (None, None);
    if spawned {
        eprintln!("loadgen: startup, {} launches", args.launches);
        let (line, run) = startup(binary, args.workers, args.launches).await?;
        (port_line, first_run) = (Some(line), Some(run));
    }

    let found = spawned.then_some(worker_rss.len() as f64);
    let scaling = four / one;
    let mut rows = latency_rows(meta, exec, paired);
    rows.extend([
        row(
            "execute_leaves_state_p50_ms",
            "Execute, run leaves state, p50",
            dirty_p50,
        ),
        row(
            "execute_leaves_state_p99_ms",
            "Execute, run leaves state, p99",
            dirty_p99,
        ),
        row(
            "execute_leaves_state_per_s",
            "Execute, run leaves state, sequential",
            dirty_rate,
        ),
    ]);
    rows.extend(door_rows);
    rows.extend([
        row("cpu_1_client_per_s", "sum(range(200000)), 1 client", one),
        row("cpu_4_clients_per_s", "sum(range(200000)), 4 clients", four),
        row("cpu_scaling_x", "4 clients / 1 client", scaling).target(">= 1.8x", |v| v >= 1.8),
        row(
            "trivial_4_clients_per_s",
            "Execute `x = 1 + 1`, 4 clients",
            trivial_four,
        ),
        row("health_idle_p50_ms", "Health p50, idle", idle_p50),
        row("health_idle_p99_ms", "Health p99, idle", idle_p99),
        row("health_busy_p50_ms", "Health p50, all workers busy", h50),
        row("health_busy_p99_ms", "Health p99, all workers busy", h99)
            .target("< 50 ms", |v| v < 50.0),
        row(
            "startup_port_line_ms",
            "exec -> port line (median)",
            port_line,
        )
        .target("< 100 ms", |v| v < 100.0),
        row(
            "startup_first_execute_ms",
            "exec -> first Execute (median)",
            first_run,
        ),
        row(
            "rss_supervisor_mib",
            "supervisor resident (idle)",
            supervisor,
        )
        .target("< 30 MiB", |v| v < 30.0),
        row("workers_found", "worker processes found", found)
            .target("= workers", |v| v as usize == workers),
    ]);
    for (i, rss) in worker_rss.iter().enumerate() {
        let (key, label) = (
            format!("rss_worker_{i}_mib"),
            format!("idle worker {i} resident"),
        );
        rows.push(row(key, label, *rss).target("< 30 MiB", |v| v < 30.0));
    }
    for (i, pss) in slot_pss.iter().enumerate() {
        let (key, label) = (
            format!("pss_slot_{i}_mib"),
            format!("worker slot {i}, all its processes (PSS)"),
        );
        rows.push(row(key, label, *pss));
    }
    if spawned && !args.no_environments {
        rows.extend(environments::measure(args).await?);
    }
    Ok(rows)
}
