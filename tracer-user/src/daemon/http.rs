//! The daemon's HTTP endpoints, on a thread of their own: a slow or stalled
//! client holds a connection here, never the session's loop. Metrics are
//! encoded here from the shared registry; a profile, report or flame graph
//! asks the session for a window of `seconds` that opens now, waits for it
//! to be cut, and encodes it here.

use std::{collections::HashMap, net::TcpListener, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use axum::{
    Router,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::{encoding::text::encode, registry::Registry};
use tokio::sync::{mpsc, oneshot};

use crate::output::{Results, files::window_ns, flame, pprof};

/// The longest window a client may ask for.
const MAX_SECONDS: u64 = 3600;
/// pprof's default when `seconds` is not given.
const DEFAULT_SECONDS: u64 = 30;

/// A window the HTTP side asks the session for.
pub struct Ask {
    pub seconds: u64,
    pub reply: oneshot::Sender<Box<Results>>,
}

#[derive(Clone)]
struct Shared {
    registry: Arc<Registry>,
    asks: mpsc::Sender<Ask>,
}

/// Serves until `stop` fires.
pub fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    asks: mpsc::Sender<Ask>,
    stop: oneshot::Receiver<()>,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)
            .context("serving on the listening socket")?;
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/debug/pprof/profile", get(cpu_profile))
            .route("/debug/pprof/offcpu", get(offcpu_profile))
            .route("/debug/tracer/report", get(report))
            .route("/debug/tracer/flame", get(flame_graph))
            .with_state(Shared { registry, asks });
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop.await;
            })
            .await
            .context("serving HTTP")
    })
}

/// A one-line reason, with its status.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

fn bad(reason: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, reason.into())
}

async fn metrics(State(s): State<Shared>) -> Response {
    let mut text = String::new();
    if encode(&mut text, &s.registry).is_err() {
        return Refusal(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed".into())
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `seconds` from the query: 1 to [`MAX_SECONDS`], [`DEFAULT_SECONDS`] if absent.
fn seconds(q: &HashMap<String, String>) -> Result<u64, Refusal> {
    let Some(v) = q.get("seconds") else {
        return Ok(DEFAULT_SECONDS);
    };
    match v.parse::<u64>() {
        Ok(n) if (1..=MAX_SECONDS).contains(&n) => Ok(n),
        _ => Err(bad(format!(
            "seconds must be a whole number from 1 to {MAX_SECONDS}, not {v:?}"
        ))),
    }
}

/// Asks the session for a window of `seconds` and waits for it.
async fn window(s: &Shared, seconds: u64) -> Result<Box<Results>, Refusal> {
    let (reply, answer) = oneshot::channel();
    s.asks.try_send(Ask { seconds, reply }).map_err(|_| {
        Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many windows open at once; try again later".into(),
        )
    })?;
    let wait = Duration::from_secs(seconds + 30);
    match tokio::time::timeout(wait, answer).await {
        Ok(Ok(results)) => Ok(results),
        _ => Err(Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "the tracer stopped before the window ended".into(),
        )),
    }
}

fn gzip_pprof(bytes: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"profile.pb.gz\"",
            ),
        ],
        bytes,
    )
        .into_response()
}

async fn cpu_profile(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Refusal> {
    let secs = seconds(&q)?;
    let r = window(&s, secs).await?;
    let oncpu = r
        .oncpu
        .as_ref()
        .ok_or_else(|| bad("on-CPU sampling is off (serve was started with --freq 0)"))?;
    let (start, duration) = window_ns(&r);
    let kind = pprof::Kind::Cpu {
        hz: r.report.sampling.stacks.freq_hz,
    };
    let bytes = pprof::encode(oncpu, kind, start, duration)
        .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    Ok(gzip_pprof(bytes))
}

async fn offcpu_profile(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Refusal> {
    let secs = seconds(&q)?;
    let r = window(&s, secs).await?;
    let offcpu = r
        .offcpu
        .as_ref()
        .ok_or_else(|| bad("off-CPU tracing is off (serve was started with --no-off-cpu)"))?;
    let (start, duration) = window_ns(&r);
    let bytes = pprof::encode(offcpu, pprof::Kind::OffCpu, start, duration)
        .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    Ok(gzip_pprof(bytes))
}

async fn report(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Refusal> {
    let secs = seconds(&q)?;
    let r = window(&s, secs).await?;
    let json = serde_json::to_string_pretty(&r.report)
        .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

async fn flame_graph(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Refusal> {
    let secs = seconds(&q)?;
    let kind = q.get("kind").map_or("chains", String::as_str);
    if !["chains", "oncpu", "offcpu"].contains(&kind) {
        return Err(bad(format!(
            "kind must be chains, oncpu or offcpu, not {kind:?}"
        )));
    }
    let format = q.get("format").map_or("svg", String::as_str);
    if !["svg", "folded"].contains(&format) {
        return Err(bad(format!("format must be svg or folded, not {format:?}")));
    }
    let r = window(&s, secs).await?;
    let (folded, title, unit) = match kind {
        "oncpu" => (r.oncpu.as_ref(), "on-CPU samples", "samples"),
        "offcpu" => (r.offcpu.as_ref(), "off-CPU time", "us"),
        _ => (Some(&r.chains), "request time by stage", "us"),
    };
    let folded = folded.ok_or_else(|| bad(format!("{kind} is off in this daemon")))?;
    if format == "folded" {
        return Ok(([(header::CONTENT_TYPE, "text/plain")], folded.render()).into_response());
    }
    let title = format!("{title}, {secs}s");
    let svg = flame::svg(folded, &title, unit)
        .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}
