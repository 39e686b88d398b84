//! `FetchService`: an HTTP GET performed, rate-limited, cached and attested by the host
//! (protocol §2.5, §2.6).

use super::{check, request, within, HostError, HostLink, Service, MAX_REPLY_BYTES};
use crate::proto::fetch_service_client::FetchServiceClient;
use crate::proto::{FetchRequest, FetchResponse};

const FETCH: &str = "Fetch";

impl HostLink {
    /// Asks the host to GET `request.url`; the other fields pass through as given, and
    /// `auth_token` is replaced by the link's token. With `subjects` and `predicate` set the
    /// host writes an attestation (or answers from the one it wrote before unless `fresh`).
    /// The deadline is [`HostLink::fetch_timeout`].
    pub async fn fetch(
        &self,
        mut request_fields: FetchRequest,
    ) -> Result<FetchResponse, HostError> {
        let channel = self.channel(Service::Fetch, FETCH)?;
        let mut client =
            FetchServiceClient::new(channel).max_decoding_message_size(MAX_REPLY_BYTES);
        request_fields.auth_token = self.token();
        let deadline = self.fetch_timeout;
        let pending = client.fetch(request(FETCH, request_fields, Some(deadline))?);
        let reply = within(FETCH, deadline, pending).await?.into_inner();
        check(FETCH, reply.success, &reply.error)?;
        Ok(reply)
    }
}
