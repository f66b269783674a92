//! `/ui/subscribers/{id}`: one subscriber: edit, enable or disable, rotate its
//! secret, try a filter on a pasted message, delete; its latest attempts.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use maud::html;
use serde_json::{Map, Value};
use switch_core::db::models::{DeliveryAttempt, Subscriber};
use switch_core::db::repo;

use super::error::UiError;
use super::layout::{self, circuit_badge, cut, outcome_badge, ts, Nav};
use super::queries;
use super::session::{Posted, Session};
use super::subscribers::{circuit_states, fields_form, status_badge, Fields};
use crate::error::ApiError;
use crate::routes::subscribers as api;
use crate::routes::{db, State};

/// Attempts shown on a subscriber's page.
const RECENT_ATTEMPTS: i64 = 10;

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
