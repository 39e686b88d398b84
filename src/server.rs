//! Serving: bind, announce the port, serve every service on one h2c port, stop on signals.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::proto::domain_plugin_service_server::DomainPluginServiceServer;
use crate::proto::python_service_server::PythonServiceServer;
use crate::service::domain::Domain;
use crate::service::python::PythonApi;
use crate::service::Plugin;

/// The host's client allows 100 MB messages; so do we.
const MAX_MESSAGE_BYTES: usize = 100 * 1024 * 1024;
/// Attempts at successive ports when the requested one is taken (as the existing plugin does).
const PORT_ATTEMPTS: u16 = 10;
/// How long in-flight calls get to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot resolve {address}: {source}")]
    Resolve {
        address: String,
        source: std::io::Error,
    },
    #[error("{address} resolves to no address")]
    NoAddress { address: String },
    #[error("cannot bind {address} (tried {attempts} ports from {first_port}): {source}")]
    Bind {
        address: String,
        first_port: u16,
        attempts: u16,
        source: std::io::Error,
    },
    #[error("cannot announce the port: {0}")]
    Announce(std::io::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Binds `host:port`, trying the next ports while the port is in use.
pub async fn bind(host: &str, port: u16) -> Result<TcpListener, ServeError> {
    let attempts = if port == 0 { 1 } else { PORT_ATTEMPTS };
    let mut last_error = None;
    for offset in 0..attempts {
        let candidate = port.saturating_add(offset);
        let address = format!("{host}:{candidate}");
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host(&address)
            .await
            .map_err(|source| ServeError::Resolve {
                address: address.clone(),
                source,
            })?
            .collect();
        if resolved.is_empty() {
            return Err(ServeError::NoAddress { address });
        }
        for socket in resolved {
            match TcpListener::bind(socket).await {
                Ok(listener) => return Ok(listener),
                Err(error) => last_error = Some(error),
            }
        }
        if !matches!(&last_error, Some(e) if e.kind() == std::io::ErrorKind::AddrInUse) {
            break;
        }
    }
    Err(ServeError::Bind {
        address: host.to_owned(),
        first_port: port,
        attempts,
        source: last_error.unwrap_or_else(|| std::io::Error::other("no address tried")),
    })
}

/// Whether only this machine can reach `ip` (an IPv4-mapped IPv6 loopback counts).
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
    }
}

/// Warns when the plugin listens where other machines can reach it: gRPC calls carry no
/// authentication (protocol §1.1), so whoever reaches the port runs code as the plugin's user
/// and with its host token.
pub fn warn_if_exposed(bound: SocketAddr) {
    if !is_loopback(bound.ip()) {
        tracing::warn!(
            address = %bound,
            "listening on a non-loopback address: anyone who can reach it can run Python as this \
             user and use the host's token (calls are not authenticated); the host itself only \
             dials 127.0.0.1"
        );
    }
}

/// The host reads this exact line (and flushes matter: stdout is a pipe).
pub fn announce_port(port: u16) -> Result<(), ServeError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "QNTX_PLUGIN_PORT={port}").map_err(ServeError::Announce)?;
    stdout.flush().map_err(ServeError::Announce)
}

/// Serves until Shutdown, SIGINT or SIGTERM; then kills the workers and returns.
pub async fn serve(listener: TcpListener, plugin: Arc<Plugin>) -> Result<(), ServeError> {
    let shutdown = plugin.shutdown.clone();
    spawn_signal_watch(shutdown.clone())?;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<DomainPluginServiceServer<Domain>>()
        .await;
    health_reporter
        .set_serving::<PythonServiceServer<PythonApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let domain = DomainPluginServiceServer::new(Domain::new(Arc::clone(&plugin)))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let python = PythonServiceServer::new(PythonApi::new(Arc::clone(&plugin)))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let stopping = shutdown.clone();
    let server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(domain)
        .add_service(python)
        // Without TCP_NODELAY a reply written in two segments waits for the client's delayed
        // ACK: 40 ms on every Health call and every answer over a few hundred bytes.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                stopping.cancelled().await;
            },
        );
    tokio::pin!(server);

    tokio::select! {
        result = &mut server => result?,
        () = shutdown.cancelled() => {
            // Running programs are not waited for: kill them now, then give calls a moment.
            plugin.environments.shutdown();
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await;
        }
    }
    plugin.environments.shutdown();
    tracing::info!("stopped");
    Ok(())
}

fn spawn_signal_watch(shutdown: CancellationToken) -> Result<(), ServeError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
        shutdown.cancel();
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn loopback_addresses() {
        for loopback in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(loopback.parse().unwrap()), "{loopback}");
        }
        for exposed in [
            "0.0.0.0",
            "::",
            "192.168.1.5",
            "10.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_loopback(exposed.parse().unwrap()), "{exposed}");
        }
    }
}
