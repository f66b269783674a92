//! `POST /publish`, and `/refresh`.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::json;
use switch_core::job::Job;
use switch_core::message::{check_author, check_ordering_key, new_message_id, PublishRequest};
use switch_core::otlp::{KeyValue, Span, SpanKind};
use switch_core::queue::{Enqueued, Publish};
use switch_core::trace::{SpanId, TraceId};
use tracing::Instrument;

use super::State;
use crate::error::ApiError;
use crate::outbox::{self, Spooled};
use crate::shapes::publish::{
    PublishAccepted, PublishAnswer, PublishBatch, PublishBatchAccepted, PublishBody, Refreshed,
};

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/publish", web::post().to(publish))
        .route("/publish/batch", web::post().to(publish_batch))
        .route("/refresh", web::post().to(refresh))
        .route("/refresh", web::get().to(refresh_legacy));
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

/// The trace of the publish request's `traceparent` header, when it sent
/// exactly one that is valid; otherwise the message starts a trace of its own.
fn incoming_trace(req: &HttpRequest) -> Option<TraceId> {
    let mut values = req.headers().get_all("traceparent");
    let only = values.next().filter(|_| values.next().is_none())?;
    TraceId::from_traceparent(only.to_str().ok()?)
}

/// Publish a message
///
/// Matches the message against every subscriber and queues one delivery per
/// match; answers once every job is durably in Redis. The body is read as
/// JSON whatever the `Content-Type` says. Needs the `publish` or `admin`
/// scope (or a token without scope), allowed to publish to the topic.
#[utoipa::path(
    post,
    path = "/publish",
    operation_id = "publish",
    tag = "publishing",
    params(
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]([\t -~]*[!-~])?$",
            description = "A second publish with the same key and credential author within 24 h creates nothing and answers `200` with the first message's id and `\"duplicate\": true`."),
        ("X-Request-Id" = Option<String>, Header, description = "Ties the logs of this publish and its deliveries together (used when 1 to 128 characters); generated otherwise."),
        ("traceparent" = Option<String>, Header, description = "W3C Trace Context. When valid, every delivery of the message joins this trace (its trace id, a new span id per attempt, in the delivery's own `traceparent`); otherwise the message starts a trace of its own."),
        ("Ordering-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]([\t -~]*[!-~])?$",
            description = "The ordering key of a legacy-form publish (the native form's `ordering_key` field wins): messages of one subscriber with the same key are delivered one at a time, in publish order."),
        ("dry_run" = Option<bool>, Query, description = "`true`: explain which subscribers would get the message and why; nothing is enqueued or logged (answers `200` with an `Explain`)."),
    ),
    request_body = PublishBody,
    security(("bearer" = ["publish"])),
    responses(
        (status = 200, description = "A duplicate of an earlier publish with the same `Idempotency-Key` and author (nothing was queued; `duplicate` is true), or with `dry_run=true` the explanation.", body = PublishAnswer),
        (status = 202, description = "Accepted: every job is durably queued.", body = PublishAccepted),
        (status = 400, response = crate::shapes::BadRequest),
        (status = 401, response = crate::shapes::Unauthorized),
        (status = 403, response = crate::shapes::Forbidden),
        (status = 408, response = crate::shapes::RequestTimeout),
        (status = 413, response = crate::shapes::PayloadTooLarge),
        (status = 500, response = crate::shapes::Internal),
        (status = 503, response = crate::shapes::Unavailable),
    )
)]
pub(crate) async fn publish(
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
    let received = SystemTime::now();
    let principal = state.auth.authenticate(req)?;
    principal.require_publish()?;
    if let Some(author) = &principal.author {
        check_author(author).map_err(|e| ApiError::invalid(e.0))?;
    }
    let body = read_limited(req, payload, state.settings.max_body_bytes).await?;
    let mut parsed = PublishRequest::from_json_bytes(&body).map_err(|e| ApiError::invalid(e.0))?;
    principal.require_topic(&parsed.topic)?;
    if let Some(v) = req.headers().get("ordering-key") {
        // The legacy form's way to name a key; the native field wins.
        let key = v
            .to_str()
            .map_err(|_| ApiError::invalid("Ordering-Key must be text"))?
            .trim();
        check_ordering_key(key).map_err(|e| ApiError::invalid(e.0))?;
        if parsed.ordering_key.is_none() {
            parsed.ordering_key = Some(key.to_string());
        }
    }
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
    if dry_run(req)? {
        return Ok(explain(state, parsed, principal.author.clone()));
    }
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
    let message = message.traced(incoming_trace(req));
    let matched = state.cache.current().matching(&topic, &message);
    let message_json: Arc<str> =
        Arc::from(serde_json::to_string(&message).map_err(anyhow::Error::from)?);
    let jobs = jobs_of(
        &matched,
        &message_id,
        message.ordering_key.as_deref(),
        &message_json,
    );
    let trace = message.trace();
    let accepted =
        |matched: usize| publish_span(state, trace, &message_id, topic.as_str(), received, matched);

    let idem = idempotency_key.map(|k| {
        let author = principal.author.clone().unwrap_or_default();
        (
            state.queue.keys.idempotency(&author, &k),
            format!("{message_id}|{}", jobs.len()),
        )
    });
    let started = Instant::now();
    // Spooled (with the reason, if Redis failed) or enqueued.
    let enqueued = if state.outbox.must_spool() {
        // Earlier publishes wait in the outbox: this one queues behind them.
        Err(None)
    } else {
        match state
            .queue
            .enqueue(
                Publish {
                    message_id: &message_id,
                    message_json: &message_json,
                    jobs: &jobs,
                },
                idem.as_ref().map(|(k, r)| (k.as_str(), r.as_str())),
            )
            .await
        {
            Ok(o) => Ok(o),
            Err(e) if outbox::unreachable(&e) => Err(Some(e)),
            Err(e) => return Err(e.into()),
        }
    };
    let outcome = match enqueued {
        Ok(outcome) => outcome,
        Err(cause) => {
            let spooled = Spooled {
                message_id: message_id.clone(),
                message_json: message_json.clone(),
                subscriber_ids: matched.to_vec(),
                idempotency: idem,
            }
            .with_cause(cause);
            state.outbox.spool(&state.pool, vec![spooled]).await?;
            accepted(jobs.len());
            return Ok(spooled_answer(state, &message_id, jobs.len()));
        }
    };
    state
        .metrics
        .enqueue_seconds
        .observe(started.elapsed().as_secs_f64());
    match outcome {
        Enqueued::New => {
            state.metrics.matches.inc_by(jobs.len() as u64);
            accepted(jobs.len());
            tracing::debug!(matched = jobs.len(), "published");
            Ok(HttpResponse::Accepted()
                .json(json!({"message_id": message_id, "matched": jobs.len()})))
        }
        Enqueued::Duplicate(record) if record_of(&record) == message_id => {
            // The record is this very publish's: its first send ran but the
            // reply was lost, and the connection layer sent it again.
            state.metrics.matches.inc_by(jobs.len() as u64);
            accepted(jobs.len());
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

/// `?dry_run=true`: explain instead of publishing.
fn dry_run(req: &HttpRequest) -> Result<bool, ApiError> {
    let value = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "dry_run")
        .map(|(_, v)| v.into_owned());
    match value.as_deref() {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(ApiError::invalid(format!(
            "`dry_run` must be true or false, not `{}`",
            other.escape_debug()
        ))),
    }
}

/// Which subscribers a message would reach, and why each does or does not:
/// nothing is enqueued or logged.
fn explain(state: &State, parsed: PublishRequest, author: Option<String>) -> HttpResponse {
    let topic = parsed.topic.clone();
    let message = parsed.into_message(
        String::new(),
        author,
        None,
        chrono::Utc::now().timestamp_millis(),
    );
    let explained = state.cache.current().explain(&topic, &message);
    let matched: Vec<i64> = explained
        .iter()
        .filter(|e| e.matched)
        .map(|e| e.id)
        .collect();
    let subscribers: Vec<serde_json::Value> = explained
        .iter()
        .map(|e| {
            let mut v = json!({"id": e.id, "matched": e.matched, "reason": e.reason});
            if !e.missing.is_empty() {
                v["missing"] = json!(e.missing);
            }
            v
        })
        .collect();
    HttpResponse::Ok().json(json!({"matched": matched, "subscribers": subscribers}))
}

/// Most messages in one batch.
const MAX_BATCH: usize = 1000;

/// `POST /publish/batch`: 1 to 1,000 messages, enqueued (and logged) all
/// together or not at all.
#[utoipa::path(
    post,
    path = "/publish/batch",
    operation_id = "publishBatch",
    tag = "publishing",
    summary = "Publish up to 1,000 messages, all or none",
    description = "All are enqueued together or none is. An invalid message makes it `400`, with `error.index` naming the first bad one.",
    params(
        ("traceparent" = Option<String>, Header, description = "W3C Trace Context. When valid, every delivery of every message of the batch joins this trace; otherwise each message starts a trace of its own."),
    ),
    request_body = PublishBatch,
    security(("bearer" = ["publish"])),
    responses(
        (status = 202, description = "Accepted: every job of every message is durably queued.", body = PublishBatchAccepted),
        (status = 400, response = crate::shapes::BadRequest),
        (status = 401, response = crate::shapes::Unauthorized),
        (status = 403, response = crate::shapes::Forbidden),
        (status = 408, response = crate::shapes::RequestTimeout),
        (status = 413, response = crate::shapes::PayloadTooLarge),
        (status = 500, response = crate::shapes::Internal),
        (status = 503, response = crate::shapes::Unavailable),
    )
)]
pub(crate) async fn publish_batch(
    req: HttpRequest,
    payload: web::Payload,
    state: State,
) -> Result<HttpResponse, ApiError> {
    let principal = state.auth.authenticate(&req)?;
    principal.require_publish()?;
    if let Some(author) = &principal.author {
        check_author(author).map_err(|e| ApiError::invalid(e.0))?;
    }
    let body = read_limited(&req, payload, state.settings.max_body_bytes).await?;
    let items = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(mut m)) => match m.remove("messages") {
            Some(serde_json::Value::Array(items)) => items,
            _ => return Err(ApiError::invalid("`messages` must be a list of messages")),
        },
        Ok(_) => return Err(ApiError::invalid("the body must be a JSON object")),
        Err(e) => {
            return Err(ApiError::invalid(format!(
                "the body is not valid JSON: {e}"
            )))
        }
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(ApiError::invalid(format!(
            "`messages` must hold 1 to {MAX_BATCH} messages, not {}",
            items.len()
        )));
    }
    let mut parsed = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let p = PublishRequest::from_value(item).map_err(|e| ApiError::invalid(e.0).at_item(i))?;
        principal
            .require_topic(&p.topic)
            .map_err(|e| e.at_item(i))?;
        parsed.push(p);
    }
    if !state.freshness.is_fresh() {
        return Err(ApiError::Unavailable(
            "the database cannot be reached; try again shortly".into(),
        ));
    }
    let request_id = request_id(&req);
    // The batch's messages join the caller's trace, or each starts its own.
    let trace = incoming_trace(&req);
    let received = SystemTime::now();
    let now = chrono::Utc::now().timestamp_millis();
    let index = state.cache.current();
    let mut prepared: Vec<(String, Arc<str>, Vec<Job>)> = Vec::with_capacity(parsed.len());
    // Each message's trace and topic, for its publish span.
    let mut traced: Vec<(TraceId, String)> = Vec::with_capacity(parsed.len());
    for p in parsed {
        let topic = p.topic.clone();
        let id = new_message_id();
        let message = p.into_message(
            id.clone(),
            principal.author.clone(),
            Some(request_id.clone()),
            now,
        );
        let message = message.traced(trace);
        let matched = index.matching(&topic, &message);
        let json: Arc<str> =
            Arc::from(serde_json::to_string(&message).map_err(anyhow::Error::from)?);
        let jobs = jobs_of(&matched, &id, message.ordering_key.as_deref(), &json);
        traced.push((message.trace(), topic.as_str().to_string()));
        prepared.push((id, json, jobs));
    }
    let publishes: Vec<Publish> = prepared
        .iter()
        .map(|(id, json, jobs)| Publish {
            message_id: id,
            message_json: json,
            jobs,
        })
        .collect();
    let spooled = if state.outbox.must_spool() {
        true
    } else {
        match state.queue.enqueue_batch(&publishes).await {
            Ok(()) => false,
            Err(e) if outbox::unreachable(&e) => {
                tracing::warn!(error = %e, "Redis unreachable");
                true
            }
            Err(e) => return Err(e.into()),
        }
    };
    if spooled {
        let items = prepared
            .iter()
            .map(|(id, json, jobs)| Spooled {
                message_id: id.clone(),
                message_json: json.clone(),
                subscriber_ids: jobs.iter().map(|j| j.subscriber_id).collect(),
                idempotency: None,
            })
            .collect();
        state.outbox.spool(&state.pool, items).await?;
    }
    let matched: usize = prepared.iter().map(|(_, _, j)| j.len()).sum();
    state
        .metrics
        .publishes
        .with_label_values(&["accepted"])
        .inc_by(prepared.len() as u64);
    state.metrics.matches.inc_by(matched as u64);
    for ((id, _, jobs), (trace, topic)) in prepared.iter().zip(&traced) {
        publish_span(&state, *trace, id, topic, received, jobs.len());
    }
    let items: Vec<serde_json::Value> = prepared
        .iter()
        .map(|(id, _, jobs)| json!({"message_id": id, "matched": jobs.len()}))
        .collect();
    if spooled {
        return Ok(HttpResponse::Accepted().json(json!({ "items": items, "spooled": true })));
    }
    Ok(HttpResponse::Accepted().json(json!({ "items": items })))
}

/// The `publish` span of an accepted message, from the request's arrival to
/// its answer: the parent of each of its delivery attempts' spans.
fn publish_span(
    state: &State,
    trace: TraceId,
    message_id: &str,
    topic: &str,
    received: SystemTime,
    matched: usize,
) {
    if !state.spans.enabled() {
        return;
    }
    state.spans.export(Span {
        name: "publish",
        kind: SpanKind::Producer,
        trace,
        id: SpanId::of_message_id(message_id),
        parent: None,
        start: received,
        end: SystemTime::now(),
        attributes: vec![
            KeyValue::new("messaging.destination.name", topic.to_string()),
            KeyValue::new("messaging.message.id", message_id.to_string()),
            KeyValue::new("switch.matched", matched as i64),
        ],
    });
}

/// `202` for a publish kept in the outbox until Redis can take it.
fn spooled_answer(state: &State, message_id: &str, matched: usize) -> HttpResponse {
    state.metrics.matches.inc_by(matched as u64);
    HttpResponse::Accepted()
        .json(json!({"message_id": message_id, "matched": matched, "spooled": true}))
}

/// Attempt 1 of a message for each subscriber it matched.
fn jobs_of(
    matched: &[i64],
    message_id: &str,
    ordering_key: Option<&str>,
    message_json: &Arc<str>,
) -> Vec<Job> {
    let id: Arc<str> = Arc::from(message_id);
    let key: Option<Arc<str>> = ordering_key.map(Arc::from);
    matched
        .iter()
        .map(|sid| Job::first(*sid, id.clone(), key.clone(), message_json.clone()))
        .collect()
}

/// The message id an idempotency record (`<message id>|<matched>`) names.
fn record_of(record: &str) -> &str {
    record.split_once('|').map_or(record, |(id, _)| id)
}

/// Reload the subscriber cache
///
/// Every server and worker reloads at once (rows changed by SQL are noticed
/// without this too, within `SWITCH_REFRESH_INTERVAL`).
#[utoipa::path(
    post,
    path = "/refresh",
    operation_id = "refreshSubscribers",
    tag = "publishing",
    security(("bearer" = ["publish"])),
    responses(
        (status = 200, description = "Reloaded.", body = Refreshed),
        (status = 401, response = crate::shapes::Unauthorized),
        (status = 403, response = crate::shapes::Forbidden),
        (status = 500, response = crate::shapes::Internal),
        (status = 503, response = crate::shapes::Unavailable),
    )
)]
pub(crate) async fn refresh(req: HttpRequest, state: State) -> Result<HttpResponse, ApiError> {
    let principal = state.auth.authenticate(&req)?;
    principal.require_publish()?;
    // Rows changed by SQL: the workers and other servers reload at once too.
    let n = state.subscribers_changed().await?;
    Ok(HttpResponse::Ok().json(json!({"subscribers": n})))
}

/// Reload the subscriber cache (legacy GET)
///
/// What the original SDKs call; the same as `POST /refresh`.
#[utoipa::path(
    get,
    path = "/refresh",
    operation_id = "refreshSubscribersLegacy",
    tag = "publishing",
    security(("bearer" = ["publish"])),
    responses(
        (status = 200, description = "Reloaded.", body = Refreshed),
        (status = 401, response = crate::shapes::Unauthorized),
        (status = 403, response = crate::shapes::Forbidden),
        (status = 500, response = crate::shapes::Internal),
        (status = 503, response = crate::shapes::Unavailable),
    )
)]
pub(crate) async fn refresh_legacy(
    req: HttpRequest,
    state: State,
) -> Result<HttpResponse, ApiError> {
    refresh(req, state).await
}
