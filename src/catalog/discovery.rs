//! From handler attestations to the newest version of each handler.
//!
//! Newest wins per subject, whatever it says: a newest version without code means no handler
//! (never an older version), and a newest `handler:faulted` blocks the handler until it is
//! saved again.

use std::collections::BTreeMap;

use crate::proto::Attestation;

pub const HANDLER: &str = "handler";
pub const FAULTED: &str = "handler:faulted";

#[derive(Debug, Clone, PartialEq)]
pub enum Version {
    Code {
        attestation_id: String,
        code: String,
    },
    Faulted {
        reason: String,
    },
    NoCode,
}

fn has_predicate(attestation: &Attestation, predicate: &str) -> bool {
    attestation.predicates.iter().any(|p| p == predicate)
}

fn string_attribute(attestation: &Attestation, name: &str) -> Option<String> {
    use prost_types::value::Kind;
    match attestation
        .attributes
        .as_ref()?
        .fields
        .get(name)?
        .kind
        .as_ref()?
    {
        Kind::StringValue(text) => Some(text.clone()),
        _ => None,
    }
}

/// The version of one attestation.
pub fn version_of(attestation: &Attestation) -> Version {
    if has_predicate(attestation, FAULTED) {
        let reason =
            string_attribute(attestation, "reason").unwrap_or_else(|| "marked faulted".into());
        return Version::Faulted { reason };
    }
    match string_attribute(attestation, "code") {
        Some(code) if !code.trim().is_empty() => Version::Code {
            attestation_id: attestation.id.clone(),
            code,
        },
        _ => Version::NoCode,
    }
}

/// The newest version per handler key (the first subject). Sorting here, rather than
/// trusting the host's order, keeps "newest wins" true for any reader of the store.
pub fn newest_versions(mut attestations: Vec<Attestation>) -> BTreeMap<String, Version> {
    attestations.sort_by_key(|a| std::cmp::Reverse((a.created_at, a.timestamp)));
    let mut newest = BTreeMap::new();
    for attestation in &attestations {
        let Some(key) = attestation.subjects.first().filter(|k| !k.is_empty()) else {
            continue;
        };
        newest
            .entry(key.clone())
            .or_insert_with(|| version_of(attestation));
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::{value::Kind, Struct, Value};

    fn attestation(
        id: &str,
        key: &str,
        predicate: &str,
        created_at: i64,
        attributes: &[(&str, &str)],
    ) -> Attestation {
        let fields = attributes
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Value {
                        kind: Some(Kind::StringValue(v.to_string())),
                    },
                )
            })
            .collect();
        Attestation {
            id: id.into(),
            subjects: vec![key.into()],
            predicates: vec![predicate.into()],
            created_at,
            attributes: Some(Struct { fields }),
            ..Default::default()
        }
    }

    #[test]
    fn newest_wins_whatever_the_order() {
        let versions = newest_versions(vec![
            attestation("A1", "cleanup", HANDLER, 1, &[("code", "old")]),
            attestation("A2", "cleanup", HANDLER, 3, &[("code", "new")]),
            attestation("A3", "cleanup", HANDLER, 2, &[("code", "middle")]),
        ]);
        assert_eq!(
            versions["cleanup"],
            Version::Code {
                attestation_id: "A2".into(),
                code: "new".into()
            }
        );
    }

    #[test]
    fn newest_without_code_means_no_handler_and_faults_block() {
        let versions = newest_versions(vec![
            attestation("A1", "gone", HANDLER, 1, &[("code", "print(1)")]),
            attestation("A2", "gone", HANDLER, 2, &[]),
            attestation("A3", "broken", HANDLER, 1, &[("code", "x")]),
            attestation("A4", "broken", FAULTED, 2, &[("reason", "SyntaxError")]),
            attestation("A5", "fixed", FAULTED, 1, &[("reason", "old")]),
            attestation("A6", "fixed", HANDLER, 2, &[("code", "ok")]),
        ]);
        assert_eq!(versions["gone"], Version::NoCode);
        assert_eq!(
            versions["broken"],
            Version::Faulted {
                reason: "SyntaxError".into()
            }
        );
        assert_eq!(
            versions["fixed"],
            Version::Code {
                attestation_id: "A6".into(),
                code: "ok".into()
            }
        );
    }
}
