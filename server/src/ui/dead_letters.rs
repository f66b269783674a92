//! `/ui/dead-letters`: jobs that used up their attempts, newest first; replay
//! one, or every pending one of a subscriber, through the API's own replay.

use actix_web::{web, HttpRequest, HttpResponse};
use maud::html;

use super::error::UiError;
use super::form::{link, Form};
use super::keyset::Cursor;
use super::layout::{self, cut, ts, Nav};
use super::queries;
use super::session::{Posted, Session};
use crate::error::ApiError;
use crate::routes::dead_letters::{replay_letter, replay_pending};
use crate::routes::{db, State};

/// Dead letters per page.
const PAGE: i64 = 50;

/// Where to go back to after a replay: a dead-letter list, nothing else.
fn back(form: &Form) -> String {
    form.get("back")
        .filter(|b| *b == "/ui/dead-letters" || b.starts_with("/ui/dead-letters?"))
        .filter(|b| !b.contains("//") && !b.contains('\\'))
        .unwrap_or("/ui/dead-letters")
        .to_string()
}

/// `back` with a notice added (and any earlier notice dropped).
fn with_notice(back: &str, pairs: &[(&str, String)]) -> String {
    let (path, query) = back.split_once('?').unwrap_or((back, ""));
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if !matches!(k.as_ref(), "notice" | "n" | "failed") {
            q.append_pair(&k, &v);
        }
    }
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    format!("{path}?{}", q.finish())
}

/// `GET /ui/dead-letters?subscriber_id=&show=pending|all&after=&before=`.
pub async fn list(
    req: HttpRequest,
    session: Session,
    state: State,
) -> Result<HttpResponse, UiError> {
    let q = Form::query(req.query_string());
    let subscriber_id = q.int("subscriber_id")?;
    let all = q.get("show") == Some("all");
    let cursor = Cursor::of(q.int("after")?, q.int("before")?);
    let page = db(&state, move |c| {
        Ok(queries::dead_letters_page(
            c,
            subscriber_id,
            !all,
            cursor,
            PAGE,
        )?)
    })
    .await?;
    let filters = |after: Option<String>, before: Option<String>| {
        link(
            "/ui/dead-letters",
            &[
                ("subscriber_id", subscriber_id.map(|s| s.to_string())),
                ("show", all.then(|| "all".to_string())),
                ("after", after),
                ("before", before),
            ],
        )
    };
    let here = {
        let (after, before) = cursor.params();
        filters(after, before)
    };
    let to = |c: Option<Cursor>| {
        c.map(|c| {
            let (after, before) = c.params();
            filters(after, before)
        })
    };
    let index = state.cache.current();
    let body = html! {
        (layout::notice(&req))
        form.filters method="get" action="/ui/dead-letters" {
            label { "Subscriber id" input type="number" name="subscriber_id" value=[subscriber_id]; }
            label { "Show"
                select name="show" {
                    option value="pending" selected[!all] { "pending" }
                    option value="all" selected[all] { "pending and replayed" }
                }
            }
            button type="submit" { "Filter" }
            a href="/ui/dead-letters" { "Clear" }
        }
        @if let Some(sid) = subscriber_id {
            div.actions {
                span { "Subscriber " a href={ "/ui/subscribers/" (sid) } { (sid) } }
                (layout::post_button(&session, "/ui/dead-letters/replay", "Replay all pending of this subscriber", "",
                    Some("Queue every pending dead letter of this subscriber again?"),
                    &[("subscriber_id", sid.to_string()), ("back", here.clone())]))
            }
        }
        table id="dead-letters" {
            thead { tr { th.num { "Id" } th { "Dead since (UTC)" } th { "Subscriber" } th { "Topic" } th { "Message" } th.num { "Attempts" } th { "Last error" } th { "" } } }
            tbody {
                @for d in &page.rows {
                    tr {
                        td.num { (d.id) }
                        td.mono { (ts(d.created_at)) }
                        td {
                            a href={ "/ui/subscribers/" (d.subscriber_id) } { (d.subscriber_id) }
                            @if index.get(d.subscriber_id).is_some_and(|l| !l.row.enabled) { " " span.badge.bad { "disabled" } }
                        }
                        td.mono { (d.topic) }
                        td.mono { a href={ "/ui/messages/" (d.message_id) } { (d.message_id) } }
                        td.num { (d.attempts) }
                        td { (cut(&d.last_error, 160)) }
                        td {
                            @match d.replayed_at {
                                Some(t) => span.muted { "replayed " (ts(t)) },
                                None => (layout::post_button(&session, &format!("/ui/dead-letters/{}/replay", d.id), "Replay", "secondary", None,
                                    &[("back", here.clone())])),
                            }
                        }
                    }
                }
                @if page.rows.is_empty() { tr { td.muted colspan="8" { "No dead letter here." } } }
            }
        }
        (layout::pager(to(page.prev), to(page.next)))
    };
    Ok(layout::page(
        &session,
        Nav::DeadLetters,
        "Dead letters",
        body,
    ))
}

/// `POST /ui/dead-letters/{id}/replay`.
pub async fn replay_one(
    posted: Posted,
    state: State,
    id: web::Path<String>,
) -> Result<HttpResponse, UiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::NotFound(format!("no dead letter {id}")))?;
    replay_letter(&state, id).await?;
    Ok(layout::see_other(&with_notice(
        &back(&posted.form),
        &[("notice", "replayed".into())],
    )))
}

/// `POST /ui/dead-letters/replay` with `subscriber_id`: every pending dead
/// letter of that subscriber.
pub async fn replay_all(posted: Posted, state: State) -> Result<HttpResponse, UiError> {
    let subscriber_id = posted
        .form
        .int("subscriber_id")?
        .ok_or_else(|| ApiError::invalid("name the subscriber whose dead letters to replay"))?;
    let done = replay_pending(&state, Some(subscriber_id)).await?;
    let notice = [
        ("notice", "replayed_all".to_string()),
        ("n", done.replayed.to_string()),
        ("failed", done.failed.len().to_string()),
    ];
    Ok(layout::see_other(&with_notice(
        &back(&posted.form),
        &notice,
    )))
}
