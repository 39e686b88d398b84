//! Generated types and services of the host's `protocol` package.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("protocol");

/// Encoded descriptors of every file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("protocol_descriptor");

/// `Debug` for the messages that carry the host's token (build.rs skips theirs): every field
/// but the token. The pattern is exhaustive, so a field added to the .proto fails to compile
/// here until it is listed.
macro_rules! debug_without_token {
    ($($message:ident { $($field:ident),* $(,)? })*) => {$(
        impl std::fmt::Debug for $message {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let $message { auth_token, $($field),* } = self;
                f.debug_struct(stringify!($message))
                    .field("auth_token", &crate::host::AuthToken::from(auth_token.as_str()))
                    $(.field(stringify!($field), $field))*
                    .finish()
            }
        }
    )*};
}

debug_without_token! {
    CreateAttestationRequest { attestation }
    AttestationExistsRequest { id }
    GenerateAttestationRequest { command }
    BatchGenerateAttestationRequest { commands }
    GetAttestationsRequest { filter }
    FetchRequest { url, subjects, predicate, context, fresh, actor, source }
    EnqueueRequest { job }
    GetJobRequest { job_id }
    UpdateJobRequest { job }
    ListJobsRequest { status, limit }
    CreateScheduleRequest { handler_name, interval_seconds, payload, metadata }
    PauseScheduleRequest { schedule_id }
    ResumeScheduleRequest { schedule_id }
    DeleteScheduleRequest { schedule_id }
    GetScheduleRequest { schedule_id }
}

/// Config values may be secrets too (the host resolves `env:` and `ssm://` values before
/// sending): only their keys are shown.
impl std::fmt::Debug for InitializeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let InitializeRequest {
            ats_store_endpoint,
            queue_endpoint,
            auth_token,
            config,
            schedule_endpoint,
            file_service_endpoint,
            llm_endpoint,
            embedding_endpoint,
            vector_search_endpoint,
            ground_endpoint,
            search_endpoint,
            fetch_endpoint,
        } = self;
        let mut config_keys: Vec<&String> = config.keys().collect();
        config_keys.sort();
        f.debug_struct("InitializeRequest")
            .field("ats_store_endpoint", ats_store_endpoint)
            .field("queue_endpoint", queue_endpoint)
            .field(
                "auth_token",
                &crate::host::AuthToken::from(auth_token.as_str()),
            )
            .field("config_keys", &config_keys)
            .field("schedule_endpoint", schedule_endpoint)
            .field("file_service_endpoint", file_service_endpoint)
            .field("llm_endpoint", llm_endpoint)
            .field("embedding_endpoint", embedding_endpoint)
            .field("vector_search_endpoint", vector_search_endpoint)
            .field("ground_endpoint", ground_endpoint)
            .field("search_endpoint", search_endpoint)
            .field("fetch_endpoint", fetch_endpoint)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "feedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedface";

    #[test]
    fn messages_that_carry_the_token_never_print_it() {
        let shown = [
            format!(
                "{:?}",
                InitializeRequest {
                    auth_token: SECRET.into(),
                    config: [("api_key".to_owned(), SECRET.to_owned())].into(),
                    ats_store_endpoint: "127.0.0.1:1".into(),
                    ..Default::default()
                }
            ),
            format!(
                "{:#?}",
                GetAttestationsRequest {
                    auth_token: SECRET.into(),
                    filter: Some(AttestationFilter::default()),
                }
            ),
            format!(
                "{:?}",
                CreateScheduleRequest {
                    auth_token: SECRET.into(),
                    handler_name: "python.tick".into(),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                FetchRequest {
                    auth_token: SECRET.into(),
                    url: "https://example.org".into(),
                    ..Default::default()
                }
            ),
        ];
        for text in &shown {
            assert!(!text.contains(SECRET), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
        // The rest is still there to debug with.
        assert!(shown[0].contains("127.0.0.1:1") && shown[0].contains("api_key"));
        assert!(shown[1].contains("AttestationFilter"));
        assert!(shown[2].contains("python.tick"));
        assert!(shown[3].contains("https://example.org"));
    }
}
