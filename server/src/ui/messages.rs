//! `/ui/messages`: the message log, newest first, searched by topic pattern,
//! author and time; and one message with its deliveries and why each
//! subscriber would or would not get it today (the dry-run explain).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::NaiveDateTime;
use maud::html;
use switch_core::topic::Topic;

use super::error::UiError;
use super::form::{link, Form};
use super::keyset::Cursor;
use super::layout::{self, cut, outcome_badge, pretty_json, ts, Nav};
use super::queries::{self, MessageSearch};
use super::session::Session;
use crate::error::ApiError;
use crate::routes::messages::{deliveries, time_param, to_message, with_attempts, TopicFilter};
use crate::routes::{db, State};

/// Messages per page.
const PAGE: i64 = 50;
/// Rows of a message's deliveries and attempts shown (a message can fan out
/// to thousands of subscribers).
const SHOWN: usize = 500;

/// A time typed in the search form: RFC 3339, or a date and time in UTC
/// (`2026-12-06 10:00`, seconds optional), or a date.
fn typed_time(name: &str, text: Option<String>) -> Result<Option<NaiveDateTime>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    if let Ok(t) = time_param(name, Some(&text)) {
        return Ok(t);
    }
    let t = text.replace('T', " ");
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M"] {
        if let Ok(v) = NaiveDateTime::parse_from_str(&t, format) {
            return Ok(Some(v));
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(&t, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0));
    }
    Err(ApiError::invalid(format!(
        "`{name}` must be a time such as 2026-12-06 10:00 (UTC) or RFC 3339"
    )))
}

/// `GET /ui/messages?topic=&author=&after_time=&before_time=&after=&before=`.
pub async fn list(
    req: HttpRequest,
    session: Session,
    state: State,
) -> Result<HttpResponse, UiError> {
    let q = Form::query(req.query_string());
    let (topic, author) = (q.text("topic"), q.text("author"));
    let (from, until) = (q.text("from"), q.text("until"));
    let cursor = Cursor::of(q.int("after")?, q.int("before")?);
    let search = (|| -> Result<MessageSearch, ApiError> {
        Ok(MessageSearch {
            topic: topic.as_deref().map(TopicFilter::parse).transpose()?,
            author: author.clone(),
            after: typed_time("from", from.clone())?,
            before: typed_time("until", until.clone())?,
        })
    })();
    let (page, error) = match search {
        Ok(s) => (
            Some(
                db(&state, move |c| {
                    Ok(queries::messages_page(c, &s, cursor, PAGE)?)
                })
                .await?,
            ),
            None,
        ),
        Err(e) => (None, Some(e)),
    };
    let to = |c: Option<Cursor>| {
        c.map(|c| {
            let (after, before) = c.params();
            link(
                "/ui/messages",
                &[
                    ("topic", topic.clone()),
                    ("author", author.clone()),
                    ("from", from.clone()),
                    ("until", until.clone()),
                    ("after", after),
                    ("before", before),
                ],
            )
        })
    };
    let status = error.as_ref().map_or(StatusCode::OK, |e| e.status_code());
    let body = html! {
        form.filters method="get" action="/ui/messages" {
            label { "Topic pattern" input type="text" name="topic" value=[topic.as_deref()] placeholder="orders.#"; }
            label { "Author" input type="text" name="author" value=[author.as_deref()]; }
            label { "After (UTC)" input type="text" name="from" value=[from.as_deref()] placeholder="2026-12-06 10:00"; }
            label { "Before (UTC)" input type="text" name="until" value=[until.as_deref()] placeholder="2026-12-06 11:00"; }
            button type="submit" { "Search" }
            a href="/ui/messages" { "Clear" }
        }
        @if let Some(e) = &error { p.error { (e) } }
        @if let Some(page) = &page {
            table id="messages" {
                thead { tr { th { "Published (UTC)" } th { "Id" } th { "Topic" } th { "Author" } th { "Method" } th.num { "Matched" } th { "Body" } } }
                tbody {
                    @for m in &page.rows {
                        tr {
                            td.mono { (ts(m.created_at)) }
                            td.mono { a href={ "/ui/messages/" (m.id) } { (m.id) } }
                            td.mono { (m.topic) }
                            td { (m.author.as_deref().unwrap_or("")) }
                            td { (m.http_method) }
                            td.num { (m.matched) }
                            td.mono.wrap { (cut(&m.body, 100)) }
                        }
                    }
                    @if page.rows.is_empty() { tr { td.muted colspan="7" { "No logged message matches." } } }
                }
            }
            (layout::pager(to(page.prev), to(page.next)))
        }
    };
    Ok(layout::page_with_status(
        status,
        &session,
        Nav::Messages,
        "Messages",
        body,
    ))
}

/// `GET /ui/messages/{id}`.
pub async fn show(
    session: Session,
    state: State,
    id: web::Path<String>,
) -> Result<HttpResponse, UiError> {
    let id = id.into_inner();
    if id.contains('\0') || id.len() > 200 {
        return Err(ApiError::NotFound("no such message".into()).into());
    }
    let (message, attempts) = with_attempts(&state, id.clone()).await?;
    let states: Vec<serde_json::Value> = deliveries(&message, &attempts)
        .iter()
        .map(|d| serde_json::to_value(d).unwrap_or_default())
        .collect();
    let index = state.cache.current();
    let topic_of = |sid: i64| {
        index
            .get(sid)
            .map(|l| l.row.topic.clone())
            .unwrap_or_else(|| "(deleted)".into())
    };
    let explained = Topic::parse(&message.topic)
        .map(|t| index.explain(&t, &to_message(&message)))
        .unwrap_or_default();
    let body = html! {
        div.card {
            dl.fields {
                dt { "Id" } dd.mono { (message.id) }
                dt { "Topic" } dd.mono { (message.topic) }
                dt { "Author" } dd { (message.author.as_deref().unwrap_or("")) }
                dt { "Published (UTC)" } dd.mono { (ts(message.created_at)) }
                dt { "Method" } dd { (message.http_method) }
                @if let Some(k) = &message.ordering_key { dt { "Ordering key" } dd.mono { (k) } }
                dt { "Matched" } dd { (message.matched) " subscriber(s) when published" }
            }
        }
        h2 { "Deliveries" }
        table id="deliveries" {
            thead { tr { th { "Subscriber" } th { "Topic" } th { "State" } th.num { "Attempts" } th.num { "Last status" } } }
            tbody {
                @for d in states.iter().take(SHOWN) {
                    @let sid = d["subscriber_id"].as_i64().unwrap_or_default();
                    tr {
                        td { a href={ "/ui/subscribers/" (sid) } { (sid) } }
                        td.mono { (topic_of(sid)) }
                        td { (outcome_badge(d["state"].as_str().unwrap_or(""))) }
                        td.num { (d["attempts"]) }
                        td.num { (d["last_http_status"].as_i64().map(|s| s.to_string()).unwrap_or_default()) }
                    }
                }
                @if states.is_empty() { tr { td.muted colspan="5" { "It matched no subscriber." } } }
                @if states.len() > SHOWN { tr { td.muted colspan="5" { "and " (states.len() - SHOWN) " more subscribers" } } }
            }
        }
        @if !attempts.is_empty() {
            h2 { "Attempts" }
            table {
                thead { tr { th { "Time (UTC)" } th { "Subscriber" } th.num { "Attempt" } th { "Outcome" } th.num { "Status" } th { "Error" } th.num { "Duration" } } }
                tbody {
                    @for a in attempts.iter().take(SHOWN) {
                        tr {
                            td.mono { (ts(a.created_at)) }
                            td { a href={ "/ui/subscribers/" (a.subscriber_id) } { (a.subscriber_id) } }
                            td.num { (a.attempt) }
                            td { (outcome_badge(&a.outcome)) }
                            td.num { (a.http_status.map(|s| s.to_string()).unwrap_or_default()) }
                            td { (a.error_kind.as_deref().unwrap_or("")) " " span.muted { (cut(a.error.as_deref().unwrap_or(""), 160)) } }
                            td.num { (a.duration_ms) " ms" }
                        }
                    }
                    @if attempts.len() > SHOWN { tr { td.muted colspan="7" { "and " (attempts.len() - SHOWN) " more attempts" } } }
                }
            }
        }
        h2 { "Explain: who would get it if it were published now" }
        table id="explain" {
            thead { tr { th { "Subscriber" } th { "Topic" } th { "Would get it" } th { "Why" } th { "Variables the message lacks" } } }
            tbody {
                @for e in explained.iter().take(SHOWN) {
                    tr {
                        td { a href={ "/ui/subscribers/" (e.id) } { (e.id) } }
                        td.mono { (topic_of(e.id)) }
                        td { @if e.matched { span.badge.ok { "yes" } } @else { span.badge { "no" } } }
                        td { code { (e.reason) } }
                        td.mono { (e.missing.join(", ")) }
                    }
                }
                @if explained.len() > SHOWN { tr { td.muted colspan="5" { "and " (explained.len() - SHOWN) " more subscribers" } } }
                @if explained.is_empty() { tr { td.muted colspan="5" { "No subscriber's pattern matches this topic today." } } }
            }
        }
        div.split {
            div { h2 { "Body" } pre { (pretty_json(&message.body)) } }
            div {
                h2 { "Headers" } pre { (pretty_json(&message.headers)) }
                h2 { "Query parameters" } pre { (pretty_json(&message.query_params)) }
                h2 { "Path parameters" } pre { (pretty_json(&message.path_params)) }
            }
        }
    };
    Ok(layout::page(
        &session,
        Nav::Messages,
        &format!("Message {}", message.id),
        body,
    ))
}
