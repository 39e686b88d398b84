//! The two other doors a trivial run can come through, measured like Execute and reported as
//! ratios to the Metadata floor of the same run: ExecuteJob (`<name>.script`) and HandleHTTP
//! (`POST /execute`).

use qntx_python_plugin::proto::{ExecuteJobRequest, HttpRequest};

use crate::{percentiles, row, sequential, Domain, Error, Row, Samples, TRIVIAL};

async fn job(domain: &mut Domain, payload: Vec<u8>) -> Result<(), Error> {
    let response = domain
        .execute_job(ExecuteJobRequest {
            job_id: "loadgen".into(),
            handler_name: "python.script".into(),
            payload,
            timeout_secs: None,
        })
        .await?
        .into_inner();
    if !response.success {
        return Err(format!("ExecuteJob failed: {}", response.error).into());
    }
    Ok(())
}

async fn http(domain: &mut Domain, body: Vec<u8>) -> Result<(), Error> {
    let response = domain
        .handle_http(HttpRequest {
            method: "POST".into(),
            path: "/execute".into(),
            body,
            ..Default::default()
        })
        .await?
        .into_inner();
    if response.status_code != 200 {
        return Err(format!("POST /execute answered {}", response.status_code).into());
    }
    Ok(())
}

/// `calls` sequential calls per door after `warm_up`; rows with p50, p99 and both as ratios
/// to `metadata` (p50, p99) measured in the same run.
pub async fn measure(
    domain: &Domain,
    calls: usize,
    warm_up: usize,
    metadata: (f64, f64),
) -> Result<Vec<Row>, Error> {
    let body = serde_json::to_vec(&serde_json::json!({ "content": TRIVIAL }))?;
    let mut rows = Vec::new();
    for (key, label) in [
        ("execute_job", "ExecuteJob"),
        ("http_execute", "HTTP /execute"),
    ] {
        let mut call = || {
            let mut domain = domain.clone();
            let body = body.clone();
            async move {
                match key {
                    "execute_job" => job(&mut domain, body).await,
                    _ => http(&mut domain, body).await,
                }
            }
        };
        let mut samples = Samples::default();
        sequential(warm_up, &mut Samples::default(), &mut call).await?;
        sequential(calls, &mut samples, &mut call).await?;
        let (p50, p99) = percentiles(samples.calls);
        rows.push(row(format!("{key}_p50_ms"), format!("{label} p50"), p50));
        rows.push(row(format!("{key}_p99_ms"), format!("{label} p99"), p99));
        rows.push(row(
            format!("{key}_over_metadata_p50_x"),
            format!("{label} p50 / Metadata p50"),
            p50 / metadata.0,
        ));
        rows.push(row(
            format!("{key}_over_metadata_p99_x"),
            format!("{label} p99 / Metadata p99"),
            p99 / metadata.1,
        ));
    }
    Ok(rows)
}
