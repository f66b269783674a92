//! The frame of every page (header, navigation, notices) and the small pieces
//! pages share: forms that post with the CSRF token, pagers, times.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use chrono::NaiveDateTime;
use maud::{html, Markup, DOCTYPE};
use switch_core::queue::circuit::CircuitState;

use super::assets;
use super::form::Form;
use super::session::{Session, CSRF_FIELD};

/// Which section a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Subscribers,
    Messages,
    DeadLetters,
    Tail,
}

const SECTIONS: [(Nav, &str, &str); 5] = [
    (Nav::Overview, "/ui", "Overview"),
    (Nav::Subscribers, "/ui/subscribers", "Subscribers"),
    (Nav::Messages, "/ui/messages", "Messages"),
    (Nav::DeadLetters, "/ui/dead-letters", "Dead letters"),
    (Nav::Tail, "/ui/tail", "Live tail"),
];

fn document(title: &str, header: Markup, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Switch" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href={ "/ui/assets/app.css?v=" (assets::version()) };
                script src={ "/ui/assets/app.js?v=" (assets::version()) } defer {}
            }
            body {
                (header)
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
    .into_string()
}

fn respond(status: StatusCode, html: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(html)
}

/// A page of a signed-in session.
pub fn page(session: &Session, nav: Nav, title: &str, body: Markup) -> HttpResponse {
    page_with_status(StatusCode::OK, session, nav, title, body)
}

pub fn page_with_status(
    status: StatusCode,
    session: &Session,
    nav: Nav,
    title: &str,
    body: Markup,
) -> HttpResponse {
    let header = html! {
        header.top {
            a.brand href="/ui" { "Switch" }
            nav {
                @for (section, href, label) in SECTIONS {
                    @if section == nav {
                        a.active href=(href) aria-current="page" { (label) }
                    } @else {
                        a href=(href) { (label) }
                    }
                }
            }
            form.sign-out method="post" action="/ui/logout" {
                (csrf(session))
                span.who { (session.who()) }
                button.link type="submit" { "Sign out" }
            }
        }
    };
    respond(status, document(title, header, body))
}

/// A page without a session: the sign-in form, errors.
pub fn bare(status: StatusCode, title: &str, body: Markup) -> HttpResponse {
    let header = html! {
        header.top { a.brand href="/ui" { "Switch" } }
    };
    respond(status, document(title, header, body))
}

/// After a form: on to `location` (a GET, so reloading repeats nothing).
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// The hidden field that carries the session's CSRF token.
pub fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(session.csrf); }
}

/// A one-button form posting to `action`, with the CSRF token and `fields`;
/// with `confirm`, the script asks first.
pub fn post_button(
    session: &Session,
    action: &str,
    label: &str,
    class: &str,
    confirm: Option<&str>,
    fields: &[(&str, String)],
) -> Markup {
    html! {
        form.inline method="post" action=(action) data-confirm=[confirm] {
            (csrf(session))
            @for (name, value) in fields {
                input type="hidden" name=(name) value=(value);
            }
            button class=(class) type="submit" { (label) }
        }
    }
}

/// Links to the previous and next pages, where there are.
pub fn pager(prev: Option<String>, next: Option<String>) -> Markup {
    html! {
        nav.pager {
            @if let Some(p) = prev { a.prev href=(p) rel="prev" { "← Previous" } }
            @else { span.disabled { "← Previous" } }
            @if let Some(n) = next { a.next href=(n) rel="next" { "Next →" } }
            @else { span.disabled { "Next →" } }
        }
    }
}

/// A notice after a form: from a fixed list, so a link cannot make the
/// dashboard say anything else.
pub fn notice(req: &HttpRequest) -> Markup {
    let q = Form::query(req.query_string());
    let text = match q.get("notice") {
        Some("created") => "Subscriber created.".to_string(),
        Some("saved") => "Changes saved.".to_string(),
        Some("enabled") => "Subscriber enabled: its deliveries start afresh.".to_string(),
        Some("disabled") => "Subscriber disabled: it gets no new jobs.".to_string(),
        Some("rotated") => {
            "New secret made; the old one keeps signing beside it for 24 hours.".to_string()
        }
        Some("deleted") => "Subscriber deleted.".to_string(),
        Some("replayed") => {
            "Dead letter replayed: its message is queued again for its subscriber.".to_string()
        }
        Some("replayed_all") => {
            let n: u64 = q.get("n").and_then(|n| n.parse().ok()).unwrap_or(0);
            let failed: u64 = q.get("failed").and_then(|n| n.parse().ok()).unwrap_or(0);
            let mut t = format!("{n} dead letter{} replayed.", if n == 1 { "" } else { "s" });
            if failed > 0 {
                t.push_str(&format!(
                    " {failed} could not be replayed and stay pending."
                ));
            }
            t
        }
        _ => return html! {},
    };
    html! { p.notice role="status" { (text) } }
}

/// A circuit state as a coloured badge.
pub fn circuit_badge(state: CircuitState) -> Markup {
    let class = match state {
        CircuitState::Closed => "badge ok",
        CircuitState::HalfOpen => "badge warn",
        CircuitState::Open => "badge bad",
    };
    html! { span class=(class) { (state.as_str()) } }
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

/// A stored time, in UTC to the millisecond.
pub fn ts(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

/// A duration in milliseconds, in the largest unit that keeps it readable.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{:.1} min", ms as f64 / 60_000.0),
        3_600_000..=172_799_999 => format!("{:.1} h", ms as f64 / 3_600_000.0),
        _ => format!("{:.1} days", ms as f64 / 86_400_000.0),
    }
}

/// A number with thousands separators.
pub fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// `text` cut to `max` characters, with an ellipsis when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max).collect();
        s.push('…');
        s
    }
}

/// JSON text, indented for reading (as it was when it is not JSON).
pub fn pretty_json(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_durations_read_well() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(100_000), "100,000");
        assert_eq!(count(-1_234_567), "-1,234,567");
        assert_eq!(duration(12), "12 ms");
        assert_eq!(duration(1_500), "1.5 s");
        assert_eq!(duration(90_000), "1.5 min");
        assert_eq!(duration(7_200_000), "2.0 h");
        assert_eq!(cut("abcdef", 3), "abc…");
        assert_eq!(cut("abc", 3), "abc");
    }
}
