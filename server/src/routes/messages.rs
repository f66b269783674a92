//! Admin: the message log — list with a `since` cursor that never skips, one
//! message with its deliveries, and range replay (backfill).

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use switch_core::db::models::{DeliveryAttempt, LoggedMessage};
use switch_core::db::repo::{self, MessageQuery};
use switch_core::job::Job;
use switch_core::message::{HttpMethod, Message};
use switch_core::topic::{Topic, TopicPattern};
use utoipa::IntoParams;

use super::deliveries::{int_param, text_param};
use super::{admin, db, json_object, ts, State};
use crate::error::ApiError;
use crate::shapes::messages::{
    DeliveryState, DeliveryStateName, MessageDetail, MessageList, MessageOut, ReplayRange,
    ReplayRangeResult,
};
use crate::shapes::{
    BadRequest, Forbidden, Internal, NotFound, PayloadTooLarge, RequestTimeout, Unauthorized,
    Unavailable,
};

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/messages", web::get().to(list))
        // A resource of its own, so that another method on this path is
        // answered 405 instead of reaching `GET /messages/{id}`.
        .service(web::resource("/messages/replay").route(web::post().to(replay)))
        .route("/messages/{id}", web::get().to(get));
}

/// Rows read per database query while filtering by a topic pattern.
const SCAN_PAGE: i64 = 1000;
/// Pages scanned by one list call before it answers with what it has.
const MAX_SCAN_PAGES: usize = 20;
/// Messages replayed per round trip to Redis.
const REPLAY_PAGE: i64 = 500;

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

impl MessageOut {
    pub fn new(m: &LoggedMessage) -> Self {
        MessageOut {
            id: m.id.clone(),
            topic: m.topic.clone(),
            author: m.author.clone(),
            body: parse_json(&m.body),
            headers: parse_json(&m.headers),
            query_params: parse_json(&m.query_params),
            path_params: parse_json(&m.path_params),
            http_method: m.http_method.clone(),
            ordering_key: m.ordering_key.clone(),
            matched: m.matched,
            created_at: ts(m.created_at),
        }
    }
}

/// The API shape of a logged message.
pub fn to_json(m: &LoggedMessage) -> Value {
    json!(MessageOut::new(m))
}

/// The message a logged row was published as (for replays).
pub(crate) fn to_message(m: &LoggedMessage) -> Message {
    let map =
        |text: &str| -> BTreeMap<String, String> { serde_json::from_str(text).unwrap_or_default() };
    Message {
        id: m.id.clone(),
        topic: m.topic.clone(),
        author: m.author.clone(),
        body: parse_json(&m.body),
        headers: map(&m.headers),
        query_params: map(&m.query_params),
        path_params: map(&m.path_params),
        http_method: HttpMethod::parse(&m.http_method).unwrap_or_default(),
        request_id: None,
        published_at_ms: m.created_at.and_utc().timestamp_millis(),
        ordering_key: m.ordering_key.clone(),
        trace_id: None,
        extra: Map::new(),
    }
}

pub(crate) fn time_param(
    name: &str,
    v: Option<&str>,
) -> Result<Option<chrono::NaiveDateTime>, ApiError> {
    match v.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.naive_utc()))
            .map_err(|_| ApiError::invalid(format!("`{name}` must be an RFC 3339 time"))),
    }
}

/// A topic pattern, and what of it the database can select on: the exact
/// topic, or the literal start of the topics it can match.
pub(crate) struct TopicFilter {
    pub pattern: TopicPattern,
    pub exact: Option<String>,
    pub prefix: Option<String>,
}

impl TopicFilter {
    pub fn parse(src: &str) -> Result<Self, ApiError> {
        let pattern =
            TopicPattern::parse(src).map_err(|e| ApiError::invalid(format!("topic: {}", e.0)))?;
        if pattern.is_exact() {
            return Ok(TopicFilter {
                exact: Some(pattern.as_str().to_string()),
                prefix: None,
                pattern,
            });
        }
        let literal: Vec<&str> = pattern
            .as_str()
            .split('.')
            .take_while(|w| *w != "*" && *w != "#")
            .collect();
        let prefix = (!literal.is_empty()).then(|| literal.join("."));
        Ok(TopicFilter {
            exact: None,
            prefix,
            pattern,
        })
    }

    pub fn matches(&self, topic: &str) -> bool {
        Topic::parse(topic).is_ok_and(|t| self.pattern.matches(&t))
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only messages whose topic this pattern matches.
    #[param(value_type = Option<crate::shapes::TopicPattern>)]
    topic: Option<String>,
    /// Only messages of this publisher.
    #[param(pattern = "^[^\\u0000]*$")]
    author: Option<String>,
    /// Only messages published after this time (exclusive).
    #[param(format = DateTime)]
    after: Option<String>,
    /// Only messages published before this time (exclusive).
    #[param(format = DateTime)]
    before: Option<String>,
    /// A `next_since` from an earlier page: only newer messages.
    #[param(value_type = Option<i64>)]
    since: Option<String>,
    /// Page size.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000, default = json!(100))]
    limit: Option<String>,
}

/// `GET /messages`: ascending by publish order, only messages below the log's
/// horizon (every message before it is committed), so a poller following
/// `next_since` sees each message once and never passes one that commits late.
#[utoipa::path(
    get,
    path = "/messages",
    operation_id = "listMessages",
    tag = "messages",
    summary = "List logged messages by publish order",
    description = "Ascending by publish order. Only messages every one before which is stored are listed, so polling with `next_since` never skips one and never shows one twice.",
    params(ListQuery),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "A page of messages.", body = MessageList),
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
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    admin(&req, &state)?;
    let q = q.into_inner();
    let topic = text_param("topic", q.topic)?
        .filter(|t| !t.is_empty())
        .map(|t| TopicFilter::parse(&t))
        .transpose()?;
    let limit = int_param("limit", q.limit.as_deref())?.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("`limit` must be between 1 and 1000"));
    }
    let since = int_param("since", q.since.as_deref())?;
    let horizon = state.queue.log_horizon().await?;
    let base = MessageQuery {
        topic: topic.as_ref().and_then(|t| t.exact.clone()),
        topic_prefix: topic.as_ref().and_then(|t| t.prefix.clone()),
        author: text_param("author", q.author)?,
        after: time_param("after", q.after.as_deref())?,
        before: time_param("before", q.before.as_deref())?,
        since,
        horizon: Some(horizon),
        limit,
    };
    let (items, next_since) = db(&state, move |c| {
        let mut cursor = base.since;
        let Some(filter) = topic.filter(|t| t.exact.is_none()) else {
            let rows = repo::list_messages(c, &base)?;
            let next = rows.last().map(|r| r.log_seq).or(cursor);
            return Ok((rows, next));
        };
        // A pattern: rows the database selects may not match. Read places
        // and topics only (the index holds both) until the page is full or
        // the log is exhausted, then the matching rows themselves.
        let mut wanted: Vec<i64> = Vec::new();
        'scan: for _ in 0..MAX_SCAN_PAGES {
            let page = MessageQuery {
                since: cursor,
                limit: SCAN_PAGE,
                ..base.clone()
            };
            let rows = repo::scan_topics(c, &page)?;
            let exhausted = (rows.len() as i64) < SCAN_PAGE;
            for (seq, topic) in rows {
                cursor = Some(seq);
                if filter.matches(&topic) {
                    wanted.push(seq);
                    if wanted.len() as i64 == limit {
                        break 'scan;
                    }
                }
            }
            if exhausted {
                break;
            }
        }
        let items = repo::messages_at(c, &wanted)?;
        Ok((items, cursor))
    })
    .await?;
    Ok(HttpResponse::Ok().json(MessageList {
        items: items.iter().map(MessageOut::new).collect(),
        next_since: next_since.map(|s| s.to_string()),
    }))
}

/// The delivery state of one subscriber from its attempts at one message.
fn delivery_state(subscriber_id: i64, attempts: &[&DeliveryAttempt]) -> DeliveryState {
    let last = attempts.last();
    let state = match last.map(|a| a.outcome.as_str()) {
        None => DeliveryStateName::Pending,
        Some("delivered") => DeliveryStateName::Delivered,
        Some("dead") => DeliveryStateName::Dead,
        Some(_) => DeliveryStateName::Failed,
    };
    DeliveryState {
        subscriber_id,
        state,
        attempts: attempts.len(),
        last_http_status: last.and_then(|a| a.http_status),
    }
}

/// A logged message and its deliveries
#[utoipa::path(
    get,
    path = "/messages/{id}",
    operation_id = "getMessage",
    tag = "messages",
    params(("id" = String, Path, description = "The message id (`msg_…`).")),
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The message, and per subscriber it matched, its delivery state.", body = MessageDetail),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn get(
    req: HttpRequest,
    state: State,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    admin(&req, &state)?;
    let id = id.into_inner();
    if id.contains('\0') {
        return Err(ApiError::NotFound(format!(
            "no message {}",
            id.escape_debug()
        )));
    }
    let (message, attempts) = with_attempts(&state, id).await?;
    Ok(HttpResponse::Ok().json(MessageDetail {
        message: MessageOut::new(&message),
        deliveries: deliveries(&message, &attempts),
    }))
}

/// A logged message and its delivery attempts; `404` when there is none.
/// Shared by the API and the dashboard.
pub(crate) async fn with_attempts(
    state: &State,
    id: String,
) -> Result<(LoggedMessage, Vec<DeliveryAttempt>), ApiError> {
    let key = id.clone();
    let (message, attempts) = db(state, move |c| {
        let m = repo::get_message(c, &key)?;
        let a = match &m {
            Some(_) => repo::attempts_of_message(c, &key)?,
            None => Vec::new(),
        };
        Ok((m, a))
    })
    .await?;
    let message = message.ok_or_else(|| ApiError::NotFound(format!("no message {id}")))?;
    Ok((message, attempts))
}

/// The delivery state per subscriber of a message, from its attempts: the
/// subscribers the publish matched, then those replays and backfills added.
pub(crate) fn deliveries(
    message: &LoggedMessage,
    attempts: &[DeliveryAttempt],
) -> Vec<DeliveryState> {
    let mut subscribers: Vec<i64> =
        serde_json::from_str(&message.subscriber_ids).unwrap_or_default();
    for a in attempts {
        if !subscribers.contains(&a.subscriber_id) {
            subscribers.push(a.subscriber_id);
        }
    }
    subscribers
        .iter()
        .map(|sid| {
            let mine: Vec<&DeliveryAttempt> = attempts
                .iter()
                .filter(|a| a.subscriber_id == *sid)
                .collect();
            delivery_state(*sid, &mine)
        })
        .collect()
}

/// `POST /messages/replay`: every logged message in the range, matched again
/// against today's enabled subscribers (or only the one named, with its
/// filter), enqueued as new jobs with the original message id.
#[utoipa::path(
    post,
    path = "/messages/replay",
    operation_id = "replayMessages",
    tag = "messages",
    summary = "Match logged messages again and enqueue them (range replay, backfill)",
    description = "Every logged message in the range is matched against today's enabled subscribers (or only the one named, whose filter applies) and enqueued as new jobs with its original message id.",
    request_body = ReplayRange,
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "What was (or with `dry_run`, would be) enqueued.", body = ReplayRangeResult),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "No subscriber `subscriber_id` (`not_found`).", body = crate::error::ErrorBody),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn replay(
    req: HttpRequest,
    state: State,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    admin(&req, &state)?;
    const FIELDS: [&str; 5] = ["topic", "after", "before", "subscriber_id", "dry_run"];
    let m = json_object(&body, &FIELDS)?;
    let text = |k: &str| -> Result<Option<String>, ApiError> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => text_param(k, Some(s.clone())),
            Some(_) => Err(ApiError::invalid(format!("`{k}` must be a string"))),
        }
    };
    let topic = text("topic")?.map(|t| TopicFilter::parse(&t)).transpose()?;
    // In a body an empty time is not a missing one (as it is in a query).
    let time = |k: &str| match text(k)? {
        Some(s) if s.trim().is_empty() => {
            Err(ApiError::invalid(format!("`{k}` must be an RFC 3339 time")))
        }
        other => time_param(k, other.as_deref()),
    };
    let after = time("after")?;
    let before = time("before")?;
    let only = match m.get("subscriber_id") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            super::json_integer(v)
                .ok_or_else(|| ApiError::invalid("`subscriber_id` must be an integer"))?,
        ),
    };
    let dry_run = match m.get("dry_run") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid("`dry_run` must be true or false")),
    };
    let index = state.cache.current();
    if let Some(sid) = only {
        if index.get(sid).is_none() {
            return Err(ApiError::NotFound(format!("no subscriber {sid}")));
        }
    }
    let mut cursor = None;
    let (mut messages, mut jobs) = (0usize, 0usize);
    loop {
        let page = MessageQuery {
            topic: topic.as_ref().and_then(|t| t.exact.clone()),
            topic_prefix: topic.as_ref().and_then(|t| t.prefix.clone()),
            after,
            before,
            since: cursor,
            limit: REPLAY_PAGE,
            ..Default::default()
        };
        let rows = db(&state, move |c| Ok(repo::list_messages(c, &page)?)).await?;
        let exhausted = (rows.len() as i64) < REPLAY_PAGE;
        let mut batch: Vec<Job> = Vec::new();
        for row in &rows {
            cursor = Some(row.log_seq);
            if topic.as_ref().is_some_and(|t| !t.matches(&row.topic)) {
                continue;
            }
            messages += 1;
            let message = to_message(row);
            let Ok(t) = Topic::parse(&message.topic) else {
                continue;
            };
            let targets: Vec<i64> = match only {
                Some(sid) => index
                    .get(sid)
                    .filter(|l| l.row.enabled)
                    .filter(|l| l.pattern.as_ref().is_ok_and(|p| p.matches(&t)))
                    .filter(|l| l.filter.as_ref().is_ok_and(|f| f.matches(&message)))
                    .map(|l| vec![l.row.id])
                    .unwrap_or_default(),
                None => index.matching(&t, &message),
            };
            if targets.is_empty() {
                continue;
            }
            jobs += targets.len();
            if !dry_run {
                let json: Arc<str> =
                    Arc::from(serde_json::to_string(&message).map_err(anyhow::Error::from)?);
                batch.extend(
                    targets
                        .into_iter()
                        .map(|sid| Job::new(sid, 1, json.clone())),
                );
            }
        }
        if !batch.is_empty() {
            state.queue.push(&batch).await?;
        }
        if exhausted {
            break;
        }
    }
    tracing::info!(messages, jobs, dry_run, "message log replayed");
    Ok(HttpResponse::Ok().json(ReplayRangeResult {
        messages,
        jobs,
        dry_run,
    }))
}
