//! `/ui/subscribers`: the list (keyset pages, search) and the form that
//! creates one. Forms are validated and saved by the API's own code
//! (`routes::subscribers`), so both accept and refuse the same things.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use maud::{html, Markup};
use serde_json::{Map, Value};
use switch_core::db::models::Subscriber;
use switch_core::queue::circuit::CircuitState;

use super::error::UiError;
use super::form::{link, Form};
use super::keyset::Cursor;
use super::layout::{self, circuit_badge, count, cut, Nav};
use super::queries;
use super::session::{Posted, Session};
use crate::error::ApiError;
use crate::routes::subscribers as api;
use crate::routes::{db, State};

/// Subscribers per page.
const PAGE: i64 = 50;

/// The circuit states of some subscribers (closed when Redis has none, or
/// cannot be reached): one round trip, whatever the number of circuits.
pub(super) async fn circuit_states(state: &State, ids: &[i64]) -> HashMap<i64, CircuitState> {
    if ids.is_empty() {
        return HashMap::new();
    }
    let Ok(mut conn) = state.queue.redis().get().await else {
        return HashMap::new();
    };
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.cmd("HGET")
            .arg(state.queue.keys.circuit(*id))
            .arg("st");
    }
    let states: Vec<Option<String>> = pipe.query_async(&mut conn).await.unwrap_or_default();
    ids.iter()
        .zip(states)
        .map(|(id, st)| {
            let state = match st.as_deref() {
                Some("open") => CircuitState::Open,
                Some("half_open") => CircuitState::HalfOpen,
                _ => CircuitState::Closed,
            };
            (*id, state)
        })
        .collect()
}

pub(super) fn status_badge(s: &Subscriber) -> Markup {
    html! {
        @if s.enabled {
            span.badge.ok { "enabled" }
        } @else {
            span.badge.bad {
                "disabled"
                @if let Some(r) = &s.disabled_reason { " (" (r) ")" }
            }
        }
    }
}

/// `GET /ui/subscribers?q=&after=&before=`.
pub async fn list(
    req: HttpRequest,
    session: Session,
    state: State,
) -> Result<HttpResponse, UiError> {
    let q = Form::query(req.query_string());
    let search = q.text("q");
    let cursor = Cursor::of(q.int("after")?, q.int("before")?);
    let term = search.clone();
    let (page, (all, _)) = db(&state, move |c| {
        let page = queries::subscribers_page(c, term.as_deref(), cursor, PAGE)?;
        Ok((page, queries::subscriber_counts(c)?))
    })
    .await?;
    let ids: Vec<i64> = page.rows.iter().map(|s| s.id).collect();
    let circuits = circuit_states(&state, &ids).await;
    let to = |c: Option<Cursor>| {
        c.map(|c| {
            let (after, before) = c.params();
            link(
                "/ui/subscribers",
                &[("q", search.clone()), ("after", after), ("before", before)],
            )
        })
    };
    let body = html! {
        (layout::notice(&req))
        form.filters method="get" action="/ui/subscribers" {
            label { "Search topic, target, description or id"
                input type="text" name="q" value=[search.as_deref()] placeholder="orders.*";
            }
            button type="submit" { "Search" }
            @if search.is_some() { a href="/ui/subscribers" { "Clear" } }
            span.muted { (count(all)) " subscribers in all" }
            a.button.secondary href="/ui/subscribers/new" { "New subscriber" }
        }
        table #subscribers {
            thead { tr { th.num { "Id" } th { "Topic" } th { "Target URL" } th { "Filter" } th { "State" } th { "Circuit" } th { "Description" } } }
            tbody {
                @for s in &page.rows {
                    tr {
                        td.num { a href={ "/ui/subscribers/" (s.id) } { (s.id) } }
                        td.mono { (s.topic) }
                        td.mono.wrap { (cut(&s.target_url, 80)) }
                        td.mono { (cut(s.filter_expression.as_deref().unwrap_or(""), 60)) }
                        td { (status_badge(s)) }
                        td { (circuit_badge(circuits.get(&s.id).copied().unwrap_or_default())) }
                        td { (cut(s.description.as_deref().unwrap_or(""), 60)) }
                    }
                }
                @if page.rows.is_empty() {
                    tr { td.muted colspan="7" { "No subscriber matches." } }
                }
            }
        }
        (layout::pager(to(page.prev), to(page.next)))
    };
    Ok(layout::page(
        &session,
        Nav::Subscribers,
        "Subscribers",
        body,
    ))
}

/// What the edit and create forms hold, as typed.
#[derive(Default)]
pub(super) struct Fields {
    topic: String,
    target_url: String,
    filter_expression: String,
    description: String,
    max_in_flight: String,
    enabled: bool,
}

impl Fields {
    pub(super) fn of_row(s: &Subscriber) -> Fields {
        Fields {
            topic: s.topic.clone(),
            target_url: s.target_url.clone(),
            filter_expression: s.filter_expression.clone().unwrap_or_default(),
            description: s.description.clone().unwrap_or_default(),
            max_in_flight: s.max_in_flight.map(|n| n.to_string()).unwrap_or_default(),
            enabled: s.enabled,
        }
    }

    pub(super) fn of_form(f: &Form) -> Fields {
        let get = |k: &str| f.get(k).unwrap_or("").to_string();
        Fields {
            topic: get("topic"),
            target_url: get("target_url"),
            filter_expression: get("filter_expression"),
            description: get("description"),
            max_in_flight: get("max_in_flight"),
            enabled: f.get("enabled").is_some(),
        }
    }

    /// The API body these fields make: blank optional fields are null.
    pub(super) fn body(&self, creating: bool) -> Result<Map<String, Value>, ApiError> {
        let mut m = Map::new();
        let optional = |v: &str| match v.trim() {
            "" => Value::Null,
            t => Value::String(t.to_string()),
        };
        m.insert("topic".into(), Value::String(self.topic.trim().to_string()));
        m.insert(
            "target_url".into(),
            Value::String(self.target_url.trim().to_string()),
        );
        m.insert(
            "filter_expression".into(),
            optional(&self.filter_expression),
        );
        m.insert("description".into(), optional(&self.description));
        let max = match self.max_in_flight.trim() {
            "" => Value::Null,
            n => Value::from(n.parse::<i64>().map_err(|_| {
                ApiError::invalid(
                    "`max_in_flight` must be a whole number, or empty for the hub's default",
                )
            })?),
        };
        m.insert("max_in_flight".into(), max);
        if creating {
            m.insert("enabled".into(), Value::Bool(self.enabled));
        }
        Ok(m)
    }
}

pub(super) fn fields_form(
    session: &Session,
    action: &str,
    f: &Fields,
    creating: bool,
    submit: &str,
) -> Markup {
    html! {
        form.stacked.card method="post" action=(action) {
            (layout::csrf(session))
            label for="topic" { "Topic pattern" }
            input #topic type="text" name="topic" value=(f.topic) required placeholder="orders.*";
            p.hint { "Segments joined by dots; " code { "*" } " is one segment, " code { "#" } " zero or more." }
            label for="target_url" { "Target URL" }
            input #target_url type="text" name="target_url" value=(f.target_url) required placeholder="https://example.com/hooks/:id";
            label for="filter_expression" { "Filter" }
            textarea #filter_expression name="filter_expression" rows="2" placeholder="body.total > 100" { (f.filter_expression) }
            p.hint { "Empty: every message of the topic. Legacy " code { "data[\"body\"][\"x\"]" } " filters are translated when saved." }
            label for="description" { "Description" }
            input #description type="text" name="description" value=(f.description);
            label for="max_in_flight" { "Most deliveries in flight per worker" }
            input #max_in_flight type="number" min="1" name="max_in_flight" value=(f.max_in_flight) placeholder="the hub's default";
            @if creating {
                label.checkbox { input type="checkbox" name="enabled" value="true" checked[f.enabled]; "Enabled" }
            }
            div.actions { button type="submit" { (submit) } }
        }
    }
}

/// `GET /ui/subscribers/new`.
pub async fn new_form(session: Session) -> HttpResponse {
    let fields = Fields {
        enabled: true,
        ..Default::default()
    };
    new_page(&session, &fields, None)
}

fn new_page(session: &Session, fields: &Fields, error: Option<&ApiError>) -> HttpResponse {
    let status = error.map_or(StatusCode::OK, |e| e.status_code());
    let body = html! {
        @if let Some(e) = error { p.error { (e) } }
        (fields_form(session, "/ui/subscribers", fields, true, "Create subscriber"))
    };
    layout::page_with_status(status, session, Nav::Subscribers, "New subscriber", body)
}

/// `POST /ui/subscribers`.
pub async fn create(posted: Posted, state: State) -> Result<HttpResponse, UiError> {
    let fields = Fields::of_form(&posted.form);
    let saved = async {
        let new = api::new_subscriber(&fields.body(true)?, &state.targets)?;
        api::insert(&state, new).await
    }
    .await;
    match saved {
        Ok(row) => Ok(layout::see_other(&format!(
            "/ui/subscribers/{}?notice=created",
            row.id
        ))),
        Err(
            e @ (ApiError::InvalidRequest { .. }
            | ApiError::TargetNotAllowed(_)
            | ApiError::Conflict(_)),
        ) => Ok(new_page(&posted.session, &fields, Some(&e))),
        Err(e) => Err(e.into()),
    }
}
