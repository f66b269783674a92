//! `/ui/subscribers`: the list (keyset pages, search), and one subscriber's
//! page: edit, enable or disable, rotate its secret, try a filter, delete.
//! Forms are validated and saved by the API's own code
//! (`routes::subscribers`), so both accept and refuse the same things.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use maud::{html, Markup};
use serde_json::{Map, Value};
use switch_core::db::models::{DeliveryAttempt, Subscriber};
use switch_core::db::repo;
use switch_core::queue::circuit::CircuitState;

use super::error::UiError;
use super::form::{link, Form};
use super::layout::{self, count, cut, ts, Nav};
use super::overview::circuit_badge;
use super::queries::{self, Cursor};
use super::session::{Posted, Session};
use crate::error::ApiError;
use crate::routes::subscribers as api;
use crate::routes::{db, State};

/// Subscribers per page.
const PAGE: i64 = 50;
/// Attempts shown on a subscriber's page.
const RECENT_ATTEMPTS: i64 = 10;

/// The circuit states of some subscribers (closed when Redis has none, or
/// cannot be reached): one round trip, whatever the number of circuits.
async fn circuit_states(state: &State, ids: &[i64]) -> HashMap<i64, CircuitState> {
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

fn status_badge(s: &Subscriber) -> Markup {
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
struct Fields {
    topic: String,
    target_url: String,
    filter_expression: String,
    description: String,
    max_in_flight: String,
    enabled: bool,
}

impl Fields {
    fn of_row(s: &Subscriber) -> Fields {
        Fields {
            topic: s.topic.clone(),
            target_url: s.target_url.clone(),
            filter_expression: s.filter_expression.clone().unwrap_or_default(),
            description: s.description.clone().unwrap_or_default(),
            max_in_flight: s.max_in_flight.map(|n| n.to_string()).unwrap_or_default(),
            enabled: s.enabled,
        }
    }

    fn of_form(f: &Form) -> Fields {
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
    fn body(&self, creating: bool) -> Result<Map<String, Value>, ApiError> {
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

fn fields_form(
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

fn parse_id(raw: &str) -> Result<i64, UiError> {
    raw.parse()
        .map_err(|_| UiError::Api(ApiError::NotFound(format!("no subscriber {raw}"))))
}

async fn load(state: &State, id: i64) -> Result<(Subscriber, Vec<DeliveryAttempt>), UiError> {
    let (row, attempts) = db(state, move |c| {
        let mut row = repo::get_subscriber(c, id)?;
        repo::fill_missing_secrets(c, row.as_mut_slice())?;
        let attempts = match row {
            Some(_) => queries::recent_attempts(c, id, RECENT_ATTEMPTS)?,
            None => Vec::new(),
        };
        Ok((row, attempts))
    })
    .await?;
    let row = row.ok_or_else(|| ApiError::NotFound(format!("no subscriber {id}")))?;
    Ok((row, attempts))
}

/// A filter tried on the page: what was typed, and what came of it.
struct Trial {
    filter: String,
    message: String,
    outcome: Result<(bool, String), String>,
}

/// What a subscriber's page shows beside the row itself.
#[derive(Default)]
struct Extras {
    fields: Option<Fields>,
    error: Option<ApiError>,
    trial: Option<Trial>,
}

async fn detail(
    req: &HttpRequest,
    session: &Session,
    state: &State,
    id: i64,
    extras: Extras,
) -> Result<HttpResponse, UiError> {
    let (row, attempts) = load(state, id).await?;
    let circuit = circuit_states(state, &[id])
        .await
        .get(&id)
        .copied()
        .unwrap_or_default();
    let load_error = state.cache.current().get(id).and_then(|l| l.load_error());
    let fields = extras.fields.unwrap_or_else(|| Fields::of_row(&row));
    let action = format!("/ui/subscribers/{id}");
    let status = extras
        .error
        .as_ref()
        .map_or(StatusCode::OK, |e| e.status_code());
    let default_message = "{\"topic\": \"orders.created\", \"body\": {\"total\": 150}}";
    let (trial_filter, trial_message) = match &extras.trial {
        Some(t) => (t.filter.clone(), t.message.clone()),
        None => (
            row.filter_expression.clone().unwrap_or_default(),
            default_message.to_string(),
        ),
    };
    let body = html! {
        (layout::notice(req))
        @if let Some(e) = &extras.error { p.error { (e) } }
        @if let Some(e) = &load_error { p.error { "This subscriber gets no jobs: " (e) } }
        div.split {
            div {
                h2 { "State" }
                div.card {
                    dl.fields {
                        dt { "Id" } dd { (row.id) }
                        dt { "State" } dd { (status_badge(&row)) }
                        dt { "Circuit" } dd { (circuit_badge(circuit)) }
                        dt { "Created" } dd { (ts(row.created_at)) }
                        dt { "Updated" } dd { (ts(row.updated_at)) }
                        dt { "Secret" } dd { details { summary { "Show" } code #secret { (row.secret.as_deref().unwrap_or("")) } } }
                    }
                    div.actions {
                        @if row.enabled {
                            (layout::post_button(session, &format!("{action}/enabled"), "Disable", "secondary", None, &[("enabled", "false".into())]))
                        } @else {
                            (layout::post_button(session, &format!("{action}/enabled"), "Enable", "", None, &[("enabled", "true".into())]))
                        }
                        (layout::post_button(session, &format!("{action}/rotate-secret"), "Rotate secret", "secondary",
                            Some("Make a new secret? The old one keeps signing beside it for 24 hours."), &[]))
                        a.button.secondary href={ "/ui/dead-letters?subscriber_id=" (row.id) } { "Dead letters" }
                        (layout::post_button(session, &format!("{action}/delete"), "Delete", "danger",
                            Some("Delete this subscriber? Its queued jobs will find no subscriber."), &[]))
                    }
                }
                h2 { "Try a filter" }
                form.stacked.card method="post" action={ (action) "/test-filter" } {
                    (layout::csrf(session))
                    label for="trial_filter" { "Filter" }
                    textarea #trial_filter name="filter_expression" rows="2" { (trial_filter) }
                    label for="trial_message" { "Message (a publish body: topic, body, headers, query_params, path_params, http_method)" }
                    textarea #trial_message name="message" rows="5" { (trial_message) }
                    div.actions { button.secondary type="submit" { "Test" } }
                    @if let Some(t) = &extras.trial {
                        @match &t.outcome {
                            Ok((true, compiled)) => p.result.yes #trial-result { "Matches. " span.muted.mono { (compiled) } },
                            Ok((false, compiled)) => p.result.no #trial-result { "Does not match. " span.muted.mono { (compiled) } },
                            Err(e) => p.error #trial-result { (e) },
                        }
                    }
                }
            }
            div {
                h2 { "Settings" }
                (fields_form(session, &action, &fields, false, "Save changes"))
            }
        }
        h2 { "Latest attempts" }
        table {
            thead { tr { th { "Time (UTC)" } th { "Message" } th.num { "Attempt" } th { "Outcome" } th.num { "Status" } th { "Error" } th.num { "Duration" } } }
            tbody {
                @for a in &attempts {
                    tr {
                        td.mono { (ts(a.created_at)) }
                        td.mono { a href={ "/ui/messages/" (a.message_id) } { (a.message_id) } }
                        td.num { (a.attempt) }
                        td { (outcome_badge(&a.outcome)) }
                        td.num { (a.http_status.map(|s| s.to_string()).unwrap_or_default()) }
                        td { (a.error_kind.as_deref().unwrap_or("")) " " span.muted { (cut(a.error.as_deref().unwrap_or(""), 120)) } }
                        td.num { (a.duration_ms) " ms" }
                    }
                }
                @if attempts.is_empty() { tr { td.muted colspan="7" { "No attempts yet." } } }
            }
        }
    };
    let title = format!("Subscriber {id} · {}", row.topic);
    Ok(layout::page_with_status(
        status,
        session,
        Nav::Subscribers,
        &title,
        body,
    ))
}

/// A delivery outcome or state as a coloured badge.
pub fn outcome_badge(outcome: &str) -> Markup {
    let class = match outcome {
        "delivered" => "badge ok",
        "dead" => "badge bad",
        "failed" => "badge warn",
        _ => "badge",
    };
    html! { span class=(class) { (outcome) } }
}

/// `GET /ui/subscribers/{id}`.
pub async fn show(
    req: HttpRequest,
    session: Session,
    state: State,
    id: web::Path<String>,
) -> Result<HttpResponse, UiError> {
    let id = parse_id(&id)?;
    detail(&req, &session, &state, id, Extras::default()).await
}

/// `POST /ui/subscribers/{id}`: the settings form.
pub async fn update(
    req: HttpRequest,
    posted: Posted,
    state: State,
    id: web::Path<String>,
) -> Result<HttpResponse, UiError> {
    let id = parse_id(&id)?;
    let fields = Fields::of_form(&posted.form);
    let saved = async {
        let changes = api::subscriber_changes(&fields.body(false)?, &state.targets)?;
        api::apply_changes(&state, id, changes).await
    }
    .await;
    match saved {
        Ok(_) => Ok(layout::see_other(&format!(
            "/ui/subscribers/{id}?notice=saved"
        ))),
        Err(
            e @ (ApiError::InvalidRequest { .. }
            | ApiError::TargetNotAllowed(_)
            | ApiError::Conflict(_)),
        ) => {
            let extras = Extras {
                fields: Some(fields),
                error: Some(e),
                trial: None,
            };
            detail(&req, &posted.session, &state, id, extras).await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /ui/subscribers/{id}/enabled` with `enabled=true|false`.
pub async fn set_enabled(
    posted: Posted,
    state: State,
    id: web::Path<String>,
) -> Result<HttpResponse, UiError> {
    let id = parse_id(&id)?;
    let enabled = posted.form.get("enabled") == Some("true");
    let mut m = Map::new();
    m.insert("enabled".into(), Value::Bool(enabled));
    let changes = api::subscriber_changes(&m, &state.targets)?;
    api::apply_changes(&state, id, changes).await?;
    let notice = if enabled { "enabled" } else { "disabled" };
    Ok(layout::see_other(&format!(
        "/ui/subscribers/{id}?notice={notice}"
    )))
}

/// `POST /ui/subscribers/{id}/rotate-secret`.
pub async fn rotate_secret(
    _: Posted,
    state: State,
    id: web::Path<String>,
) -> Result<HttpResponse, UiError> {
    let id = parse_id(&id)?;
    api::rotate(&state, id).await?;
    Ok(layout::see_other(&format!(
        "/ui/subscribers/{id}?notice=rotated"
    )))
}

/// `POST /ui/subscribers/{id}/test-filter`: whether a filter matches a
/// pasted message, as `POST /filters/test` answers; nothing is saved.
pub async fn test_filter(
    req: HttpRequest,
    posted: Posted,
    state: State,
    id: web::Path<String>,
) -> Result<HttpResponse, UiError> {
    let id = parse_id(&id)?;
    let filter = posted
        .form
        .get("filter_expression")
        .unwrap_or("")
        .to_string();
    let message = posted.form.get("message").unwrap_or("").to_string();
    let outcome = match serde_json::from_str::<Value>(if message.trim().is_empty() {
        "{}"
    } else {
        &message
    }) {
        Err(e) => Err(format!("The message is not JSON: {e}")),
        Ok(m) => crate::routes::filters::try_filter(
            Some(filter.as_str()).filter(|f| !f.trim().is_empty()),
            Some(m),
            posted.session.principal.author.clone(),
        )
        .map_err(|e| e.to_string()),
    };
    let extras = Extras {
        trial: Some(Trial {
            filter,
            message,
            outcome,
        }),
        ..Default::default()
    };
    detail(&req, &posted.session, &state, id, extras).await
}

/// `POST /ui/subscribers/{id}/delete`.
pub async fn delete(
    _: Posted,
    state: State,
    id: web::Path<String>,
) -> Result<HttpResponse, UiError> {
    let id = parse_id(&id)?;
    if !db(&state, move |c| Ok(repo::delete_subscriber(c, id)?)).await? {
        return Err(ApiError::NotFound(format!("no subscriber {id}")).into());
    }
    state.subscribers_changed().await?;
    tracing::info!(subscriber_id = id, "subscriber deleted from the dashboard");
    Ok(layout::see_other("/ui/subscribers?notice=deleted"))
}
