//! `/ui`: the hub at a glance (or the sign-in form, without a session).
//! Publish and delivery rates come from the hub-wide counters in Redis: the
//! page's script polls them and divides the change by the time between polls.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use maud::html;
use serde_json::json;
use switch_core::queue::circuit::{Circuit, CircuitState};

use super::error::UiError;
use super::form::Form;
use super::layout::{self, circuit_badge, count, duration, Nav};
use super::queries;
use super::session::{removal_cookie, sign_in_page, Session};
use crate::error::ApiError;
use crate::routes::{db, State};

/// Failing subscribers listed on the overview, worst first.
const FAILING_SHOWN: usize = 20;
/// Pending dead letters counted exactly up to this.
const DEAD_LETTER_COUNT_CAP: i64 = 10_000;

/// The hub's figures at one moment.
struct Figures {
    at_ms: i64,
    published: i64,
    matched: i64,
    delivered: i64,
    failed: i64,
    dead: i64,
    ready: u64,
    delayed: u64,
    oldest_age_ms: Option<i64>,
}

async fn figures(state: &State) -> Result<Figures, ApiError> {
    let totals = state.queue.hub_stats().await?;
    let (ready, delayed) = state.queue.depth().await?;
    let at_ms = chrono::Utc::now().timestamp_millis();
    let oldest_age_ms = state.queue.oldest_age_ms(at_ms).await?;
    let get = |k: &str| totals.get(k).copied().unwrap_or(0);
    Ok(Figures {
        at_ms,
        published: get("published"),
        matched: get("matched"),
        delivered: get("outcome:delivered"),
        failed: get("outcome:failed"),
        dead: get("outcome:dead"),
        ready,
        delayed,
        oldest_age_ms,
    })
}

/// `GET /ui/overview/stats`: the figures as JSON, for the page's script.
pub async fn stats(_: Session, state: State) -> Result<HttpResponse, UiError> {
    let f = figures(&state).await?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "at_ms": f.at_ms,
            "published": f.published,
            "matched": f.matched,
            "delivered": f.delivered,
            "failed": f.failed,
            "dead": f.dead,
            "ready": f.ready,
            "delayed": f.delayed,
            "oldest_age_ms": f.oldest_age_ms,
        })))
}

/// `GET /ui`: the overview, or the sign-in form.
pub async fn page(req: HttpRequest, state: State) -> Result<HttpResponse, UiError> {
    let session = match Session::of(&req) {
        Ok((session, _)) => session,
        Err(UiError::SignIn { ended, .. }) => {
            let q = Form::query(req.query_string());
            let why = (ended || q.get("ended").is_some()).then_some(
                "Your session ended: its token expired, was revoked or lost the admin scope. Sign in again.",
            );
            let mut answer = sign_in_page(StatusCode::OK, q.get("next").unwrap_or(""), why);
            if ended {
                let _ = answer.add_cookie(&removal_cookie());
            }
            return Ok(answer);
        }
        Err(e) => return Err(e),
    };
    let figures = figures(&state).await;
    let circuits = state.queue.circuits().await;
    let counts = db(&state, |c| {
        let (all, enabled) = queries::subscriber_counts(c)?;
        let dead = queries::pending_dead_letters(c, DEAD_LETTER_COUNT_CAP)?;
        Ok((all, enabled, dead))
    })
    .await;
    let index = state.cache.current();
    let mut failing: Vec<(i64, Circuit)> = match &circuits {
        Ok(c) => c
            .iter()
            .filter(|(_, c)| c.failures > 0 || c.state != CircuitState::Closed)
            .map(|(id, c)| (*id, *c))
            .collect(),
        Err(_) => Vec::new(),
    };
    failing.sort_by_key(|(id, c)| (c.state == CircuitState::Closed, -c.failures, *id));
    let open = failing
        .iter()
        .filter(|(_, c)| c.state != CircuitState::Closed)
        .count();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let body = html! {
        (layout::notice(&req))
        @match &figures {
            Err(e) => p.error { "The queue cannot be read: " (e) },
            Ok(f) => {
                section #stats data-src="/ui/overview/stats" {
                    div.grid {
                        div.stat {
                            div.label { "Publish rate" }
                            div.value data-rate="published" { "…" }
                            div.sub { span data-stat="published" { (count(f.published)) } " messages in all" }
                        }
                        div.stat {
                            div.label { "Delivery rate" }
                            div.value data-rate="delivered" { "…" }
                            div.sub { span data-stat="delivered" { (count(f.delivered)) } " delivered in all" }
                        }
                        div.stat {
                            div.label { "Failure rate" }
                            div.value data-rate="failed+dead" { "…" }
                            div.sub {
                                span data-stat="failed" { (count(f.failed)) } " failed, "
                                span data-stat="dead" { (count(f.dead)) } " dead in all"
                            }
                        }
                        div.stat {
                            div.label { "Matches" }
                            div.value data-stat="matched" { (count(f.matched)) }
                            div.sub { "jobs made by publishes" }
                        }
                    }
                    div.grid {
                        div.stat {
                            div.label { "Queue: ready" }
                            div.value data-stat="ready" { (count(f.ready as i64)) }
                            div.sub { "jobs in the stream" }
                        }
                        div.stat {
                            div.label { "Queue: delayed" }
                            div.value data-stat="delayed" { (count(f.delayed as i64)) }
                            div.sub { "retries waiting for their time" }
                        }
                        div.stat {
                            div.label { "Oldest pending job" }
                            div.value data-stat="oldest_age_ms" {
                                @match f.oldest_age_ms {
                                    Some(ms) => (duration(ms)),
                                    None => "none waiting",
                                }
                            }
                            div.sub { "age of the oldest job in the stream" }
                        }
                        div.stat {
                            div.label { "Live tail clients" }
                            div.value { (count(state.live.clients() as i64)) }
                            div.sub { "on this server" }
                        }
                    }
                }
            }
        }
        h2 { "Subscribers" }
        @match &counts {
            Err(e) => p.error { "The database cannot be read: " (e) },
            Ok((all, enabled, dead)) => {
                div.grid {
                    div.stat {
                        div.label { "Subscribers" }
                        div.value { (count(*all)) }
                        div.sub { (count(*enabled)) " enabled, " (count(all - enabled)) " disabled" }
                    }
                    div.stat {
                        div.label { "Failing" }
                        div.value { (failing.len()) }
                        div.sub { "with failed attempts since their last success" }
                    }
                    div.stat {
                        div.label { "Open circuits" }
                        div.value { (open) }
                        div.sub { "jobs held until a probe succeeds" }
                    }
                    div.stat {
                        div.label { "Pending dead letters" }
                        div.value {
                            a href="/ui/dead-letters" {
                                (count(*dead.min(&DEAD_LETTER_COUNT_CAP)))
                                @if *dead > DEAD_LETTER_COUNT_CAP { "+" }
                            }
                        }
                        div.sub { "waiting for a replay" }
                    }
                }
            }
        }
        @if circuits.is_err() {
            p.error { "Circuit states cannot be read from Redis." }
        }
        @if !failing.is_empty() {
            h2 { "Failing and open-circuit subscribers" }
            table {
                thead { tr { th { "Subscriber" } th { "Topic" } th { "Circuit" } th.num { "Failures in a row" } th { "Failing for" } th { "Next probe" } } }
                tbody {
                    @for (id, c) in failing.iter().take(FAILING_SHOWN) {
                        tr {
                            td { a href={ "/ui/subscribers/" (id) } { (id) } }
                            td.mono { (index.get(*id).map(|l| l.row.topic.clone()).unwrap_or_else(|| "(deleted)".into())) }
                            td { (circuit_badge(c.state)) }
                            td.num { (c.failures) }
                            td { (c.failing_since_ms.map(|s| duration(now_ms - s)).unwrap_or_default()) }
                            td {
                                @if c.state == CircuitState::Open {
                                    (c.probe_at_ms.map(|p| if p > now_ms { format!("in {}", duration(p - now_ms)) } else { "due".into() }).unwrap_or_default())
                                }
                            }
                        }
                    }
                }
            }
            @if failing.len() > FAILING_SHOWN {
                p.muted { "and " (failing.len() - FAILING_SHOWN) " more" }
            }
        }
    };
    Ok(layout::page(&session, Nav::Overview, "Overview", body))
}
