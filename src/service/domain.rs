//! DomainPluginService: identity, lifecycle, health, configuration and jobs.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, PoisonError};

use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::deadline::CallDeadline;
use super::{http, jobs, Plugin};
use crate::catalog::Purpose;
use crate::config::Settings;
use crate::environments::EnvironmentStatus;
use crate::host::{Endpoints, HostLink};
use crate::identity::VERSION;
use crate::proto::domain_plugin_service_server::DomainPluginService;
use crate::proto::*;

pub struct Domain {
    plugin: Arc<Plugin>,
}

impl Domain {
    pub fn new(plugin: Arc<Plugin>) -> Self {
        Self { plugin }
    }

    /// Answered from counters only (protocol.md §3.7: never wait on Python). The totals keep
    /// their single-environment meaning; each environment also has its own `env.<name>` keys.
    fn health(&self) -> HealthResponse {
        let plugin = &self.plugin;
        let environments = &plugin.environments;
        let statuses = environments.statuses();
        let python = environments.embedded_python().to_owned();
        let sum = |f: fn(&EnvironmentStatus) -> u64| statuses.iter().map(f).sum::<u64>();
        let ready = sum(|s| s.workers as u64);
        let busy = sum(|s| s.busy as u64);
        let total = environments.budget().total();
        let mut details = HashMap::from([
            (plugin.name.clone(), python.clone()),
            ("python_version".into(), python.clone()),
            ("plugin_version".into(), VERSION.into()),
            ("workers_total".into(), total.to_string()),
            ("workers_ready".into(), ready.to_string()),
            ("workers_busy".into(), busy.to_string()),
            ("queue_depth".into(), sum(|s| s.queued as u64).to_string()),
            ("worker_restarts".into(), sum(|s| s.restarts).to_string()),
            ("worker_refreshes".into(), sum(|s| s.refreshes).to_string()),
            ("runs_completed".into(), sum(|s| s.runs).to_string()),
            (
                "uptime_secs".into(),
                plugin.started.elapsed().as_secs().to_string(),
            ),
            ("environments".into(), environments.names().join(", ")),
            (
                "default_environment".into(),
                environments.default_name().to_owned(),
            ),
        ]);
        let several = statuses.len() > 1;
        let mut packages = 0;
        let mut package_failures = Vec::new();
        for status in &statuses {
            let key = |field: &str| format!("env.{}.{field}", status.name);
            details.insert(format!("env.{}", status.name), status.summary());
            details.insert(key("state"), status.state.clone());
            details.insert(key("workers"), status.workers.to_string());
            details.insert(key("busy"), status.busy.to_string());
            details.insert(key("queued"), status.queued.to_string());
            details.insert(key("runs"), status.runs.to_string());
            details.insert(key("restarts"), status.restarts.to_string());
            details.insert(key("refreshes"), status.refreshes.to_string());
            if let Some(error) = &status.error {
                details.insert(key("error"), error.clone());
            }
            if !status.packages.is_empty() {
                let failures = status.package_failures();
                details.insert(key("packages"), status.packages.len().to_string());
                details.insert(key("package_failures"), failures.join(", "));
                packages += status.packages.len();
                package_failures.extend(failures.into_iter().map(|failure| {
                    if several {
                        format!("{}: {failure}", status.name)
                    } else {
                        failure
                    }
                }));
            }
        }
        if packages > 0 {
            details.insert("packages".into(), packages.to_string());
            details.insert("package_failures".into(), package_failures.join(", "));
        }
        let failed: Vec<String> = statuses
            .iter()
            .filter_map(|s| s.error.as_ref().map(|e| format!("{}: {e}", s.name)))
            .collect();
        if let Some(error) = statuses.iter().find_map(|s| s.error.clone()) {
            details.insert("worker_error".into(), error);
        }
        let shutting_down = plugin.shutdown.is_cancelled();
        // Unhealthy only when no environment can run anything: then nothing works, and a
        // restart is the one remedy the host has. One failed environment of several is reported
        // but keeps the plugin healthy, since the others serve.
        let all_failed = failed.len() == statuses.len();
        let message = if shutting_down {
            "shutting down".to_owned()
        } else if all_failed {
            format!("no worker can start: {}", failed.join("; "))
        } else {
            let mut message =
                format!("Python {python}, {ready}/{total} workers running, {busy} busy");
            if several {
                let states: Vec<String> = statuses
                    .iter()
                    .map(|s| format!("{} {}", s.name, s.state))
                    .collect();
                message.push_str(&format!("; environments: {}", states.join(", ")));
            }
            message
        };
        HealthResponse {
            healthy: !shutting_down && !all_failed,
            message,
            details,
        }
    }
}

type WebSocketStream = Pin<Box<dyn Stream<Item = Result<WebSocketMessage, Status>> + Send>>;

#[tonic::async_trait]
impl DomainPluginService for Domain {
    async fn metadata(&self, _: Request<Empty>) -> Result<Response<MetadataResponse>, Status> {
        Ok(Response::new(MetadataResponse {
            name: self.plugin.name.clone(),
            version: VERSION.into(),
            qntx_version: ">=0.1.0".into(),
            description: "Python provider: embedded CPython in supervised worker processes".into(),
            author: "qntx-python-plugin developers".into(),
            license: env!("CARGO_PKG_LICENSE").into(),
        }))
    }

    async fn initialize(
        &self,
        request: Request<InitializeRequest>,
    ) -> Result<Response<InitializeResponse>, Status> {
        let request = request.into_inner();
        let plugin = &self.plugin;
        // Everything is read before anything is applied: a failed Initialize changes nothing.
        let settings = Settings::from_config(&request.config)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let link = HostLink::connect(&Endpoints {
            ats_store: request.ats_store_endpoint,
            queue: request.queue_endpoint,
            schedule: request.schedule_endpoint,
            fetch: request.fetch_endpoint,
            auth_token: request.auth_token.into(),
        });
        // Applied as soon as it is read, unless a later read (a reload) already was; nothing
        // below can fail, so a failed Initialize still changes nothing.
        let refreshed = plugin
            .catalog
            .refresh(
                &plugin.name,
                &link,
                &plugin.environments,
                Purpose::Initialize,
            )
            .await;
        let catalog = match refreshed {
            Ok(refreshed) => refreshed.catalog,
            Err(error) => {
                let reason = error.to_string();
                // Declaring nothing would make the host prune every schedule and watcher.
                if !plugin.catalog.has_been_read() {
                    return Err(Status::unavailable(format!(
                        "cannot read the handler catalog: {reason}"
                    )));
                }
                tracing::warn!(%reason, "cannot read the handler catalog; keeping the last good one");
                plugin.catalog()
            }
        };

        *plugin
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner) = settings;
        *plugin.host.write().unwrap_or_else(PoisonError::into_inner) = Some(link);
        let response = InitializeResponse {
            handler_names: catalog.handler_names(&plugin.name),
            schedules: catalog.schedules(&plugin.name),
            watchers: catalog.watchers(&plugin.name),
            python_provider: true,
            http_routes: http::routes(),
            ..Default::default()
        };
        tracing::info!(
            handlers = catalog.len(),
            faulted = catalog.faulted.len(),
            config_keys = request.config.len(),
            "initialized"
        );
        Ok(Response::new(response))
    }

    async fn shutdown(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        tracing::info!("shutdown requested by the host");
        // Reply first; the server stops once this answer is on its way.
        let token = self.plugin.shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            token.cancel();
        });
        Ok(Response::new(Empty {}))
    }

    async fn handle_http(
        &self,
        request: Request<HttpRequest>,
    ) -> Result<Response<HttpResponse>, Status> {
        let deadline = CallDeadline::from_metadata(request.metadata());
        Ok(Response::new(
            http::handle(&self.plugin, request.into_inner(), deadline).await,
        ))
    }

    type HandleWebSocketStream = WebSocketStream;

    async fn handle_web_socket(
        &self,
        _: Request<Streaming<WebSocketMessage>>,
    ) -> Result<Response<Self::HandleWebSocketStream>, Status> {
        Err(Status::unimplemented(
            "this plugin has no WebSocket endpoint",
        ))
    }

    async fn health(&self, _: Request<Empty>) -> Result<Response<HealthResponse>, Status> {
        Ok(Response::new(self.health()))
    }

    async fn config_schema(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<ConfigSchemaResponse>, Status> {
        Ok(Response::new(ConfigSchemaResponse {
            fields: crate::config::schema(),
        }))
    }

    async fn register_glyphs(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<GlyphDefResponse>, Status> {
        // Exactly one def: the host shows only a plugin's first (see http::glyph).
        Ok(Response::new(GlyphDefResponse {
            glyphs: vec![http::glyph_definition(&self.plugin)],
        }))
    }

    async fn execute_job(
        &self,
        request: Request<ExecuteJobRequest>,
    ) -> Result<Response<ExecuteJobResponse>, Status> {
        let call_deadline = CallDeadline::from_metadata(request.metadata());
        Ok(Response::new(
            jobs::execute_job(&self.plugin, request.into_inner(), call_deadline).await,
        ))
    }

    async fn parse_ax_query(
        &self,
        _: Request<ParseAxQueryRequest>,
    ) -> Result<Response<ParseAxQueryResponse>, Status> {
        Err(Status::unimplemented(
            "this plugin does not parse ax queries",
        ))
    }
}
