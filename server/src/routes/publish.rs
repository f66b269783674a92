//! `POST /publish`, and `/refresh`.

use std::sync::Arc;
use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::json;
use switch_core::job::Job;
use switch_core::message::{check_author, new_message_id, PublishRequest};
use switch_core::queue::Enqueued;
use tracing::Instrument;

use super::State;
use crate::error::ApiError;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/publish", web::post().to(publish))
        .route("/refresh", web::post().to(refresh))
        .route("/refresh", web::get().to(refresh));
}

/// Reads the body up to `limit` bytes; more is a 413, a body that does not
/// arrive within [`crate::startup::BODY_READ_TIMEOUT`] a 408.
async fn read_limited(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let too_large =
        || ApiError::PayloadTooLarge(format!("the request body is larger than {limit} bytes"));
    if let Some(len) = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(too_large());
        }
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            if crate::startup::is_body_timeout(&e) {
                ApiError::BodyTimeout(e.to_string())
            } else {
                ApiError::invalid(format!("could not read the body: {e}"))
            }
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn request_id(req: &HttpRequest) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string())
}

async fn publish(
    req: HttpRequest,
    payload: web::Payload,
    state: State,
) -> Result<HttpResponse, ApiError> {
    let request_id = request_id(&req);
    // Debug, as the per-publish line: at tens of thousands of publishes a second,
    // a span and a line each cost more than matching and enqueueing.
    let span = tracing::debug_span!("publish", request_id = %request_id, topic = tracing::field::Empty, message_id = tracing::field::Empty);
    let result = publish_inner(&req, payload, &state, request_id)
        .instrument(span)
        .await;
    let label = match &result {
        Ok(_) => "accepted",
        Err(e) => e.code(),
    };
    state.metrics.publishes.with_label_values(&[label]).inc();
    result
}

async fn publish_inner(
    req: &HttpRequest,
    payload: web::Payload,
    state: &State,
    request_id: String,
) -> Result<HttpResponse, ApiError> {
    let principal = state.auth.authenticate(req)?;
    principal.require_publish()?;
    if let Some(author) = &principal.author {
        check_author(author).map_err(|e| ApiError::invalid(e.0))?;
    }
    let body = read_limited(req, payload, state.settings.max_body_bytes).await?;
    let parsed = PublishRequest::from_json_bytes(&body).map_err(|e| ApiError::invalid(e.0))?;
    principal.require_topic(&parsed.topic)?;
    let idempotency_key = match req.headers().get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v
                .to_str()
                .map_err(|_| ApiError::invalid("Idempotency-Key must be text"))?
                .trim();
            if key.is_empty() || key.len() > 255 {
                return Err(ApiError::invalid(
                    "Idempotency-Key must be 1 to 255 characters",
                ));
            }
            Some(key.to_string())
        }
    };
    if !state.freshness.is_fresh() {
        // The pinger brings this back (after a reload) once the database answers.
        return Err(ApiError::Unavailable(
            "the database cannot be reached; try again shortly".into(),
        ));
    }
    let topic = parsed.topic.clone();
    tracing::Span::current().record("topic", topic.as_str());
    let message_id = new_message_id();
    tracing::Span::current().record("message_id", message_id.as_str());
    let message = parsed.into_message(
        message_id.clone(),
        principal.author.clone(),
        Some(request_id),
        chrono::Utc::now().timestamp_millis(),
    );
    let matched = state.cache.current().matching(&topic, &message);
    let message_json: Arc<str> =
        Arc::from(serde_json::to_string(&message).map_err(anyhow::Error::from)?);
    let jobs: Vec<Job> = matched
        .iter()
        .map(|id| Job::new(*id, 1, message_json.clone()))
        .collect();

    let idem = idempotency_key.map(|k| {
        let author = principal.author.clone().unwrap_or_default();
        (
            state.queue.keys.idempotency(&author, &k),
            format!("{message_id}|{}", jobs.len()),
        )
    });
    let started = Instant::now();
    let outcome = state
        .queue
        .enqueue(&jobs, idem.as_ref().map(|(k, r)| (k.as_str(), r.as_str())))
        .await?;
    state
        .metrics
        .enqueue_seconds
        .observe(started.elapsed().as_secs_f64());
    match outcome {
        Enqueued::New => {
            state.metrics.matches.inc_by(jobs.len() as u64);
            tracing::debug!(matched = jobs.len(), "published");
            Ok(HttpResponse::Accepted()
                .json(json!({"message_id": message_id, "matched": jobs.len()})))
        }
        Enqueued::Duplicate(record) if record_of(&record) == message_id => {
            // The record is this very publish's: its first send ran but the
            // reply was lost, and the connection layer sent it again.
            state.metrics.matches.inc_by(jobs.len() as u64);
            Ok(HttpResponse::Accepted()
                .json(json!({"message_id": message_id, "matched": jobs.len()})))
        }
        Enqueued::Duplicate(record) => {
            let (first_id, first_matched) =
                record.split_once('|').unwrap_or((record.as_str(), "0"));
            let first_matched: u64 = first_matched.parse().unwrap_or(0);
            tracing::info!(first_message_id = first_id, "duplicate publish ignored");
            Ok(HttpResponse::Ok()
                .json(json!({"message_id": first_id, "matched": first_matched, "duplicate": true})))
        }
    }
}

/// The message id an idempotency record (`<message id>|<matched>`) names.
fn record_of(record: &str) -> &str {
    record.split_once('|').map_or(record, |(id, _)| id)
}

async fn refresh(req: HttpRequest, state: State) -> Result<HttpResponse, ApiError> {
    let principal = state.auth.authenticate(&req)?;
    principal.require_publish()?;
    // Rows changed by SQL: the workers and other servers reload at once too.
    let n = state.subscribers_changed().await?;
    Ok(HttpResponse::Ok().json(json!({"subscribers": n})))
}
