//! `ScheduleService`: the runtime schedule API (protocol §2.4, §2.6).

use std::collections::HashMap;

use tonic::transport::Channel;

use super::{check, request, within, HostError, HostLink, Service, MAX_REPLY_BYTES};
use crate::proto::schedule_service_client::ScheduleServiceClient;
use crate::proto::{
    CreateScheduleRequest, DeleteScheduleRequest, GetScheduleRequest, PauseScheduleRequest,
    ResumeScheduleRequest, ScheduledJob,
};

const CREATE: &str = "CreateSchedule";
const PAUSE: &str = "PauseSchedule";
const RESUME: &str = "ResumeSchedule";
const DELETE: &str = "DeleteSchedule";
const GET: &str = "GetSchedule";

impl HostLink {
    fn schedule_client(
        &self,
        call: &'static str,
    ) -> Result<ScheduleServiceClient<Channel>, HostError> {
        let channel = self.channel(Service::Schedule, call)?;
        Ok(ScheduleServiceClient::new(channel).max_decoding_message_size(MAX_REPLY_BYTES))
    }

    /// Creates a schedule running `handler_name` (stored verbatim: `<plugin>/<raw>` to reach a
    /// plugin handler) every `interval_seconds`. The host is idempotent per name among active
    /// schedules only: an active one's id comes back unchanged (interval and payload too),
    /// while a paused one does not count. Returns the schedule id.
    pub async fn create_schedule(
        &self,
        handler_name: &str,
        interval_seconds: i32,
        payload: Vec<u8>,
        metadata: HashMap<String, String>,
    ) -> Result<String, HostError> {
        if handler_name.is_empty() || interval_seconds <= 0 {
            return Err(HostError::Invalid {
                call: CREATE,
                reason: format!(
                    "a schedule needs a handler name and a positive interval \
                     (got {handler_name:?} every {interval_seconds} s)"
                ),
            });
        }
        let mut client = self.schedule_client(CREATE)?;
        let message = CreateScheduleRequest {
            auth_token: self.token(),
            handler_name: handler_name.to_owned(),
            interval_seconds,
            payload,
            metadata,
        };
        let pending = client.create_schedule(request(CREATE, message, Some(self.timeout))?);
        let reply = within(CREATE, self.timeout, pending).await?.into_inner();
        check(CREATE, reply.success, &reply.error)?;
        if reply.schedule_id.is_empty() {
            return Err(HostError::Incomplete {
                call: CREATE,
                missing: "schedule id",
            });
        }
        Ok(reply.schedule_id)
    }

    pub async fn pause_schedule(&self, schedule_id: &str) -> Result<(), HostError> {
        let mut client = self.schedule_client(PAUSE)?;
        let message = PauseScheduleRequest {
            auth_token: self.token(),
            schedule_id: schedule_id.to_owned(),
        };
        let pending = client.pause_schedule(request(PAUSE, message, Some(self.timeout))?);
        let reply = within(PAUSE, self.timeout, pending).await?.into_inner();
        check(PAUSE, reply.success, &reply.error)
    }

    pub async fn resume_schedule(&self, schedule_id: &str) -> Result<(), HostError> {
        let mut client = self.schedule_client(RESUME)?;
        let message = ResumeScheduleRequest {
            auth_token: self.token(),
            schedule_id: schedule_id.to_owned(),
        };
        let pending = client.resume_schedule(request(RESUME, message, Some(self.timeout))?);
        let reply = within(RESUME, self.timeout, pending).await?.into_inner();
        check(RESUME, reply.success, &reply.error)
    }

    /// Deletes a schedule (the host soft-deletes: its state becomes `deleted`).
    pub async fn delete_schedule(&self, schedule_id: &str) -> Result<(), HostError> {
        let mut client = self.schedule_client(DELETE)?;
        let message = DeleteScheduleRequest {
            auth_token: self.token(),
            schedule_id: schedule_id.to_owned(),
        };
        let pending = client.delete_schedule(request(DELETE, message, Some(self.timeout))?);
        let reply = within(DELETE, self.timeout, pending).await?.into_inner();
        check(DELETE, reply.success, &reply.error)
    }

    pub async fn get_schedule(&self, schedule_id: &str) -> Result<ScheduledJob, HostError> {
        let mut client = self.schedule_client(GET)?;
        let message = GetScheduleRequest {
            auth_token: self.token(),
            schedule_id: schedule_id.to_owned(),
        };
        let pending = client.get_schedule(request(GET, message, Some(self.timeout))?);
        let reply = within(GET, self.timeout, pending).await?.into_inner();
        check(GET, reply.success, &reply.error)?;
        reply.job.ok_or(HostError::Incomplete {
            call: GET,
            missing: "schedule",
        })
    }
}
