//! The four services of the fake host (see `fake_host.rs` for the semantics they follow).

use std::pin::Pin;

use prost::Message;
use prost_types::value::Kind;
use prost_types::{Struct, Value};
use qntx_python_plugin::proto::ats_store_service_server::AtsStoreService;
use qntx_python_plugin::proto::fetch_service_server::FetchService;
use qntx_python_plugin::proto::queue_service_server::QueueService;
use qntx_python_plugin::proto::schedule_service_server::ScheduleService;
use qntx_python_plugin::proto::*;
use tonic::{Request, Response, Status};

use super::{rfc3339_in, text, Shared, BAD_TOKEN};

/// `ok!(Reply, field: value, …)`: a successful answer with those fields.
macro_rules! ok {
    ($reply:ident $(, $field:ident: $value:expr)* $(,)?) => {
        Ok(Response::new($reply { success: true, $($field: $value,)* ..Default::default() }))
    };
}

/// `fail!(Reply, error)`: the host's refusal, `success = false` with its text.
macro_rules! fail {
    ($reply:ident, $error:expr) => {
        Ok(Response::new($reply {
            error: $error.into(),
            ..Default::default()
        }))
    };
}

pub(super) struct Ats(pub(super) Shared);

type AttestationStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<Attestation, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AtsStoreService for Ats {
    async fn create_attestation(
        &self,
        request: Request<CreateAttestationRequest>,
    ) -> Result<Response<CreateAttestationResponse>, Status> {
        let r = request.into_inner();
        let valid = self.0.receive("CreateAttestation", &r.auth_token, &r).await;
        let Some(attestation) = r.attestation else {
            return Err(self.0.crash("CreateAttestation", "attestation"));
        };
        if !valid {
            return fail!(CreateAttestationResponse, BAD_TOKEN);
        }
        self.0.lock().push(attestation);
        ok!(CreateAttestationResponse)
    }

    async fn attestation_exists(
        &self,
        request: Request<AttestationExistsRequest>,
    ) -> Result<Response<AttestationExistsResponse>, Status> {
        let r = request.into_inner();
        let valid = self.0.receive("AttestationExists", &r.auth_token, &r).await;
        let exists = valid && self.0.lock().attestations.iter().any(|(_, a)| a.id == r.id);
        Ok(Response::new(AttestationExistsResponse { exists }))
    }

    async fn generate_and_create_attestation(
        &self,
        request: Request<GenerateAttestationRequest>,
    ) -> Result<Response<GenerateAttestationResponse>, Status> {
        let r = request.into_inner();
        let method = "GenerateAndCreateAttestation";
        if !self.0.receive(method, &r.auth_token, &r).await {
            return fail!(GenerateAttestationResponse, BAD_TOKEN);
        }
        let Some(command) = r.command else {
            return fail!(GenerateAttestationResponse, "command is nil");
        };
        let attestation = self.0.lock().generate(command);
        ok!(GenerateAttestationResponse, attestation: Some(attestation))
    }

    async fn batch_generate_and_create_attestations(
        &self,
        request: Request<BatchGenerateAttestationRequest>,
    ) -> Result<Response<BatchGenerateAttestationResponse>, Status> {
        let r = request.into_inner();
        let method = "BatchGenerateAndCreateAttestations";
        if !self.0.receive(method, &r.auth_token, &r).await {
            return fail!(BatchGenerateAttestationResponse, BAD_TOKEN);
        }
        let created = r.commands.len() as i32;
        let mut store = self.0.lock();
        r.commands
            .into_iter()
            .for_each(|command| drop(store.generate(command)));
        ok!(BatchGenerateAttestationResponse, created: created)
    }

    async fn get_attestations(
        &self,
        request: Request<GetAttestationsRequest>,
    ) -> Result<Response<GetAttestationsResponse>, Status> {
        let r = request.into_inner();
        let valid = self.0.receive("GetAttestations", &r.auth_token, &r).await;
        let Some(filter) = r.filter else {
            return Err(self.0.crash("GetAttestations", "filter"));
        };
        if !valid {
            return fail!(GetAttestationsResponse, BAD_TOKEN);
        }
        let attestations = self.0.lock().select(&filter);
        ok!(GetAttestationsResponse, attestations: attestations)
    }

    type GetAttestationsStreamStream = AttestationStream;

    async fn get_attestations_stream(
        &self,
        request: Request<GetAttestationsRequest>,
    ) -> Result<Response<AttestationStream>, Status> {
        let r = request.into_inner();
        let valid = self
            .0
            .receive("GetAttestationsStream", &r.auth_token, &r)
            .await;
        let Some(filter) = r.filter else {
            return Err(self.0.crash("GetAttestationsStream", "filter"));
        };
        if !valid {
            return Err(Status::unauthenticated(BAD_TOKEN));
        }
        let (attestations, held) = {
            let mut store = self.0.lock();
            (store.select(&filter), store.held_stream.take())
        };
        if let Some((arrived, release)) = held {
            let _ = arrived.send(());
            let _ = release.await;
        }
        let stream = tokio_stream::iter(attestations.into_iter().map(Ok));
        Ok(Response::new(Box::pin(stream)))
    }
}

pub(super) struct Queue(pub(super) Shared);

impl Queue {
    /// Enqueue and UpdateJob: both dereference `job` and `job.progress`, and store the job.
    async fn store(
        &self,
        method: &'static str,
        token: &str,
        job: Option<Job>,
        bytes: usize,
    ) -> Result<Result<String, &'static str>, Status> {
        let valid = self.0.receive_bytes(method, token, bytes).await;
        let Some(job) = job else {
            return Err(self.0.crash(method, "job"));
        };
        if job.progress.is_none() {
            return Err(self.0.crash(method, "job.progress"));
        }
        if !valid {
            return Ok(Err(BAD_TOKEN));
        }
        if job.handler_name.is_empty() {
            return Ok(Err("handler_name is required"));
        }
        let id = job.id.clone();
        let mut store = self.0.lock();
        store.jobs.retain(|j| j.id != job.id);
        store.jobs.push(job);
        Ok(Ok(id))
    }
}

#[tonic::async_trait]
impl QueueService for Queue {
    async fn enqueue(
        &self,
        request: Request<EnqueueRequest>,
    ) -> Result<Response<EnqueueResponse>, Status> {
        let r = request.into_inner();
        let bytes = r.encoded_len();
        match self.store("Enqueue", &r.auth_token, r.job, bytes).await? {
            Ok(job_id) => ok!(EnqueueResponse, job_id: job_id),
            Err(error) => fail!(EnqueueResponse, error),
        }
    }

    async fn get_job(
        &self,
        request: Request<GetJobRequest>,
    ) -> Result<Response<GetJobResponse>, Status> {
        let r = request.into_inner();
        if !self.0.receive("GetJob", &r.auth_token, &r).await {
            return fail!(GetJobResponse, BAD_TOKEN);
        }
        match self.0.lock().jobs.iter().find(|j| j.id == r.job_id) {
            Some(job) => ok!(GetJobResponse, job: Some(job.clone())),
            None => fail!(GetJobResponse, "job not found"),
        }
    }

    async fn update_job(
        &self,
        request: Request<UpdateJobRequest>,
    ) -> Result<Response<UpdateJobResponse>, Status> {
        let r = request.into_inner();
        let bytes = r.encoded_len();
        match self.store("UpdateJob", &r.auth_token, r.job, bytes).await? {
            Ok(_) => ok!(UpdateJobResponse),
            Err(error) => fail!(UpdateJobResponse, error),
        }
    }

    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        let r = request.into_inner();
        if !self.0.receive("ListJobs", &r.auth_token, &r).await {
            return fail!(ListJobsResponse, BAD_TOKEN);
        }
        let limit = r.limit.filter(|l| *l > 0).unwrap_or(100) as usize;
        let store = self.0.lock();
        let wanted = store
            .jobs
            .iter()
            .filter(|j| r.status.is_empty() || j.status == r.status);
        ok!(ListJobsResponse, jobs: wanted.take(limit).cloned().collect())
    }
}

pub(super) struct Schedules(pub(super) Shared);

impl Schedules {
    /// Pause, resume and delete (soft): set the state of a schedule.
    async fn set_state(
        &self,
        method: &'static str,
        token: &str,
        id: &str,
        bytes: usize,
        state: &str,
    ) -> Result<(), &'static str> {
        if !self.0.receive_bytes(method, token, bytes).await {
            return Err(BAD_TOKEN);
        }
        let mut store = self.0.lock();
        let schedule = store
            .schedules
            .iter_mut()
            .find(|s| s.id == id)
            .ok_or("schedule not found")?;
        schedule.state = state.to_owned();
        schedule.updated_at = rfc3339_in(0);
        Ok(())
    }
}

#[tonic::async_trait]
impl ScheduleService for Schedules {
    async fn create_schedule(
        &self,
        request: Request<CreateScheduleRequest>,
    ) -> Result<Response<CreateScheduleResponse>, Status> {
        let r = request.into_inner();
        if !self.0.receive("CreateSchedule", &r.auth_token, &r).await {
            return fail!(CreateScheduleResponse, BAD_TOKEN);
        }
        let mut store = self.0.lock();
        let active = store
            .schedules
            .iter()
            .find(|s| s.handler_name == r.handler_name && s.state == "active");
        if let Some(schedule) = active {
            return ok!(CreateScheduleResponse, schedule_id: schedule.id.clone());
        }
        let id = format!("SCH{:06}", store.next());
        store.schedules.push(ScheduledJob {
            id: id.clone(),
            handler_name: r.handler_name,
            payload: r.payload,
            interval_seconds: r.interval_seconds,
            next_run_at: rfc3339_in(r.interval_seconds.into()),
            state: "active".into(),
            metadata: serde_json::to_string(&r.metadata).unwrap_or_default(),
            created_at: rfc3339_in(0),
            updated_at: rfc3339_in(0),
            ..ScheduledJob::default()
        });
        ok!(CreateScheduleResponse, schedule_id: id)
    }

    async fn pause_schedule(
        &self,
        request: Request<PauseScheduleRequest>,
    ) -> Result<Response<PauseScheduleResponse>, Status> {
        let r = request.into_inner();
        match self
            .set_state(
                "PauseSchedule",
                &r.auth_token,
                &r.schedule_id,
                r.encoded_len(),
                "paused",
            )
            .await
        {
            Ok(()) => ok!(PauseScheduleResponse),
            Err(error) => fail!(PauseScheduleResponse, error),
        }
    }

    async fn resume_schedule(
        &self,
        request: Request<ResumeScheduleRequest>,
    ) -> Result<Response<ResumeScheduleResponse>, Status> {
        let r = request.into_inner();
        match self
            .set_state(
                "ResumeSchedule",
                &r.auth_token,
                &r.schedule_id,
                r.encoded_len(),
                "active",
            )
            .await
        {
            Ok(()) => ok!(ResumeScheduleResponse),
            Err(error) => fail!(ResumeScheduleResponse, error),
        }
    }

    async fn delete_schedule(
        &self,
        request: Request<DeleteScheduleRequest>,
    ) -> Result<Response<DeleteScheduleResponse>, Status> {
        let r = request.into_inner();
        match self
            .set_state(
                "DeleteSchedule",
                &r.auth_token,
                &r.schedule_id,
                r.encoded_len(),
                "deleted",
            )
            .await
        {
            Ok(()) => ok!(DeleteScheduleResponse),
            Err(error) => fail!(DeleteScheduleResponse, error),
        }
    }

    async fn get_schedule(
        &self,
        request: Request<GetScheduleRequest>,
    ) -> Result<Response<GetScheduleResponse>, Status> {
        let r = request.into_inner();
        if !self.0.receive("GetSchedule", &r.auth_token, &r).await {
            return fail!(GetScheduleResponse, BAD_TOKEN);
        }
        match self
            .0
            .lock()
            .schedules
            .iter()
            .find(|s| s.id == r.schedule_id)
        {
            Some(schedule) => ok!(GetScheduleResponse, job: Some(schedule.clone())),
            None => fail!(GetScheduleResponse, "schedule not found"),
        }
    }
}

pub(super) struct Fetch(pub(super) Shared);

#[tonic::async_trait]
impl FetchService for Fetch {
    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        let r = request.into_inner();
        if !self.0.receive("Fetch", &r.auth_token, &r).await {
            return fail!(FetchResponse, BAD_TOKEN);
        }
        let mut store = self.0.lock();
        let attests = !r.subjects.is_empty() && !r.predicate.is_empty();
        // The host's cache: the newest attestation with that predicate and any of the subjects,
        // when it was made for the same URL.
        if attests && !r.fresh {
            let filter = AttestationFilter {
                subjects: r.subjects.clone(),
                predicates: vec![r.predicate.clone()],
                limit: Some(1),
                ..AttestationFilter::default()
            };
            let newest = store.select(&filter).into_iter().next();
            if let Some(hit) = newest.filter(|a| field(a, "url") == Some(&r.url)) {
                let body = field(&hit, "response").cloned().unwrap_or_default();
                return ok!(FetchResponse, body: body, status_code: 200, attestation_id: hit.id);
            }
        }
        let canned = store.fetch_replies.get(&r.url).cloned();
        let (status_code, body) =
            canned.unwrap_or_else(|| (200, format!("fake body of {}", r.url)));
        let mut attestation_id = String::new();
        if attests {
            let mut predicates = vec!["http:get".to_owned()];
            if r.predicate != "http:get" {
                predicates.push(r.predicate.clone());
            }
            let mut attributes = Struct::default();
            attributes.fields.insert("url".into(), text(&r.url));
            attributes.fields.insert("response".into(), text(&body));
            let status = Value {
                kind: Some(Kind::NumberValue(status_code.into())),
            };
            attributes.fields.insert("status_code".into(), status);
            let context = if r.context.is_empty() {
                r.url
            } else {
                r.context
            };
            let source = if r.source.is_empty() {
                "fetch-service".into()
            } else {
                r.source
            };
            attestation_id = store
                .generate(AttestationCommand {
                    subjects: r.subjects,
                    predicates,
                    contexts: vec![context],
                    attributes: Some(attributes),
                    source,
                    ..AttestationCommand::default()
                })
                .id;
        }
        ok!(FetchResponse, body: body, status_code: status_code, attestation_id: attestation_id)
    }
}

/// A string attribute of an attestation.
fn field<'a>(attestation: &'a Attestation, key: &str) -> Option<&'a String> {
    match attestation
        .attributes
        .as_ref()?
        .fields
        .get(key)?
        .kind
        .as_ref()?
    {
        Kind::StringValue(value) => Some(value),
        _ => None,
    }
}
