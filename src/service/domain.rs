//! DomainPluginService: identity, lifecycle, health, configuration and jobs.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::{deadline, handler_jobs, http, jobs, Plugin};
use crate::catalog::Catalog;
use crate::config::Settings;
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

    fn health(&self) -> HealthResponse {
        let plugin = &self.plugin;
        let stats = plugin.pool.stats();
        let python = stats
            .python_version
            .get()
            .cloned()
            .unwrap_or_else(|| "starting".into());
        let total = stats.workers_total.load(Ordering::Relaxed);
        let ready = stats.workers_ready.load(Ordering::Relaxed);
        let busy = stats.workers_busy.load(Ordering::Relaxed);
        let mut details = HashMap::from([
            (plugin.name.clone(), python.clone()),
            ("python_version".into(), python.clone()),
            ("plugin_version".into(), VERSION.into()),
            ("workers_total".into(), total.to_string()),
            ("workers_ready".into(), ready.to_string()),
            ("workers_busy".into(), busy.to_string()),
            ("queue_depth".into(), plugin.pool.queue_depth().to_string()),
            (
                "worker_restarts".into(),
                stats.worker_restarts.load(Ordering::Relaxed).to_string(),
            ),
            (
                "runs_completed".into(),
                stats.runs_completed.load(Ordering::Relaxed).to_string(),
            ),
            (
                "uptime_secs".into(),
                plugin.started.elapsed().as_secs().to_string(),
            ),
        ]);
        if let Some(report) = plugin
            .environment
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            details.insert("packages".into(), report.packages.to_string());
            details.insert("package_failures".into(), report.failures.join(", "));
        }
        let shutting_down = plugin.shutdown.is_cancelled();
        // Unhealthy only when no worker can run anything: then a restart is the right remedy.
        let start_error = stats.start_error().filter(|_| ready == 0);
        if let Some(error) = &start_error {
            details.insert("worker_error".into(), error.clone());
        }
        HealthResponse {
            healthy: !shutting_down && start_error.is_none(),
            message: if shutting_down {
                "shutting down".into()
            } else if let Some(error) = start_error {
                format!("no worker can start: {error}")
            } else {
                format!("Python {python}, {ready}/{total} workers ready, {busy} busy")
            },
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
        let discovered = Catalog::discover(&plugin.name, &link, &plugin.pool).await;
        let catalog = match discovered {
            Ok(discovered) => {
                handler_jobs::record_faults(
                    link.clone(),
                    plugin.name.clone(),
                    discovered.new_faults,
                );
                discovered.catalog
            }
            Err(error) => {
                let reason = error.to_string();
                // Declaring nothing would make the host prune every schedule and watcher.
                if !plugin.catalog_read.load(Ordering::Relaxed) {
                    return Err(Status::unavailable(format!(
                        "cannot read the handler catalog: {reason}"
                    )));
                }
                tracing::warn!(%reason, "cannot read the handler catalog; keeping the last good one");
                (*plugin.catalog()).clone()
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
        plugin.set_catalog(catalog);
        plugin.catalog_read.store(true, Ordering::Relaxed);
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
        Ok(Response::new(
            http::handle(&self.plugin, request.into_inner()).await,
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
        Ok(Response::new(GlyphDefResponse { glyphs: Vec::new() }))
    }

    async fn execute_job(
        &self,
        request: Request<ExecuteJobRequest>,
    ) -> Result<Response<ExecuteJobResponse>, Status> {
        let call_deadline = deadline::from_metadata(request.metadata());
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
