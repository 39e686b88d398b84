//! `ATSStoreService`: writing and reading attestations (protocol §2.2, §2.6).

use prost::Message;
use tonic::transport::Channel;

use super::MAX_REQUEST_BYTES;
use super::{check, request, within, HostError, HostLink, Service, MAX_REPLY_BYTES};
use crate::proto::ats_store_service_client::AtsStoreServiceClient;
use crate::proto::{
    Attestation, AttestationCommand, AttestationFilter, BatchGenerateAttestationRequest,
    GenerateAttestationRequest, GetAttestationsRequest,
};

const GENERATE: &str = "GenerateAndCreateAttestation";
const BATCH: &str = "BatchGenerateAndCreateAttestations";
const QUERY: &str = "GetAttestations";
const STREAM: &str = "GetAttestationsStream";

/// Target size of one batch request: well under the host's 4 MiB limit.
const BATCH_BYTES: usize = 3 * 1024 * 1024;

impl HostLink {
    fn ats_client(&self, call: &'static str) -> Result<AtsStoreServiceClient<Channel>, HostError> {
        let channel = self.channel(Service::AtsStore, call)?;
        Ok(AtsStoreServiceClient::new(channel).max_decoding_message_size(MAX_REPLY_BYTES))
    }

    /// Writes one attestation; the host generates its id, overwrites its actors with that id
    /// and fills defaults (§2.6). Returns the stored attestation.
    pub async fn attest(&self, command: AttestationCommand) -> Result<Attestation, HostError> {
        let mut client = self.ats_client(GENERATE)?;
        let message = GenerateAttestationRequest {
            auth_token: self.token(),
            command: Some(command),
        };
        let pending =
            client.generate_and_create_attestation(request(GENERATE, message, Some(self.timeout))?);
        let reply = within(GENERATE, self.timeout, pending).await?.into_inner();
        check(GENERATE, reply.success, &reply.error)?;
        reply.attestation.ok_or(HostError::Incomplete {
            call: GENERATE,
            missing: "attestation",
        })
    }

    /// Writes many attestations, in as many requests as it takes to keep each one under
    /// [`BATCH_BYTES`]. Returns how many the host wrote. When a later batch fails, the error
    /// is [`HostError::Partial`] with the count already written.
    pub async fn attest_many(&self, commands: Vec<AttestationCommand>) -> Result<i32, HostError> {
        if commands.is_empty() {
            return Ok(0);
        }
        let mut client = self.ats_client(BATCH)?;
        let batches = split_batches(BATCH, self.endpoints.auth_token.len(), commands)?;
        let mut created = 0;
        for commands in batches {
            let message = BatchGenerateAttestationRequest {
                auth_token: self.token(),
                commands,
            };
            let pending = client.batch_generate_and_create_attestations(request(
                BATCH,
                message,
                Some(self.timeout),
            )?);
            let result = within(BATCH, self.timeout, pending)
                .await
                .map(tonic::Response::into_inner)
                .and_then(|reply| {
                    created += reply.created;
                    check(BATCH, reply.success, &reply.error)
                });
            if let Err(err) = result {
                return Err(if created > 0 {
                    HostError::Partial {
                        created,
                        source: Box::new(err),
                    }
                } else {
                    err
                });
            }
        }
        Ok(created)
    }

    /// Reads the attestations matching `filter`, newest first, in one reply (up to
    /// [`MAX_REPLY_BYTES`]). For results of unknown size use [`HostLink::stream_all`].
    pub async fn query(&self, filter: AttestationFilter) -> Result<Vec<Attestation>, HostError> {
        let mut client = self.ats_client(QUERY)?;
        let message = GetAttestationsRequest {
            auth_token: self.token(),
            filter: Some(filter),
        };
        let pending = client.get_attestations(request(QUERY, message, Some(self.timeout))?);
        let reply = within(QUERY, self.timeout, pending).await?.into_inner();
        check(QUERY, reply.success, &reply.error)?;
        Ok(reply.attestations)
    }

    /// Reads every attestation matching `filter` through the stream RPC, with no cap on their
    /// number, newest first. The deadline applies to opening the stream and to each wait for
    /// the next message, so a long result is not cut short while a stalled host still is.
    pub async fn stream_all(
        &self,
        filter: AttestationFilter,
    ) -> Result<Vec<Attestation>, HostError> {
        let mut client = self.ats_client(STREAM)?;
        let message = GetAttestationsRequest {
            auth_token: self.token(),
            filter: Some(filter),
        };
        let pending = client.get_attestations_stream(request(STREAM, message, None)?);
        let mut stream = within(STREAM, self.timeout, pending).await?.into_inner();
        let mut attestations = Vec::new();
        while let Some(attestation) = within(STREAM, self.timeout, stream.message()).await? {
            attestations.push(attestation);
        }
        tracing::debug!(count = attestations.len(), "read attestation stream");
        Ok(attestations)
    }
}

/// Groups commands into batches whose requests stay under [`BATCH_BYTES`] (estimated from
/// prost's encoded lengths, exact up to the token). A command too large to send even alone is
/// an error; one over the batch target but under the host's limit goes alone.
fn split_batches(
    call: &'static str,
    token_len: usize,
    commands: Vec<AttestationCommand>,
) -> Result<Vec<Vec<AttestationCommand>>, HostError> {
    let base = field_len(token_len);
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    let mut size = base;
    for command in commands {
        let len = field_len(command.encoded_len());
        if base + len > MAX_REQUEST_BYTES {
            return Err(HostError::TooLarge {
                call,
                bytes: base + len,
                limit: MAX_REQUEST_BYTES,
            });
        }
        if !batch.is_empty() && size + len > BATCH_BYTES {
            batches.push(std::mem::take(&mut batch));
            size = base;
        }
        size += len;
        batch.push(command);
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    Ok(batches)
}

/// Bytes a length-delimited field of `len` bytes takes: one tag byte, the length, the body.
fn field_len(len: usize) -> usize {
    1 + prost::length_delimiter_len(len) + len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(padding: usize) -> AttestationCommand {
        AttestationCommand {
            subjects: vec!["s".repeat(padding)],
            ..AttestationCommand::default()
        }
    }

    fn request_len(token_len: usize, commands: Vec<AttestationCommand>) -> usize {
        BatchGenerateAttestationRequest {
            auth_token: "t".repeat(token_len),
            commands,
        }
        .encoded_len()
    }

    #[test]
    fn batches_stay_under_the_target_and_keep_every_command() {
        let commands: Vec<_> = (0..2000).map(|_| command(5000)).collect();
        let batches = split_batches(BATCH, 64, commands).unwrap();
        assert!(batches.len() >= 4, "{} batches", batches.len());
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 2000);
        for batch in batches {
            assert!(request_len(64, batch) <= BATCH_BYTES);
        }
    }

    #[test]
    fn the_estimate_is_exact() {
        let commands: Vec<_> = (0..10).map(|i| command(i * 100)).collect();
        let estimate = field_len(64)
            + commands
                .iter()
                .map(|c| field_len(c.encoded_len()))
                .sum::<usize>();
        assert_eq!(estimate, request_len(64, commands));
    }

    #[test]
    fn a_large_command_goes_alone_and_a_huge_one_is_refused() {
        let batches = split_batches(
            BATCH,
            64,
            vec![command(10), command(BATCH_BYTES), command(10)],
        )
        .unwrap();
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 1]);
        let err = split_batches(BATCH, 64, vec![command(MAX_REQUEST_BYTES)]).unwrap_err();
        assert!(matches!(err, HostError::TooLarge { .. }), "{err}");
    }
}
