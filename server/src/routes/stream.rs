//! Live stream: `GET /stream` (Server-Sent Events) and `GET /ws` (WebSocket).
//! A client names a topic pattern and an optional filter (compiled once per
//! connection, with the subscribers' evaluator and limits); with
//! `Last-Event-ID` or `?since=` it first gets every logged message after that
//! one, then goes live with no gap and no duplicate at the seam.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;
use switch_core::db::repo::{self, MessageQuery};
use switch_core::filter::CompiledFilter;
use switch_core::message::Message;
use switch_core::topic::{Topic, TopicPattern};
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

use super::messages::{to_json, to_message};
use super::{db, State};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::live::{Frame, Watch};
use crate::shapes::{BadRequest, Forbidden, Internal, Unauthorized, Unavailable};

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/stream", web::get().to(sse))
        .route("/ws", web::get().to(ws));
}

/// A comment line at least this often keeps proxies from closing the stream.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Logged messages sent per database read while catching up.
const CATCH_UP_PAGE: i64 = 500;
/// How long a resume waits for its message to reach the log.
const RESUME_WAIT: Duration = Duration::from_secs(3);

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StreamQuery {
    /// The messages to watch: those whose topic this pattern matches (`#`,
    /// every one, when absent).
    #[param(value_type = Option<crate::shapes::TopicPattern>)]
    topic: Option<String>,
    /// Only messages this filter matches (the subscribers' syntax).
    #[param(value_type = Option<crate::shapes::FilterExpression>)]
    filter: Option<String>,
    /// The credential, for clients that cannot set headers (see the `token`
    /// security scheme).
    token: Option<String>,
    /// A message id: first every logged message after it, then live (as
    /// `Last-Event-ID`).
    since: Option<String>,
}

/// What a client watches.
struct Interest {
    pattern: TopicPattern,
    filter: CompiledFilter,
}

impl Interest {
    fn wants(&self, topic: Option<&Topic>, message: &Message) -> bool {
        topic.is_some_and(|t| self.pattern.matches(t)) && self.filter.matches(message)
    }
}

/// One thing to send.
enum Item {
    Message(Arc<Frame>),
    Heartbeat,
    SlowConsumer,
}

/// A client's feed: catching up from the log, then live.
struct Feed {
    state: State,
    watch: Watch,
    interest: Interest,
    /// Cursor of the last message sent (or skipped by the client's interest).
    last: i64,
    catching_up: bool,
    heartbeat: tokio::time::Interval,
    pending: std::collections::VecDeque<Item>,
}

impl Feed {
    async fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.catching_up {
                self.catch_up().await;
                continue;
            }
            tokio::select! {
                _ = self.heartbeat.tick() => return Some(Item::Heartbeat),
                event = self.watch.events.recv() => match event {
                    Ok(e) => {
                        if e.seq <= self.last {
                            continue; // sent from the log already
                        }
                        self.last = e.seq;
                        if self.interest.wants(e.topic.as_ref(), &e.message) {
                            return Some(Item::Message(e.frame.clone()));
                        }
                    }
                    Err(RecvError::Lagged(_)) => return Some(Item::SlowConsumer),
                    Err(RecvError::Closed) => return None,
                },
            }
        }
    }

    /// One page of logged messages after `last`, below the horizon; done once
    /// the log has everything from before the moment this client went live.
    async fn catch_up(&mut self) {
        let horizon = match self.state.queue.log_horizon().await {
            Ok(h) => h,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                return;
            }
        };
        let q = MessageQuery {
            since: Some(self.last),
            horizon: Some(horizon),
            limit: CATCH_UP_PAGE,
            ..Default::default()
        };
        let rows = match db(&self.state, move |c| Ok(repo::list_messages(c, &q)?)).await {
            Ok(rows) => rows,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                return;
            }
        };
        if rows.is_empty() {
            if horizon > self.watch.live_from {
                self.catching_up = false;
            } else {
                // The archiver has not reached the moment we went live yet.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            return;
        }
        for row in rows {
            self.last = row.log_seq;
            let message = to_message(&row);
            if self
                .interest
                .wants(Topic::parse(&row.topic).ok().as_ref(), &message)
            {
                let frame = Frame::new(&row.id, to_json(&row).to_string());
                self.pending.push_back(Item::Message(Arc::new(frame)));
            }
        }
    }
}

/// Authenticates (header, or `?token=` for browsers), checks the client may
/// watch the pattern, compiles its filter, finds where a resume starts, and
/// joins the hub — all before anything is sent.
async fn open(req: &HttpRequest, state: &State, q: StreamQuery) -> Result<Feed, ApiError> {
    let token = q.token.as_deref().filter(|t| !t.is_empty());
    let principal = match (token, req.headers().contains_key("authorization")) {
        (Some(t), false) => state.auth.verify(t)?,
        _ => state.auth.authenticate(req)?,
    };
    open_as(req, state, principal, q).await
}

/// [`open`] for a client already authenticated.
async fn open_as(
    req: &HttpRequest,
    state: &State,
    principal: Principal,
    q: StreamQuery,
) -> Result<Feed, ApiError> {
    let pattern = TopicPattern::parse(q.topic.as_deref().filter(|t| !t.is_empty()).unwrap_or("#"))
        .map_err(|e| ApiError::invalid(format!("topic: {}", e.0)))?;
    principal.require_watch(&pattern)?;
    let filter =
        CompiledFilter::compile(q.filter.as_deref()).map_err(|e| ApiError::InvalidRequest {
            message: format!("filter: {}", e.message),
            position: e.position,
        })?;
    let resume = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(q.since)
        .filter(|s| !s.trim().is_empty());
    let from = match resume {
        None => None,
        Some(id) => Some(resume_cursor(state, id.trim().to_string()).await?),
    };
    let watch = state.live.watch().await?;
    let last = from.unwrap_or(0);
    Ok(Feed {
        state: state.clone(),
        catching_up: from.is_some(),
        last: if from.is_some() {
            last
        } else {
            watch.live_from
        },
        watch,
        interest: Interest { pattern, filter },
        heartbeat: {
            let mut t = tokio::time::interval(HEARTBEAT);
            t.reset();
            t
        },
        pending: Default::default(),
    })
}

/// The log cursor of message `id` (waiting a moment for it to be archived).
async fn resume_cursor(state: &State, id: String) -> Result<i64, ApiError> {
    if id.contains('\0') || id.len() > 128 {
        return Err(ApiError::invalid("the resume id is not a message id"));
    }
    let started = tokio::time::Instant::now();
    loop {
        let key = id.clone();
        if let Some(m) = db(state, move |c| Ok(repo::get_message(c, &key)?)).await? {
            return Ok(m.log_seq);
        }
        if started.elapsed() > RESUME_WAIT {
            return Err(ApiError::NotFound(format!(
                "no logged message {id} to resume after"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Watch messages live (Server-Sent Events)
///
/// One event per message published from the moment the headers are sent,
/// through any server: `id: <message id>`, `event: message`, `data:` the
/// message as `GET /messages/{id}` shows it, without deliveries. A comment
/// line at least every 15 s; a client that falls behind gets `event: error`
/// with `{"code":"slow_consumer"}` and is closed. `Last-Event-ID` (or
/// `since`) first replays the logged messages after that one. Needs the
/// `admin` scope or a `topics` claim covering the pattern.
#[utoipa::path(
    get,
    path = "/stream",
    operation_id = "streamMessages",
    tag = "messages",
    params(
        StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last message received: resume after it."),
    ),
    security(("bearer" = []), ("token" = [])),
    responses(
        (status = 200, description = "The event stream; it stays open.", body = String, content_type = "text/event-stream"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "No logged message to resume after (`not_found`).", body = crate::error::ErrorBody),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn sse(
    req: HttpRequest,
    state: State,
    q: web::Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    let feed = open(&req, &state, q.into_inner()).await?;
    Ok(sse_response(feed))
}

/// `GET /stream` for a caller authenticated some other way (the dashboard's
/// session cookie, which `EventSource` sends by itself): the same checks,
/// resume and feed, watching `topic` (default `#`) through `filter`.
pub async fn sse_for(
    req: &HttpRequest,
    state: &State,
    principal: Principal,
    topic: Option<String>,
    filter: Option<String>,
) -> Result<HttpResponse, ApiError> {
    let q = StreamQuery {
        topic,
        filter,
        token: None,
        since: None,
    };
    let feed = open_as(req, state, principal, q).await?;
    Ok(sse_response(feed))
}

fn sse_response(feed: Feed) -> HttpResponse {
    let body = futures_util::stream::unfold(Some(feed), |feed| async move {
        let mut feed = feed?;
        let chunk = match feed.next().await? {
            Item::Message(frame) => frame.sse.clone(),
            Item::Heartbeat => Bytes::from_static(b": keep-alive\n\n"),
            Item::SlowConsumer => {
                let last = "event: error\ndata: {\"code\":\"slow_consumer\"}\n\n";
                return Some((Ok::<_, actix_web::Error>(Bytes::from(last)), None));
            }
        };
        Some((Ok(chunk), Some(feed)))
    });
    let opening = futures_util::stream::once(async { Ok(Bytes::from_static(b": live\n\n")) });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(futures_util::StreamExt::chain(opening, body))
}

/// Watch messages live (WebSocket)
///
/// The same as `GET /stream`, one text frame per message (its JSON); a
/// client that falls behind gets `{"error":{"code":"slow_consumer"}}` and a
/// close frame.
#[utoipa::path(
    get,
    path = "/ws",
    operation_id = "streamMessagesWs",
    tag = "messages",
    params(StreamQuery),
    security(("bearer" = []), ("token" = [])),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol."),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "No logged message to resume after (`not_found`).", body = crate::error::ErrorBody),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn ws(
    req: HttpRequest,
    body: web::Payload,
    state: State,
    q: web::Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    let mut feed = open(&req, &state, q.into_inner()).await?;
    let (response, mut session, mut incoming) = actix_ws::handle(&req, body)
        .map_err(|e| ApiError::invalid(format!("not a WebSocket upgrade: {e}")))?;
    actix_web::rt::spawn(async move {
        use futures_util::StreamExt;
        loop {
            tokio::select! {
                item = feed.next() => match item {
                    Some(Item::Message(frame)) => {
                        if session.text(frame.json.clone()).await.is_err() {
                            return;
                        }
                    }
                    Some(Item::Heartbeat) => {
                        if session.ping(b"").await.is_err() {
                            return;
                        }
                    }
                    Some(Item::SlowConsumer) => {
                        let _ = session.text(r#"{"error":{"code":"slow_consumer"}}"#).await;
                        let _ = session
                            .close(Some(actix_ws::CloseReason {
                                code: actix_ws::CloseCode::Policy,
                                description: Some("slow_consumer".into()),
                            }))
                            .await;
                        return;
                    }
                    None => {
                        let _ = session.close(None).await;
                        return;
                    }
                },
                msg = incoming.next() => match msg {
                    Some(Ok(actix_ws::Message::Ping(p))) => {
                        if session.pong(&p).await.is_err() {
                            return;
                        }
                    }
                    Some(Ok(actix_ws::Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => {}
                },
            }
        }
    });
    Ok(response)
}
