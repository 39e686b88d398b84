//! `--http ADDR`: the plugin's routes over plain HTTP/1.1, and at `/` a page hosting the glyph
//! with a stand-in for the host's `ui`, so the glyph and the routes work without a QNTX host.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request as HttpRequest, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::{route, Door, Reply, Request};
use crate::service::Plugin;

/// Request bodies above this are refused (413): the host accepts 100 MB, a browser needs less.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Serves until the plugin shuts down. Each connection is its own task.
pub async fn serve(listener: TcpListener, plugin: Arc<Plugin>) {
    if let Ok(address) = listener.local_addr() {
        if !address.ip().is_loopback() {
            tracing::warn!(%address, "the --http page runs any code it is sent, without authentication, and listens beyond this machine");
        }
    }
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = plugin.shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors and the like: the next accept may succeed.
                tracing::warn!(%error, "cannot accept an HTTP connection");
                tokio::task::yield_now().await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, peer, Arc::clone(&plugin)));
    }
}

async fn connection(stream: tokio::net::TcpStream, peer: SocketAddr, plugin: Arc<Plugin>) {
    let shutdown = plugin.shutdown.clone();
    let service = hyper::service::service_fn(move |request| {
        let plugin = Arc::clone(&plugin);
        async move { Ok::<_, Infallible>(answer(&plugin, request).await) }
    });
    let serving =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = serving => {
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "HTTP connection ended");
            }
        }
        () = shutdown.cancelled() => {}
    }
}

async fn answer(plugin: &Plugin, request: HttpRequest<Incoming>) -> Response<Full<Bytes>> {
    let method = request.method().as_str().to_owned();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let reply = match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(body) => {
            let body = body.to_bytes();
            route(
                plugin,
                Door::Standalone,
                Request {
                    method: &method,
                    path: &path,
                    body: &body,
                    deadline: None,
                },
            )
            .await
        }
        Err(error) => Reply::error(
            413,
            format!("the request body cannot be read (at most {MAX_BODY_BYTES} bytes): {error}"),
        ),
    };
    tracing::debug!(%method, %path, status = reply.status, "http");
    into_response(reply, method == "HEAD")
}

fn into_response(reply: Reply, head: bool) -> Response<Full<Bytes>> {
    let body = if head { Vec::new() } else { reply.body };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    for (name, value) in reply.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}
