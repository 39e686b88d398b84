//! PythonService: the host's door for ad-hoc Python (glyphs, watcher actions).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::deadline::CallDeadline;
use super::{parse_upstream, Plugin};
use crate::ipc::Program;
use crate::proto::python_service_server::PythonService;
use crate::proto::{PythonExecuteRequest, PythonExecuteResponse};

pub struct PythonApi {
    plugin: Arc<Plugin>,
}

impl PythonApi {
    pub fn new(plugin: Arc<Plugin>) -> Self {
        Self { plugin }
    }
}

#[tonic::async_trait]
impl PythonService for PythonApi {
    async fn execute(
        &self,
        request: Request<PythonExecuteRequest>,
    ) -> Result<Response<PythonExecuteResponse>, Status> {
        let deadline = CallDeadline::from_metadata(request.metadata());
        let request = request.into_inner();
        if request.code.trim().is_empty() {
            return Err(Status::invalid_argument(
                "code is empty: send the Python source to run in 'code'",
            ));
        }
        let upstream_json = parse_upstream(&request.upstream_attestation, "upstream_attestation")
            .map_err(Status::invalid_argument)?;
        let program = Program {
            upstream_json,
            glyph_id: request.glyph_id,
            ..Program::new(request.code, "<execute>")
        };
        let execution = self
            .plugin
            .execute_within(program, None, None, deadline)
            .await?;
        Ok(Response::new(PythonExecuteResponse {
            success: execution.success,
            output: execution.stdout.clone(),
            error: execution.error.clone().unwrap_or_default(),
            result: execution.to_json_bytes(),
        }))
    }
}
