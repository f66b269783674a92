//! Admin: dead letters and their replay.

use std::collections::HashSet;
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::Value;
use switch_core::db::models::DeadLetter;
use switch_core::db::repo;
use switch_core::job::Job;
use switch_core::message::Message;
use utoipa::IntoParams;

use super::deliveries::int_param;
use super::{admin, db, ts, State};
use crate::error::{ApiError, ErrorBody};
use crate::shapes::dead_letters::{
    DeadLetterList, DeadLetterOut, ReplayAllResult, ReplayFailure, ReplayOneResult,
};
use crate::shapes::{BadRequest, Forbidden, Internal, NotFound, Unauthorized, Unavailable};

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/dead-letters", web::get().to(list))
        .route("/dead-letters/replay", web::post().to(replay_all))
        .route("/dead-letters/{id}/replay", web::post().to(replay_one));
}

fn to_out(d: &DeadLetter) -> DeadLetterOut {
    DeadLetterOut {
        id: d.id,
        message_id: d.message_id.clone(),
        subscriber_id: d.subscriber_id,
        topic: d.topic.clone(),
        request: stored_request(&d.request),
        last_error: d.last_error.clone(),
        attempts: d.attempts,
        created_at: ts(d.created_at),
        replayed_at: d.replayed_at.map(ts),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct Query {
    /// Only dead letters of this subscriber.
    #[param(value_type = Option<i64>)]
    subscriber_id: Option<String>,
    /// Only dead letters with a greater id: the previous page's `next_since`.
    #[param(value_type = Option<i64>)]
    since: Option<String>,
    /// Page size.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000, default = json!(100))]
    limit: Option<String>,
}

/// List dead letters
///
/// Ascending by id, replayed ones included (with `replayed_at`).
#[utoipa::path(
    get,
    path = "/dead-letters",
    operation_id = "listDeadLetters",
    tag = "dead-letters",
    params(Query),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "A page of dead letters.", body = DeadLetterList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn list(
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
    Ok(HttpResponse::Ok().json(DeadLetterList {
        items: rows.iter().map(to_out).collect(),
        next_since,
    }))
}

/// A stored request as JSON. It nests the published body two levels deeper
/// than the publish did (under `body` and `message.body`), so the deepest
/// bodies a publish accepts go past serde_json's recursion limit when the
/// whole request is parsed at once; each member alone stays within it.
fn stored_request(text: &str) -> Value {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return v;
    }
    top_level_members(text)
        .and_then(|members| {
            members
                .into_iter()
                .map(|(k, v)| serde_json::from_str::<Value>(v).ok().map(|v| (k, v)))
                .collect::<Option<serde_json::Map<String, Value>>>()
        })
        .map(Value::Object)
        .unwrap_or_else(|| Value::String(text.to_string()))
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// End (exclusive) of the JSON string starting at `start`.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut j = start + 1;
    loop {
        match b.get(j)? {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
}

/// End (exclusive) of the JSON value starting at `start`, found by counting
/// brackets outside strings: no recursion, whatever the nesting.
fn value_end(b: &[u8], start: usize) -> Option<usize> {
    match b.get(start)? {
        b'"' => string_end(b, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = start;
            loop {
                match b.get(j)? {
                    b'"' => j = string_end(b, j)?,
                    b'{' | b'[' => {
                        depth += 1;
                        j += 1;
                    }
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        j += 1;
                        if depth == 0 {
                            return Some(j);
                        }
                    }
                    _ => j += 1,
                }
            }
        }
        _ => {
            let mut j = start;
            while b
                .get(j)
                .is_some_and(|c| !matches!(c, b',' | b'}' | b']') && !c.is_ascii_whitespace())
            {
                j += 1;
            }
            (j > start).then_some(j)
        }
    }
}

/// The members of a top-level JSON object, each value as its own text,
/// found without parsing the values (see [`stored_request`]). `None` when
/// `text` is not an object; the values are checked by whoever parses them.
fn top_level_members(text: &str) -> Option<Vec<(String, &str)>> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    let mut out = Vec::new();
    if b.get(i) == Some(&b'}') {
        return (skip_ws(b, i + 1) == b.len()).then_some(out);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(b, i)?;
        let key: String = serde_json::from_str(text.get(i..key_end)?).ok()?;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        let end = value_end(b, i)?;
        out.push((key, text.get(i..end)?));
        i = skip_ws(b, end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return (skip_ws(b, i + 1) == b.len()).then_some(out),
            _ => return None,
        }
    }
}

/// The job that replays a dead letter: its stored message, attempt 1; or why
/// it cannot be replayed. The message is taken from the stored request as
/// text (see [`stored_request`]) and checked the way the worker will read it,
/// so a letter that could only fail again is reported instead.
fn replay_job(d: &DeadLetter) -> Result<Job, String> {
    let members = top_level_members(&d.request)
        .ok_or_else(|| "its stored request is not a JSON object".to_string())?;
    let message = members
        .iter()
        .find(|(k, _)| k == "message")
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            "its stored request has no message (the job could not be read when it failed)"
                .to_string()
        })?;
    serde_json::from_str::<Message>(message)
        .map_err(|e| format!("its stored message cannot be read: {e}"))?;
    Ok(Job::replay(d.subscriber_id, Arc::from(message)))
}

/// Replays enqueued per chunk: one script call stays small however many
/// dead letters there are.
const REPLAY_CHUNK: usize = 500;

/// What a replay did: letters re-enqueued, and those that cannot be replayed
/// (left pending, each with why), so one bad letter never blocks the others.
pub(crate) struct Replayed {
    pub replayed: usize,
    /// Letters left because their subscriber is disabled or gone.
    pub skipped: usize,
    pub failed: Vec<ReplayFailure>,
}

/// Enqueues the replays first, then marks them: a crash between the two
/// replays again rather than losing a replay.
async fn replay(state: &State, letters: Vec<DeadLetter>) -> Result<Replayed, ApiError> {
    let mut done = Replayed {
        replayed: 0,
        skipped: 0,
        failed: Vec::new(),
    };
    for chunk in letters.chunks(REPLAY_CHUNK) {
        let mut jobs = Vec::with_capacity(chunk.len());
        let mut ids = Vec::with_capacity(chunk.len());
        for d in chunk {
            match replay_job(d) {
                Ok(job) => {
                    jobs.push(job);
                    ids.push(d.id);
                }
                Err(error) => {
                    tracing::warn!(dead_letter_id = d.id, %error, "dead letter cannot be replayed");
                    done.failed.push(ReplayFailure { id: d.id, error });
                }
            }
        }
        if jobs.is_empty() {
            continue;
        }
        state.queue.push(&jobs).await?;
        db(state, move |c| Ok(repo::mark_replayed(c, &ids)?)).await?;
        done.replayed += jobs.len();
    }
    Ok(done)
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

/// Replay one dead letter
///
/// Enqueues the stored message again with fresh attempts and the same
/// message id, to the subscriber's current URL and secret.
#[utoipa::path(
    post,
    path = "/dead-letters/{id}/replay",
    operation_id = "replayDeadLetter",
    tag = "dead-letters",
    params(("id" = i64, Path, description = "The dead letter's id.")),
    security(("bearer" = ["admin"])),
    responses(
        (status = 202, description = "Enqueued again.", body = ReplayOneResult),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "Its subscriber is disabled or gone, or its stored request cannot be replayed (`conflict`).", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn replay_one(
    req: HttpRequest,
    state: State,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admin(&req, &state)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::NotFound(format!("no dead letter {id}")))?;
    let message_id = replay_letter(&state, id).await?;
    Ok(HttpResponse::Accepted().json(ReplayOneResult {
        replayed: 1,
        message_id,
    }))
}

/// Replays dead letter `id` if its subscriber is enabled; returns its
/// message id. Shared by the API and the dashboard.
pub(crate) async fn replay_letter(state: &State, id: i64) -> Result<String, ApiError> {
    let letter = db(state, move |c| Ok(repo::get_dead_letter(c, id)?))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no dead letter {id}")))?;
    ensure_enabled(state, letter.subscriber_id).await?;
    let message_id = letter.message_id.clone();
    let done = replay(state, vec![letter]).await?;
    if let Some(error) = done.failed.first().map(|f| &f.error) {
        return Err(ApiError::Conflict(format!(
            "dead letter {id} cannot be replayed: {error}"
        )));
    }
    tracing::info!(dead_letter_id = id, message_id = %message_id, "dead letter replayed");
    Ok(message_id)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReplayAllQuery {
    /// The subscriber whose dead letters to replay; every enabled
    /// subscriber's when absent.
    #[param(value_type = Option<i64>)]
    subscriber_id: Option<String>,
}

/// Replays every pending dead letter of one subscriber (`?subscriber_id=`),
/// or of every enabled subscriber when none is named; letters of disabled or
/// deleted subscribers are then left as they are and counted as `skipped`.
/// Letters that cannot be replayed are listed in `failed` (`{"id", "error"}`)
/// and left pending; the others are replayed all the same.
#[utoipa::path(
    post,
    path = "/dead-letters/replay",
    operation_id = "replayDeadLetters",
    tag = "dead-letters",
    summary = "Replay every pending dead letter of a subscriber, or of every enabled subscriber",
    description = "Enqueues each dead letter not yet replayed again, with fresh attempts and the same message id, to the subscriber's current URL and secret. Without `subscriber_id`, dead letters of disabled or deleted subscribers are left pending and counted in `skipped`.",
    params(ReplayAllQuery),
    security(("bearer" = ["admin"])),
    responses(
        (status = 202, description = "Enqueued again.", body = ReplayAllResult),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, description = "The subscriber named is disabled or gone (`conflict`).", body = ErrorBody),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn replay_all(
    req: HttpRequest,
    state: State,
    q: web::Query<ReplayAllQuery>,
) -> Result<HttpResponse, ApiError> {
    admin(&req, &state)?;
    let subscriber_id = int_param("subscriber_id", q.subscriber_id.as_deref())?;
    let done = replay_pending(&state, subscriber_id).await?;
    Ok(HttpResponse::Accepted().json(ReplayAllResult {
        replayed: done.replayed,
        skipped: done.skipped,
        failed: done.failed,
    }))
}

/// Replays the pending dead letters of one subscriber, or of every enabled
/// one (see `replay_all`). Shared by the API and the dashboard.
pub(crate) async fn replay_pending(
    state: &State,
    subscriber_id: Option<i64>,
) -> Result<Replayed, ApiError> {
    if let Some(id) = subscriber_id {
        ensure_enabled(state, id).await?;
    }
    let (letters, skipped) = db(state, move |c| {
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
    let mut done = replay(state, letters).await?;
    done.skipped = skipped;
    tracing::info!(
        subscriber_id,
        replayed = done.replayed,
        skipped,
        failed = done.failed.len(),
        "dead letters replayed"
    );
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(request: String) -> DeadLetter {
        DeadLetter {
            id: 7,
            message_id: "msg_1".into(),
            subscriber_id: 3,
            topic: "t".into(),
            request,
            last_error: "x".into(),
            attempts: 3,
            created_at: chrono::NaiveDateTime::default(),
            replayed_at: None,
        }
    }

    /// The deepest body a publish accepts, stored the way the worker stores
    /// it: too deep to parse whole, still replayable and listable.
    #[test]
    fn a_letter_too_deep_to_parse_whole_replays() {
        let body = format!("{}{}", "[".repeat(126), "]".repeat(126));
        let message =
            format!(r#"{{"id":"msg_1","topic":"t","body":{body},"headers":{{"a":"\"}}[{{"}}}}"#);
        let request = format!(
            r#"{{"method":"POST","url":"http://h/x","headers":[["a","b"]],"body":{body},"message":{message}}}"#
        );
        assert!(
            serde_json::from_str::<Value>(&request).is_err(),
            "too deep for serde_json"
        );
        let job = replay_job(&letter(request.clone())).unwrap();
        assert_eq!(&*job.message_json, message.as_str());
        assert_eq!(job.subscriber_id, 3);
        let m: Message = serde_json::from_str(&job.message_json).unwrap();
        assert_eq!(m.headers["a"], "\"}[{");
        let shown = stored_request(&request);
        assert_eq!(shown["method"], "POST");
        assert_eq!(shown["message"]["id"], "msg_1");
    }

    #[test]
    fn letters_that_cannot_replay_say_why() {
        for (request, why) in [
            (r#"{"raw":"v1|junk"}"#, "no message"),
            ("not json", "not a JSON object"),
            (r#"{"message": {"id": 1}}"#, "cannot be read"),
            (r#"{"message": [}"#, "not a JSON object"),
            (r#"{"message": {}} trailing"#, "not a JSON object"),
        ] {
            let e = replay_job(&letter(request.into())).expect_err(request);
            assert!(e.contains(why), "{request}: {e}");
        }
        assert_eq!(
            top_level_members(r#" { "a" : 1 , "b\"c":"x,}" , "d": [ {"e": "]"} ] , "f":null } "#)
                .unwrap(),
            vec![
                ("a".to_string(), "1"),
                ("b\"c".to_string(), r#""x,}""#),
                ("d".to_string(), r#"[ {"e": "]"} ]"#),
                ("f".to_string(), "null"),
            ]
        );
        assert_eq!(top_level_members("{}").unwrap(), vec![]);
    }
}
