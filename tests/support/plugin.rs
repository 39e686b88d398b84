//! Starts the real binary the way the host does and talks to it over real gRPC.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qntx_python_plugin::proto::domain_plugin_service_client::DomainPluginServiceClient;
use qntx_python_plugin::proto::python_service_client::PythonServiceClient;
use qntx_python_plugin::proto::{PythonExecuteRequest, PythonExecuteResponse};
use tonic::transport::Channel;

pub const BINARY: &str = env!("CARGO_BIN_EXE_qntx-python-plugin");

pub struct Plugin {
    child: Child,
    pub port: u16,
    /// Every stdout line after the port line (JSON logs).
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub started: Instant,
    pub port_line_after: Duration,
    _dir: tempfile::TempDir,
}

pub struct Launch {
    pub executable_name: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Variables removed from the inherited environment.
    pub env_removed: Vec<String>,
}

impl Default for Launch {
    fn default() -> Self {
        Self {
            executable_name: "qntx-python-plugin".into(),
            args: vec!["--port".into(), "0".into()],
            env: Vec::new(),
            env_removed: Vec::new(),
        }
    }
}

impl Launch {
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }
    pub fn named(mut self, executable_name: &str) -> Self {
        self.executable_name = executable_name.into();
        self
    }
    pub fn replace_args(mut self, args: &[&str]) -> Self {
        self.args = args.iter().map(|a| a.to_string()).collect();
        self
    }
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
    pub fn env_remove(mut self, key: &str) -> Self {
        self.env_removed.push(key.into());
        self
    }
}

/// The binary copied into a fresh directory under the given name, as the host installs it.
pub fn installed_copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    // A hard link never has the file open for writing, so a concurrent fork in another test
    // cannot make exec fail with ETXTBSY; copy only where linking is impossible.
    if std::fs::hard_link(BINARY, &path).is_err() {
        std::fs::copy(BINARY, &path).expect("copy the binary");
    }
    (dir, path)
}

/// A copied executable can be "busy" while another thread's fork still holds it open.
fn spawn_retrying_busy(command: &mut Command) -> Child {
    for _ in 0..50 {
        match command.spawn() {
            Ok(child) => return child,
            Err(error) if error.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(error) => panic!("start the plugin: {error}"),
        }
    }
    panic!("start the plugin: executable stayed busy")
}

impl Plugin {
    pub fn start(args: &[&str]) -> Self {
        Self::launch(Launch::default().args(args))
    }

    pub fn launch(launch: Launch) -> Self {
        let (dir, path) = installed_copy(&launch.executable_name);
        let mut command = Command::new(&path);
        command
            .args(&launch.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for key in &launch.env_removed {
            command.env_remove(key);
        }
        for (key, value) in &launch.env {
            command.env(key, value);
        }
        let started = Instant::now();
        let mut child = spawn_retrying_busy(&mut command);
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let collected = Arc::clone(&lines);
        std::thread::spawn(move || {
            let mut port_tx = Some(port_tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = line.trim().strip_prefix("QNTX_PLUGIN_PORT=") {
                    if let Some(tx) = port_tx.take() {
                        let _ =
                            tx.send((port.parse::<u16>().expect("port number"), started.elapsed()));
                        continue;
                    }
                }
                collected.lock().unwrap().push(line);
            }
        });
        let (port, port_line_after) = port_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("QNTX_PLUGIN_PORT line within 10 s");
        Self {
            child,
            port,
            stdout: lines,
            started,
            port_line_after,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub async fn channel(&self) -> Channel {
        let endpoint = format!("http://127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Channel::from_shared(endpoint.clone())
                .unwrap()
                .connect()
                .await
            {
                Ok(channel) => return channel,
                Err(error) if Instant::now() > deadline => panic!("cannot connect: {error}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    pub async fn domain(&self) -> DomainPluginServiceClient<Channel> {
        DomainPluginServiceClient::new(self.channel().await)
            .max_decoding_message_size(128 * 1024 * 1024)
    }

    pub async fn python(&self) -> PythonServiceClient<Channel> {
        PythonServiceClient::new(self.channel().await).max_decoding_message_size(128 * 1024 * 1024)
    }

    pub fn signal(&self, signal: i32) {
        unsafe { libc::kill(self.pid(), signal) };
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// The log lines once one contains `needle` (the reader thread may not have read it yet
    /// when the event it reports is already visible elsewhere), waiting up to 10 s.
    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.log_lines();
            if lines.iter().any(|l| l.contains(needle)) {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?}: {lines:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An Initialize request for a host at `endpoints` (a fake host in tests), with `config`.
pub fn initialize_request(
    endpoints: &qntx_python_plugin::host::Endpoints,
    config: &[(&str, &str)],
) -> qntx_python_plugin::proto::InitializeRequest {
    qntx_python_plugin::proto::InitializeRequest {
        ats_store_endpoint: endpoints.ats_store.clone(),
        queue_endpoint: endpoints.queue.clone(),
        schedule_endpoint: endpoints.schedule.clone(),
        fetch_endpoint: endpoints.fetch.clone(),
        auth_token: endpoints.auth_token.expose().to_owned(),
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

/// One Execute call.
pub async fn execute(
    client: &mut PythonServiceClient<Channel>,
    code: &str,
) -> PythonExecuteResponse {
    client
        .execute(PythonExecuteRequest {
            code: code.into(),
            ..Default::default()
        })
        .await
        .expect("Execute answered")
        .into_inner()
}

/// The execution-result object inside an Execute answer.
pub fn result_object(response: &PythonExecuteResponse) -> serde_json::Value {
    serde_json::from_slice(&response.result).expect("result is JSON")
}

/// Polls Health until `done` holds for its details, for up to `patience`.
async fn wait_for_health(
    plugin: &Plugin,
    what: &str,
    patience: Duration,
    done: impl Fn(&std::collections::HashMap<String, String>) -> bool,
) {
    let mut client = plugin.domain().await;
    let deadline = Instant::now() + patience;
    loop {
        let health = client
            .health(qntx_python_plugin::proto::Empty {})
            .await
            .unwrap()
            .into_inner();
        if done(&health.details) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Health never showed {what}: {health:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Warms the default environment: its pool starts on first use, so one trivial run brings a
/// worker up (tests that time a run or count restarts want a settled pool).
pub async fn wait_ready(plugin: &Plugin) {
    let response = execute(&mut plugin.python().await, "None").await;
    assert!(response.success, "warm-up run failed: {}", response.error);
}

/// A plugin with one worker, up and warm: every run lands where the earlier ones ran.
pub async fn one_worker() -> Plugin {
    let plugin = Plugin::start(&["--workers", "1"]);
    wait_ready(&plugin).await;
    plugin
}

/// Waits until Health's `key` reads `value` (e.g. until a run occupies a worker).
pub async fn wait_for_detail(plugin: &Plugin, key: &str, value: &str) {
    let matches = |details: &std::collections::HashMap<String, String>| {
        details.get(key).map(String::as_str) == Some(value)
    };
    wait_for_health(
        plugin,
        &format!("{key} = {value}"),
        Duration::from_secs(10),
        matches,
    )
    .await;
}

pub async fn health_detail(plugin: &Plugin, key: &str) -> String {
    let mut client = plugin.domain().await;
    let health = client
        .health(qntx_python_plugin::proto::Empty {})
        .await
        .unwrap()
        .into_inner();
    health.details.get(key).cloned().unwrap_or_default()
}
