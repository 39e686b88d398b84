//! The environments phase: what declaring several environments costs. Two small venvs (no
//! packages) are made with `--python`; then, against launched plugins:
//! - routing: Execute p50 with two environments declared against one, in alternating blocks;
//! - processes of a declared environment that was never used;
//! - CPU-bound runs split across the two environments, 1 client and 4;
//! - the first run in a cold environment (its pool not started), median of `--launches`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{
    children, connect, execute, health, median, percentiles, row, sequential, settle, throughput,
    Args, Domain, Error, Launched, Python, Row, Samples, TRIVIAL,
};

const IN_DATA: &str = "# py:data\nx = 1";
const CPU_SPLIT: &[&str] = &[
    "# py:bio\nsum(range(200000))",
    "# py:data\nsum(range(200000))",
];

/// Two venvs, `bio` and `data`, made with the embedded Python's minor version.
struct Venvs {
    dir: tempfile::TempDir,
}

impl Venvs {
    fn make(python: &Path) -> Result<Self, Error> {
        let dir = tempfile::tempdir()?;
        for name in ["bio", "data"] {
            let status = Command::new(python)
                .args(["-m", "venv", "--without-pip"])
                .arg(dir.path().join(name))
                .status()
                .map_err(|e| format!("{}: {e} (give --python)", python.display()))?;
            if !status.success() {
                return Err(format!("{} -m venv failed", python.display()).into());
            }
        }
        Ok(Self { dir })
    }

    fn flag(&self, name: &str) -> [String; 2] {
        [
            "--env".to_owned(),
            format!("{name}={}", self.dir.path().join(name).display()),
        ]
    }

    fn one(&self) -> Vec<String> {
        self.flag("bio").to_vec()
    }

    fn two(&self) -> Vec<String> {
        [self.flag("bio"), self.flag("data")].concat()
    }
}

fn python(args: &Args) -> PathBuf {
    args.python
        .clone()
        .or_else(|| std::env::var_os("PYO3_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"))
}

pub async fn measure(args: &Args) -> Result<Vec<Row>, Error> {
    let venvs = Venvs::make(&python(args))?;
    let one = Launched::start(&args.spawn, args.workers, &venvs.one())?;
    let two = Launched::start(&args.spawn, args.workers, &venvs.two())?;
    let (one_address, two_address) = (one.address(), two.address());
    settle(&one_address, &mut Domain::new(connect(&one_address).await?)).await?;
    let mut two_domain = Domain::new(connect(&two_address).await?);
    settle(&two_address, &mut two_domain).await?;

    eprintln!("loadgen: Execute {TRIVIAL:?} with one environment declared and with two, alternating blocks");
    let clients = [
        Python::new(connect(&one_address).await?),
        Python::new(connect(&two_address).await?),
    ];
    // Short alternating blocks, so both plugins see the same drift of the machine; the cost
    // is the median of the per-round ratios, which one noisy block cannot move.
    let mut samples = [Samples::default(), Samples::default()];
    let mut ratios = Vec::new();
    let block = (args.calls / 8).max(50);
    for round in 0..9 {
        let mut round_p50 = [0.0; 2];
        for (i, client) in clients.iter().enumerate() {
            let mut call = || {
                let mut client = client.clone();
                async move { execute(&mut client, TRIVIAL, None).await }
            };
            let mut this_round = Samples::default();
            sequential(block, &mut this_round, &mut call).await?;
            round_p50[i] = percentiles(this_round.calls.clone()).0;
            // The first round warms both up and is not counted.
            if round > 0 {
                samples[i].calls.extend(this_round.calls);
            }
        }
        if round > 0 {
            ratios.push(round_p50[1] / round_p50[0]);
        }
    }
    let [one_samples, two_samples] = samples;
    let (one_p50, _) = percentiles(one_samples.calls);
    let (two_p50, two_p99) = percentiles(two_samples.calls);

    // Only `bio` (the default) has run: `data` must own no process.
    let h = health(&mut two_domain).await?;
    let bio_workers: usize = h
        .details
        .get("env.bio.workers")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let unused = children(two.pid()).len().saturating_sub(bio_workers);

    let duration = Duration::from_secs_f64(args.duration);
    eprintln!(
        "loadgen: sum(range(200000)) split across bio and data, 1 client then 4, {duration:?} each"
    );
    let split_one = throughput(&two_address, 1, duration, CPU_SPLIT).await?;
    let split_four = throughput(&two_address, 4, duration, CPU_SPLIT).await?;
    drop((one, two));

    eprintln!(
        "loadgen: first run in a cold environment, {} launches",
        args.launches
    );
    let mut cold = Vec::new();
    for _ in 0..args.launches.max(1) {
        let plugin = Launched::start(&args.spawn, args.workers, &venvs.two())?;
        let mut python = Python::new(connect(&plugin.address()).await?);
        execute(&mut python, TRIVIAL, Some(Duration::from_secs(60))).await?;
        let started = Instant::now();
        execute(&mut python, IN_DATA, Some(Duration::from_secs(60))).await?;
        cold.push(started.elapsed().as_secs_f64() * 1e3);
    }

    Ok(vec![
        row(
            "envs_one_execute_p50_ms",
            "Execute p50, one environment",
            one_p50,
        ),
        row(
            "envs_two_execute_p50_ms",
            "Execute p50, two environments",
            two_p50,
        ),
        row(
            "envs_two_execute_p99_ms",
            "Execute p99, two environments",
            two_p99,
        ),
        row(
            "envs_routing_cost_x",
            "two environments / one, Execute p50 (median of rounds)",
            median(ratios),
        )
        .target("<= 1.05x", |v| v <= 1.05),
        row(
            "envs_unused_processes",
            "processes of a declared, unused environment",
            unused as f64,
        )
        .target("= 0", |v| v == 0.0),
        row(
            "envs_split_1_client_per_s",
            "CPU split across 2 envs, 1 client",
            split_one,
        ),
        row(
            "envs_split_4_clients_per_s",
            "CPU split across 2 envs, 4 clients",
            split_four,
        ),
        row(
            "envs_split_scaling_x",
            "split across 2 envs: 4 clients / 1",
            split_four / split_one,
        )
        .target(">= 1.8x", |v| v >= 1.8),
        row(
            "envs_cold_first_run_ms",
            "first run in a cold environment (median)",
            median(cold),
        )
        .target("< 300 ms", |v| v < 300.0),
    ])
}
