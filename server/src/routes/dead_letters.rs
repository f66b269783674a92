//! Admin: dead letters and their replay.

use std::collections::HashSet;
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use switch_core::db::models::DeadLetter;
use switch_core::db::repo;
use switch_core::job::Job;

use super::deliveries::int_param;
use super::{admin, db, ts, State};
use crate::error::ApiError;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/dead-letters", web::get().to(list))
        .route("/dead-letters/replay", web::post().to(replay_all))
        .route("/dead-letters/{id}/replay", web::post().to(replay_one));
}

fn to_json(d: &DeadLetter) -> Value {
    json!({
        "id": d.id,
        "message_id": d.message_id,
        "subscriber_id": d.subscriber_id,
        "topic": d.topic,
        "request": serde_json::from_str::<Value>(&d.request).unwrap_or(Value::String(d.request.clone())),
        "last_error": d.last_error,
        "attempts": d.attempts,
        "created_at": ts(d.created_at),
        "replayed_at": d.replayed_at.map(ts),
    })
}

#[derive(Deserialize)]
struct Query {
    subscriber_id: Option<String>,
    since: Option<String>,
    limit: Option<String>,
}

async fn list(
    req: HttpRequest,
    state: State,
    q: web::Query<Query>,
) -> Result<HttpResponse, ApiError> {
    admin(&req, &state)?;
    let subscriber_id = int_param("subscriber_id", q.subscriber_id.as_deref())?;
    let since = int_param("since", q.since.as_deref())?;
    let limit = int_param("limit", q.limit.as_deref())?.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("`limit` must be between 1 and 1000"));
    }
    let rows = db(&state, move |c| {
        Ok(repo::list_dead_letters(c, subscriber_id, since, limit)?)
    })
    .await?;
    let next_since = rows.last().map(|r| r.id).or(since);
    Ok(HttpResponse::Ok().json(
        json!({"items": rows.iter().map(to_json).collect::<Vec<_>>(), "next_since": next_since}),
    ))
}

/// The job that replays a dead letter: its stored message, attempt 1.
fn replay_job(d: &DeadLetter) -> Result<Job, ApiError> {
    let request: Value = serde_json::from_str(&d.request).map_err(|e| {
        ApiError::Internal(anyhow::anyhow!(
            "dead letter {} has an unreadable request: {e}",
            d.id
        ))
    })?;
    let message = request.get("message").ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "dead letter {} has no stored message",
            d.id
        ))
    })?;
    Ok(Job::replay(d.subscriber_id, Arc::from(message.to_string())))
}

/// Replays enqueued per chunk: one script call stays small however many
/// dead letters there are.
const REPLAY_CHUNK: usize = 500;

/// Enqueues the replays first, then marks them: a crash between the two
/// replays again rather than losing a replay.
async fn replay(state: &State, letters: Vec<DeadLetter>) -> Result<usize, ApiError> {
    let mut replayed = 0;
    for chunk in letters.chunks(REPLAY_CHUNK) {
        let jobs = chunk
            .iter()
            .map(replay_job)
            .collect::<Result<Vec<_>, _>>()?;
        state.queue.push(&jobs).await?;
        let ids: Vec<i64> = chunk.iter().map(|d| d.id).collect();
        db(state, move |c| Ok(repo::mark_replayed(c, &ids)?)).await?;
        replayed += jobs.len();
    }
    Ok(replayed)
}

async fn ensure_enabled(state: &State, subscriber_id: i64) -> Result<(), ApiError> {
    let sub = db(state, move |c| Ok(repo::get_subscriber(c, subscriber_id)?)).await?;
    match sub {
        None => Err(ApiError::Conflict(format!("subscriber {subscriber_id} no longer exists"))),
        Some(s) if !s.enabled => Err(ApiError::Conflict(format!(
            "subscriber {subscriber_id} is disabled; enable it (PATCH {{\"enabled\": true}}) before replaying"
        ))),
        Some(_) => Ok(()),
    }
}

async fn replay_one(
    req: HttpRequest,
    state: State,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admin(&req, &state)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::NotFound(format!("no dead letter {id}")))?;
    let letter = db(&state, move |c| Ok(repo::get_dead_letter(c, id)?))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no dead letter {id}")))?;
    ensure_enabled(&state, letter.subscriber_id).await?;
    let message_id = letter.message_id.clone();
    let n = replay(&state, vec![letter]).await?;
    tracing::info!(dead_letter_id = id, message_id = %message_id, "dead letter replayed");
    Ok(HttpResponse::Accepted().json(json!({"replayed": n, "message_id": message_id})))
}

#[derive(Deserialize)]
struct ReplayAllQuery {
    subscriber_id: Option<String>,
}

/// Replays every pending dead letter of one subscriber (`?subscriber_id=`),
/// or of every enabled subscriber when none is named; letters of disabled or
/// deleted subscribers are then left as they are and counted as `skipped`.
async fn replay_all(
    req: HttpRequest,
    state: State,
    q: web::Query<ReplayAllQuery>,
) -> Result<HttpResponse, ApiError> {
    admin(&req, &state)?;
    let subscriber_id = int_param("subscriber_id", q.subscriber_id.as_deref())?;
    if let Some(id) = subscriber_id {
        ensure_enabled(&state, id).await?;
    }
    let (letters, skipped) = db(&state, move |c| {
        let letters = repo::pending_dead_letters(c, subscriber_id)?;
        if subscriber_id.is_some() {
            return Ok((letters, 0));
        }
        let enabled: HashSet<i64> = repo::list_subscribers(c, None)?
            .into_iter()
            .filter(|s| s.enabled)
            .map(|s| s.id)
            .collect();
        let (ready, left): (Vec<_>, Vec<_>) = letters
            .into_iter()
            .partition(|d| enabled.contains(&d.subscriber_id));
        Ok((ready, left.len()))
    })
    .await?;
    let n = replay(&state, letters).await?;
    tracing::info!(
        subscriber_id,
        replayed = n,
        skipped,
        "dead letters replayed"
    );
    Ok(HttpResponse::Accepted().json(json!({"replayed": n, "skipped": skipped})))
}
