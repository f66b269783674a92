//! `/ui/tail`: messages as they are published. The browser's `EventSource`
//! cannot send an `Authorization` header and cannot read the HttpOnly
//! session cookie, so the page streams from `/ui/tail/stream`, which the
//! cookie authenticates, and which is the API's own `GET /stream`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use maud::html;
use switch_core::filter::CompiledFilter;
use switch_core::topic::TopicPattern;

use super::error::UiError;
use super::form::{link, Form};
use super::layout::{self, Nav};
use super::session::Session;
use crate::error::ApiError;
use crate::routes::State;

/// What to watch: checked here, so the page shows a mistake before connecting.
fn interest(q: &Form) -> Result<(Option<String>, Option<String>), ApiError> {
    let topic = q.text("topic");
    let filter = q.text("filter");
    if let Some(t) = &topic {
        TopicPattern::parse(t).map_err(|e| ApiError::invalid(format!("topic: {}", e.0)))?;
    }
    CompiledFilter::compile(filter.as_deref()).map_err(|e| ApiError::InvalidRequest {
        message: format!("filter: {}", e.message),
        position: e.position,
    })?;
    Ok((topic, filter))
}

/// `GET /ui/tail?topic=&filter=`.
pub async fn page(req: HttpRequest, session: Session) -> HttpResponse {
    let q = Form::query(req.query_string());
    let checked = interest(&q);
    let (topic, filter) = (q.text("topic"), q.text("filter"));
    let status = checked
        .as_ref()
        .err()
        .map_or(StatusCode::OK, |e| e.status_code());
    let body = html! {
        form.filters method="get" action="/ui/tail" {
            label { "Topic pattern" input type="text" name="topic" value=[topic.as_deref()] placeholder="# (everything)"; }
            label { "Filter" input type="text" name="filter" value=[filter.as_deref()] placeholder="body.total > 100"; }
            button type="submit" { "Follow" }
        }
        @match &checked {
            Err(e) => p.error { (e) },
            Ok((topic, filter)) => {
                div id="tail" data-src=(link("/ui/tail/stream", &[("topic", topic.clone()), ("filter", filter.clone())])) {
                    div.actions {
                        span id="tail-status" .badge.warn { "Connecting…" }
                        button id="tail-pause" .secondary type="button" { "Pause" }
                        button id="tail-clear" .secondary type="button" { "Clear" }
                    }
                    table {
                        thead { tr { th { "Published (UTC)" } th { "Id" } th { "Topic" } th { "Author" } th.num { "Matched" } th { "Body" } } }
                        tbody id="tail-rows" {}
                    }
                    p.hint { "Only messages published from now on are shown; the newest 500 are kept." }
                }
            }
        }
    };
    layout::page_with_status(status, &session, Nav::Tail, "Live tail", body)
}

/// `GET /ui/tail/stream?topic=&filter=`: the live stream for the session.
pub async fn stream(
    req: HttpRequest,
    session: Session,
    state: State,
) -> Result<HttpResponse, UiError> {
    let q = Form::query(req.query_string());
    let (topic, filter) = interest(&q)?;
    Ok(crate::routes::stream::sse_for(&req, &state, session.principal, topic, filter).await?)
}
