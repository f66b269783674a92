//! The dashboard at `/ui`: sign-in and sessions, CSRF, the forms doing what
//! the API does, keyset pages, and a page of 100,000 subscribers in time.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    signs_in_with_an_admin_token_only,
    sessions_end_when_the_token_does,
    forms_without_the_sessions_csrf_token_are_refused,
    subscribers_are_created_edited_and_disabled_through_forms,
    a_dead_letter_is_replayed_from_the_dashboard,
    a_message_page_shows_deliveries_explain_and_the_live_tail,
    pages_follow_each_other_without_overlap,
    a_hundred_thousand_subscribers_page_quickly,
);

/// An answer as a browser sees it (redirects not followed).
struct Answer {
    status: u16,
    location: Option<String>,
    set_cookies: Vec<String>,
    content_type: String,
    csp: Option<String>,
    body: String,
}

/// A browser without JavaScript: one session cookie, forms posted by hand.
struct Browser {
    base: String,
    http: reqwest::Client,
    cookie: Option<String>,
}

impl Browser {
    fn new(app: &TestApp) -> Browser {
        Browser {
            base: app.base.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    /// The same session, through another server.
    fn via(&self, app: &TestApp) -> Browser {
        Browser {
            cookie: self.cookie.clone(),
            ..Browser::new(app)
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let req = match &self.cookie {
            Some(c) => req.header("Cookie", format!("switch_session={c}")),
            None => req,
        };
        let resp = req.send().await.expect("request sent");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        Answer {
            status: resp.status().as_u16(),
            location: header("location"),
            content_type: header("content-type").unwrap_or_default(),
            csp: header("content-security-policy"),
            set_cookies: resp
                .headers()
                .get_all("set-cookie")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect(),
            body: resp.text().await.unwrap_or_default(),
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body),
        )
        .await
    }

    /// Signs in; keeps the session cookie when one is set.
    async fn sign_in(&mut self, token: &str) -> Answer {
        let a = self.post("/ui/login", &[("token", token)]).await;
        if let Some(v) = session_cookie(&a) {
            self.cookie = Some(v);
        }
        a
    }

    /// The CSRF token of the session, as its pages carry it.
    async fn csrf(&self) -> String {
        let page = self.get("/ui/subscribers/new").await;
        assert_eq!(page.status, 200, "{}", page.body);
        csrf_of(&page.body)
    }
}

fn session_cookie(a: &Answer) -> Option<String> {
    a.set_cookies.iter().find_map(|c| {
        c.strip_prefix("switch_session=")
            .map(|rest| rest.split(';').next().unwrap_or("").to_string())
            .filter(|v| !v.is_empty())
    })
}

fn csrf_of(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .expect("a form with a CSRF token");
    let rest = &html[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// The numbers `N` of every `href="{prefix}N"` in the table with this id.
fn linked_ids(html: &str, table: &str, prefix: &str) -> Vec<String> {
    let start = html
        .find(&format!(r#"<table id="{table}""#))
        .unwrap_or_else(|| panic!("no table {table}"));
    let end = start + html[start..].find("</table>").unwrap();
    let mut out = Vec::new();
    let mut rest = &html[start..end];
    let mark = format!(r#"href="{prefix}"#);
    while let Some(at) = rest.find(&mark) {
        rest = &rest[at + mark.len()..];
        let id = &rest[..rest.find('"').unwrap()];
        if out.last().map(String::as_str) != Some(id) {
            out.push(id.to_string());
        }
    }
    out
}

/// The `href` of the pager link `rel` (`prev` or `next`), unescaped.
fn pager_link(html: &str, rel: &str) -> Option<String> {
    let at = html.find(&format!(r#"rel="{rel}""#))?;
    let start = html[..at].rfind("href=\"")? + 6;
    let end = start + html[start..].find('"')?;
    Some(html[start..end].replace("&amp;", "&"))
}

/// Inserts `n` subscribers in one statement, as an operator seeding by SQL would.
fn bulk_subscribers(db: &TestDb, backend: Backend, n: usize, prefix: &str) {
    let columns = "INSERT INTO subscribers (topic, target_url, secret, description)";
    let values = format!(
        "SELECT '{prefix}.' || i, 'http://127.0.0.1:9/hook/' || i, \
         'whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3', 'bulk subscriber ' || i"
    );
    db.sql(&match backend {
        Backend::Sqlite => format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
             {columns} {values} FROM n"
        ),
        Backend::Postgres => format!("{columns} {values} FROM generate_series(1, {n}) AS i"),
    });
}

async fn signs_in_with_an_admin_token_only(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    let mut b = Browser::new(&app);

    let page = b.get("/ui").await;
    assert_eq!(page.status, 200);
    assert!(
        page.content_type.starts_with("text/html"),
        "{}",
        page.content_type
    );
    assert!(page.body.contains(r#"action="/ui/login""#) && page.body.contains(r#"name="token""#));
    assert!(
        !page.body.contains("Publish rate"),
        "no figures without a session"
    );
    let csp = page.csp.expect("a Content-Security-Policy");
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));

    let away = b.get("/ui/subscribers?q=x").await;
    assert_eq!(away.status, 303);
    assert_eq!(
        away.location.as_deref(),
        Some("/ui?next=%2Fui%2Fsubscribers%3Fq%3Dx")
    );

    let publish_only = token(json!({"author": "p", "scope": "publish"}));
    let expired = token(json!({"author": "ops", "scope": "admin", "exp": 1_000_000_000}));
    let other_secret = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"author": "ops", "scope": "admin"}),
        &jsonwebtoken::EncodingKey::from_secret(b"another secret entirely"),
    )
    .unwrap();
    // (reason, token, status, what the page says)
    let refused = [
        ("not a token", "garbage", 401, "refused"),
        (
            "signed with another secret",
            other_secret.as_str(),
            401,
            "refused",
        ),
        ("expired", expired.as_str(), 401, "refused"),
        (
            "publish scope only",
            publish_only.as_str(),
            403,
            "no admin scope",
        ),
        ("unknown API key", "sk_0123456789abcdef", 401, "refused"),
        ("empty", "", 400, "Paste an admin token"),
    ];
    for (reason, t, status, says) in refused {
        let a = b.sign_in(t).await;
        assert_eq!(a.status, status, "{reason}: {}", a.body);
        assert!(a.body.contains(says), "{reason}: {}", a.body);
        assert!(session_cookie(&a).is_none(), "{reason}: no session cookie");
    }
    assert!(b.cookie.is_none());

    let a = b
        .post(
            "/ui/login",
            &[("token", &app.admin), ("next", "/ui/messages?topic=a.b")],
        )
        .await;
    assert_eq!(a.status, 303, "{}", a.body);
    assert_eq!(a.location.as_deref(), Some("/ui/messages?topic=a.b"));
    let cookie = a
        .set_cookies
        .iter()
        .find(|c| c.starts_with("switch_session="))
        .expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age="] {
        assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP here: {cookie}");
    b.cookie = session_cookie(&a);

    // Never back to another site.
    let a = b
        .post(
            "/ui/login",
            &[("token", &app.admin), ("next", "//evil.example/x")],
        )
        .await;
    assert_eq!(a.location.as_deref(), Some("/ui"));

    for (path, shows) in [
        ("/ui", "Publish rate"),
        ("/ui/", "Oldest pending job"),
        ("/ui/subscribers", "subscribers in all"),
        ("/ui/subscribers/new", "Create subscriber"),
        ("/ui/messages", "Topic pattern"),
        ("/ui/dead-letters", "No dead letter here."),
        ("/ui/tail", "/ui/tail/stream"),
    ] {
        let page = b.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(page.body.contains(shows), "{path} lacks {shows}");
        assert!(page.body.contains("Sign out"), "{path}");
        assert!(page.csp.is_some(), "{path}");
    }
    let stats = b.get("/ui/overview/stats").await;
    assert_eq!(stats.status, 200);
    let stats: Value = serde_json::from_str(&stats.body).unwrap();
    for k in [
        "published",
        "delivered",
        "failed",
        "dead",
        "ready",
        "delayed",
        "at_ms",
    ] {
        assert!(stats[k].is_number(), "{k} in {stats}");
    }
    let css = b.get("/ui/assets/app.css").await;
    assert_eq!(
        (css.status, css.content_type.as_str()),
        (200, "text/css; charset=utf-8")
    );
    let missing = b.get("/ui/nothing-here").await;
    assert_eq!(missing.status, 404);
    assert!(
        missing.content_type.starts_with("text/html"),
        "a page, not JSON"
    );

    // Signing out forgets the cookie.
    let csrf = b.csrf().await;
    let out = b.post("/ui/logout", &[("csrf", &csrf)]).await;
    assert_eq!((out.status, out.location.as_deref()), (303, Some("/ui")));
    assert!(
        out.set_cookies
            .iter()
            .any(|c| c.starts_with("switch_session=;") && c.contains("Max-Age=0")),
        "{:?}",
        out.set_cookies
    );
}

async fn sessions_end_when_the_token_does(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    // A revoked API key: refused at the next page.
    let (status, key) = app
        .admin(
            "POST",
            "/keys",
            Some(json!({"name": "ops-key", "scope": "admin"})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let mut b = Browser::new(&app);
    assert_eq!(b.sign_in(key["key"].as_str().unwrap()).await.status, 303);
    let page = b.get("/ui/subscribers").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("ops-key"),
        "the key's name is who is signed in"
    );
    let (status, _) = app
        .admin("DELETE", &format!("/keys/{}", key["id"]), None)
        .await;
    assert_eq!(status, 204);
    let started = Instant::now();
    let ended = loop {
        let a = b.get("/ui/subscribers").await;
        if a.status != 200 || started.elapsed() > Duration::from_secs(3) {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ended.status, 303, "revoked within a second");
    assert_eq!(
        ended.location.as_deref(),
        Some("/ui?next=%2Fui%2Fsubscribers&ended=1")
    );
    assert!(ended.set_cookies.iter().any(|c| c.contains("Max-Age=0")));
    let form = b.get(ended.location.as_deref().unwrap()).await;
    assert!(form.body.contains("Your session ended"), "{}", form.body);

    // An expiring token: the cookie lasts no longer, and the server refuses it after.
    let exp = chrono::Utc::now().timestamp() + 2;
    let short = token(json!({"author": "ops", "scope": "admin", "exp": exp}));
    let mut b = Browser::new(&app);
    let a = b.sign_in(&short).await;
    assert_eq!(a.status, 303);
    assert!(
        a.set_cookies
            .iter()
            .any(|c| c.contains("Max-Age=1") || c.contains("Max-Age=2")),
        "{:?}",
        a.set_cookies
    );
    assert_eq!(b.get("/ui/messages").await.status, 200);
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let after = b.get("/ui/messages").await;
    assert_eq!(after.status, 303, "expired");
    assert!(after.location.unwrap().contains("ended=1"));
}

async fn forms_without_the_sessions_csrf_token_are_refused(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    let mut b = Browser::new(&app);
    b.sign_in(&app.admin).await;
    let csrf = b.csrf().await;
    assert_eq!(
        csrf,
        switch_server::ui::csrf_token(b.cookie.as_deref().unwrap())
    );
    let another_session = switch_server::ui::csrf_token(&token(json!({"scope": "admin"})));
    let fields = |csrf: Option<&'static str>| -> Vec<(&'static str, &'static str)> {
        let mut f = vec![
            ("topic", "csrf.t"),
            ("target_url", "http://127.0.0.1:9/c"),
            ("enabled", "true"),
        ];
        if let Some(c) = csrf {
            f.push(("csrf", c));
        }
        f
    };
    let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
    // (reason, csrf field, what the page says)
    let refused = [
        ("missing", None, "no CSRF token"),
        ("empty", Some(""), "no CSRF token"),
        ("wrong", Some("d3Jvbmc"), "does not belong to your session"),
        (
            "another session's",
            Some(leak(&another_session)),
            "does not belong to your session",
        ),
    ];
    for (reason, token_field, says) in refused {
        for path in ["/ui/subscribers", "/ui/logout", "/ui/dead-letters/1/replay"] {
            let a = b.post(path, &fields(token_field)).await;
            assert_eq!(a.status, 403, "{reason} on {path}: {}", a.body);
            assert!(a.content_type.starts_with("text/html"), "{reason}: a page");
            assert!(a.body.contains(says), "{reason}: {}", a.body);
        }
    }
    let (_, list) = app.admin("GET", "/subscribers", None).await;
    assert_eq!(list["items"], json!([]), "nothing created");

    // Without a session a post goes back to the sign-in form, not through.
    let stranger = Browser::new(&app);
    let a = stranger
        .post("/ui/subscribers", &fields(Some(leak(&csrf))))
        .await;
    assert_eq!((a.status, a.location.as_deref()), (303, Some("/ui")));

    // Another server behind the same balancer accepts the session and its token.
    let second = TestApp::spawn(app.settings.clone()).await;
    let there = b.via(&second);
    assert_eq!(
        there.csrf().await,
        csrf,
        "every server computes the same token"
    );
    let a = there
        .post("/ui/subscribers", &fields(Some(leak(&csrf))))
        .await;
    assert_eq!(a.status, 303, "{}", a.body);
    let (_, list) = app.admin("GET", "/subscribers", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

async fn subscribers_are_created_edited_and_disabled_through_forms(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    let mut b = Browser::new(&app);
    b.sign_in(&app.admin).await;
    let csrf = b.csrf().await;
    let created = b
        .post(
            "/ui/subscribers",
            &[
                ("csrf", &csrf),
                ("topic", "orders.*"),
                ("target_url", "http://127.0.0.1:9000/hook/:id"),
                ("filter_expression", "data[\"body\"][\"total\"] > 100"),
                ("description", "orders feed"),
                ("max_in_flight", "4"),
                ("enabled", "true"),
            ],
        )
        .await;
    assert_eq!(created.status, 303, "{}", created.body);
    let location = created.location.unwrap();
    let id: i64 = location
        .trim_start_matches("/ui/subscribers/")
        .trim_end_matches("?notice=created")
        .parse()
        .unwrap();
    let (_, s) = app.admin("GET", &format!("/subscribers/{id}"), None).await;
    assert_eq!(s["topic"], "orders.*");
    assert_eq!(s["target_url"], "http://127.0.0.1:9000/hook/:id");
    assert_eq!(
        s["filter_expression"], "body.total > 100",
        "legacy translated"
    );
    assert_eq!(
        (s["description"].as_str(), s["max_in_flight"].as_i64()),
        (Some("orders feed"), Some(4))
    );
    assert_eq!(s["enabled"], true);
    let page = b.get(&location).await;
    assert!(page.body.contains("Subscriber created."));
    assert!(page.body.contains(s["secret"].as_str().unwrap()));

    // Refused as the API refuses, with what was typed kept.
    for (reason, topic, url, status, says) in [
        ("bad topic", "a..b", "http://127.0.0.1:9/x", 400, "topic"),
        ("bad scheme", "a.b", "ftp://127.0.0.1/x", 400, "target_url"),
        (
            "metadata address",
            "a.b",
            "http://169.254.169.254/x",
            400,
            "target_url",
        ),
        (
            "duplicate",
            "orders.*",
            "http://127.0.0.1:9000/hook/:id",
            409,
            "already has topic",
        ),
    ] {
        let a = b
            .post(
                "/ui/subscribers",
                &[("csrf", &csrf), ("topic", topic), ("target_url", url)],
            )
            .await;
        assert_eq!(a.status, status, "{reason}: {}", a.body);
        assert!(
            a.body.contains(says) && a.body.contains(&url.replace('&', "&amp;")),
            "{reason}"
        );
    }
    let (_, all) = app.admin("GET", "/subscribers", None).await;
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        1,
        "nothing else created"
    );

    let edited = b
        .post(
            &format!("/ui/subscribers/{id}"),
            &[
                ("csrf", &csrf),
                ("topic", "orders.#"),
                ("target_url", "http://127.0.0.1:9001/new"),
                ("filter_expression", ""),
                ("description", "all orders"),
                ("max_in_flight", ""),
            ],
        )
        .await;
    assert_eq!(edited.status, 303, "{}", edited.body);
    let (_, s) = app.admin("GET", &format!("/subscribers/{id}"), None).await;
    assert_eq!(
        (s["topic"].as_str(), s["target_url"].as_str()),
        (Some("orders.#"), Some("http://127.0.0.1:9001/new"))
    );
    assert_eq!(
        (&s["filter_expression"], &s["max_in_flight"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(s["description"], "all orders");
    let bad = b
        .post(
            &format!("/ui/subscribers/{id}"),
            &[
                ("csrf", &csrf),
                ("topic", "orders.#"),
                ("target_url", "http://127.0.0.1:9001/new"),
                ("filter_expression", "body.x =="),
            ],
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("filter_expression"));
    let (_, unchanged) = app.admin("GET", &format!("/subscribers/{id}"), None).await;
    assert_eq!(unchanged["filter_expression"], Value::Null);

    for (enabled, notice) in [("false", "disabled"), ("true", "enabled")] {
        let a = b
            .post(
                &format!("/ui/subscribers/{id}/enabled"),
                &[("csrf", &csrf), ("enabled", enabled)],
            )
            .await;
        assert_eq!(
            a.location,
            Some(format!("/ui/subscribers/{id}?notice={notice}"))
        );
        let (_, s) = app.admin("GET", &format!("/subscribers/{id}"), None).await;
        assert_eq!(s["enabled"].to_string(), enabled);
    }
    let before = s["secret"].clone();
    let a = b
        .post(
            &format!("/ui/subscribers/{id}/rotate-secret"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(a.status, 303);
    let (_, s) = app.admin("GET", &format!("/subscribers/{id}"), None).await;
    assert_ne!(s["secret"], before, "a new secret");

    for (filter, message, says) in [
        (
            "body.total > 100",
            r#"{"topic": "orders.created", "body": {"total": 150}}"#,
            "Matches.",
        ),
        (
            "body.total > 100",
            r#"{"body": {"total": 50}}"#,
            "Does not match.",
        ),
        ("author == \"ops\"", "{}", "Matches."),
        ("body.total >", "{}", "filter_expression"),
        ("true", "not json", "The message is not JSON"),
    ] {
        let a = b
            .post(
                &format!("/ui/subscribers/{id}/test-filter"),
                &[
                    ("csrf", &csrf),
                    ("filter_expression", filter),
                    ("message", message),
                ],
            )
            .await;
        assert_eq!(a.status, 200, "{filter}: {}", a.body);
        assert!(
            a.body.contains(says),
            "{filter} on {message}: expected {says}"
        );
    }

    let a = b
        .post(&format!("/ui/subscribers/{id}/delete"), &[("csrf", &csrf)])
        .await;
    assert_eq!(
        a.location.as_deref(),
        Some("/ui/subscribers?notice=deleted")
    );
    let (status, _) = app.admin("GET", &format!("/subscribers/{id}"), None).await;
    assert_eq!(status, 404);
    assert_eq!(b.get(&format!("/ui/subscribers/{id}")).await.status, 404);
}

/// Polls the API's dead letters of `subscriber` until `n` are pending.
async fn pending_letters(app: &TestApp, subscriber: i64, n: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let (_, body) = app
            .admin(
                "GET",
                &format!("/dead-letters?subscriber_id={subscriber}"),
                None,
            )
            .await;
        let pending: Vec<Value> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["replayed_at"].is_null())
            .cloned()
            .collect();
        if pending.len() >= n || started.elapsed() > Duration::from_secs(15) {
            assert_eq!(pending.len(), n, "pending dead letters");
            return pending;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_dead_letter_is_replayed_from_the_dashboard(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    let receiver = Receiver::start().await;
    // Three attempts (100ms, 100ms): three 500s make a dead letter.
    receiver.script(vec![Reply::Status(500); 3]);
    let sub = app.subscribe("dl.t", &receiver.url("/dl"), None).await;
    let sid = sub["id"].as_i64().unwrap();
    let worker = InProcessWorker::start(app.settings.clone());
    let (_, published) = app
        .publish(json!({"topic": "dl.t", "body": {"n": 1}}))
        .await;
    let message_id = published["message_id"].as_str().unwrap().to_string();
    let letter = pending_letters(&app, sid, 1).await.remove(0);
    let letter_id = letter["id"].as_i64().unwrap();

    let mut b = Browser::new(&app);
    b.sign_in(&app.admin).await;
    let back = format!("/ui/dead-letters?subscriber_id={sid}");
    let list = b.get(&back).await;
    assert!(list.body.contains(&message_id), "{}", list.body);
    let action = format!("/ui/dead-letters/{letter_id}/replay");
    assert!(list.body.contains(&action));
    let csrf = csrf_of(&list.body);
    let a = b.post(&action, &[("csrf", &csrf), ("back", &back)]).await;
    assert_eq!(a.status, 303, "{}", a.body);
    assert_eq!(a.location, Some(format!("{back}&notice=replayed")));
    let got = receiver.wait_for(4, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 4, "delivered on replay");
    assert_eq!(got[3].header("webhook-id"), Some(message_id.as_str()));
    let (_, letters) = app
        .admin("GET", &format!("/dead-letters?subscriber_id={sid}"), None)
        .await;
    assert!(letters["items"][0]["replayed_at"].is_string(), "{letters}");
    let page = b.get(&a.location.unwrap()).await;
    assert!(page.body.contains("Dead letter replayed"));
    assert!(!page.body.contains(&action), "replayed: no button");

    // Every pending letter of the subscriber at once.
    receiver.script(vec![Reply::Status(500); 6]);
    for n in 0..2 {
        app.publish(json!({"topic": "dl.t", "body": {"n": n}}))
            .await;
    }
    pending_letters(&app, sid, 2).await;
    let a = b
        .post(
            "/ui/dead-letters/replay",
            &[
                ("csrf", &csrf),
                ("subscriber_id", &sid.to_string()),
                ("back", &back),
            ],
        )
        .await;
    assert_eq!(
        a.location,
        Some(format!("{back}&notice=replayed_all&n=2&failed=0"))
    );
    assert_eq!(
        receiver.wait_for(12, Duration::from_secs(10)).await.len(),
        12
    );
    pending_letters(&app, sid, 0).await;

    // A disabled subscriber's letter is refused, with why.
    receiver.script(vec![Reply::Status(500); 3]);
    app.publish(json!({"topic": "dl.t"})).await;
    let letter = pending_letters(&app, sid, 1).await.remove(0);
    app.admin(
        "PATCH",
        &format!("/subscribers/{sid}"),
        Some(json!({"enabled": false})),
    )
    .await;
    let a = b
        .post(
            &format!("/ui/dead-letters/{}/replay", letter["id"]),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(a.status, 409);
    assert!(a.body.contains("is disabled"), "{}", a.body);
    worker.stop().await;
}

async fn a_message_page_shows_deliveries_explain_and_the_live_tail(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    let receiver = Receiver::start().await;
    let yes = app
        .subscribe("shop.*", &receiver.url("/yes"), Some("body.total > 100"))
        .await;
    let no = app
        .subscribe("shop.#", &receiver.url("/no"), Some("body.total > 1000"))
        .await;
    let off = app
        .subscribe("shop.order", &receiver.url("/off"), None)
        .await;
    app.admin(
        "PATCH",
        &format!("/subscribers/{}", off["id"]),
        Some(json!({"enabled": false})),
    )
    .await;
    let mut b = Browser::new(&app);
    b.sign_in(&app.admin).await;

    // The tail streams with the session cookie alone.
    assert_eq!(Browser::new(&app).get("/ui/tail/stream").await.status, 303);
    assert_eq!(b.get("/ui/tail/stream?topic=a..b").await.status, 400);
    let mut stream = b
        .http
        .get(format!(
            "{}/ui/tail/stream?topic=shop.%23&filter=body.total%20%3E%2010",
            app.base
        ))
        .header(
            "Cookie",
            format!("switch_session={}", b.cookie.as_deref().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");

    let worker = InProcessWorker::start(app.settings.clone());
    app.publish(json!({"topic": "shop.order", "body": {"total": 5}}))
        .await;
    let (_, p) = app
        .publish(json!({"topic": "shop.order", "body": {"total": 150}}))
        .await;
    let id = p["message_id"].as_str().unwrap().to_string();
    let mut seen = String::new();
    let started = Instant::now();
    while !seen.contains(&id) && started.elapsed() < Duration::from_secs(10) {
        if let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(Duration::from_secs(1), stream.chunk()).await
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    assert!(
        seen.contains(&format!("id: {id}\nevent: message\n")),
        "{seen}"
    );
    assert!(!seen.contains("\"total\":5"), "the tail's filter applies");
    drop(stream);

    receiver.wait_for(1, Duration::from_secs(10)).await;
    let started = Instant::now();
    let page = loop {
        let page = b.get(&format!("/ui/messages/{id}")).await;
        if page.body.contains("badge ok\">delivered") || started.elapsed() > Duration::from_secs(10)
        {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(page.status, 200);
    let deliveries = &page.body[page.body.find(r#"id="deliveries""#).unwrap()..];
    assert!(deliveries.contains("badge ok\">delivered"), "{}", page.body);
    let explain = &page.body[page.body.find(r#"id="explain""#).unwrap()..];
    for (sub, reason) in [(&yes, "matched"), (&no, "filter_false"), (&off, "disabled")] {
        let row = &explain[explain
            .find(&format!("/ui/subscribers/{}\"", sub["id"]))
            .unwrap()..];
        let row = &row[..row.find("</tr>").unwrap()];
        assert!(
            row.contains(&format!("<code>{reason}</code>")),
            "{reason}: {row}"
        );
    }
    assert!(
        page.body.contains("&quot;total&quot;: 150"),
        "the body, indented"
    );
    assert_eq!(b.get("/ui/messages/msg_nope").await.status, 404);

    // Search by pattern, author and time.
    let future = (chrono::Utc::now() + chrono::Duration::hours(1))
        .format("%Y-%m-%d %H:%M")
        .to_string();
    for (query, found) in [
        ("topic=shop.%23".to_string(), true),
        ("topic=shop.order".to_string(), true),
        ("topic=other.%23".to_string(), false),
        ("author=ops".to_string(), true),
        ("author=nobody".to_string(), false),
        (format!("from={}", future.replace(' ', "+")), false),
        (format!("until={}", future.replace(' ', "+")), true),
    ] {
        let page = b.get(&format!("/ui/messages?{query}")).await;
        assert_eq!(page.status, 200, "{query}: {}", page.body);
        assert_eq!(page.body.contains(&id), found, "{query}");
    }
    let bad = b.get("/ui/messages?topic=a..b").await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("topic"));
    worker.stop().await;
}

async fn pages_follow_each_other_without_overlap(backend: Backend) {
    let (app, db) = TestApp::with(backend).await;
    bulk_subscribers(&db, backend, 120, "page");
    let mut b = Browser::new(&app);
    b.sign_in(&app.admin).await;

    // Subscribers: by id, 50 a page.
    let first = b.get("/ui/subscribers").await;
    let p1 = linked_ids(&first.body, "subscribers", "/ui/subscribers/");
    assert_eq!(p1.len(), 50);
    assert!(pager_link(&first.body, "prev").is_none());
    let second = b.get(&pager_link(&first.body, "next").unwrap()).await;
    let p2 = linked_ids(&second.body, "subscribers", "/ui/subscribers/");
    assert_eq!(p2.len(), 50);
    assert!(p1.iter().all(|id| !p2.contains(id)), "no overlap");
    let max1: i64 = p1.iter().map(|i| i.parse::<i64>().unwrap()).max().unwrap();
    assert!(
        p2.iter().all(|i| i.parse::<i64>().unwrap() > max1),
        "in id order"
    );
    let third = b.get(&pager_link(&second.body, "next").unwrap()).await;
    let p3 = linked_ids(&third.body, "subscribers", "/ui/subscribers/");
    assert_eq!(p3.len(), 20);
    assert!(pager_link(&third.body, "next").is_none(), "the end");
    let back = b.get(&pager_link(&third.body, "prev").unwrap()).await;
    assert_eq!(
        linked_ids(&back.body, "subscribers", "/ui/subscribers/"),
        p2
    );
    let back = b.get(&pager_link(&back.body, "prev").unwrap()).await;
    assert_eq!(
        linked_ids(&back.body, "subscribers", "/ui/subscribers/"),
        p1
    );
    let all: HashSet<String> = p1.iter().chain(&p2).chain(&p3).cloned().collect();
    assert_eq!(all.len(), 120, "every subscriber once");

    // Search narrows, case aside, and pages too.
    let found = b.get("/ui/subscribers?q=PAGE.11").await;
    let ids = linked_ids(&found.body, "subscribers", "/ui/subscribers/");
    assert_eq!(ids.len(), 11, "page.11 and page.110 to page.119");
    let found = b.get("/ui/subscribers?q=127.0.0.1").await;
    let s1 = linked_ids(&found.body, "subscribers", "/ui/subscribers/");
    let next = pager_link(&found.body, "next").unwrap();
    assert!(next.contains("q=127.0.0.1"), "{next}");
    let s2 = linked_ids(&b.get(&next).await.body, "subscribers", "/ui/subscribers/");
    assert_eq!((s1.len(), s2.len()), (50, 50));
    assert!(s1.iter().all(|id| !s2.contains(id)));
    let none = b.get("/ui/subscribers?q=50%25_off").await;
    assert!(
        linked_ids(&none.body, "subscribers", "/ui/subscribers/").is_empty(),
        "% and _ are literal"
    );

    // Messages: newest first, 50 a page.
    let worker = InProcessWorker::start(app.settings.clone());
    let batch: Vec<Value> = (0..70)
        .map(|i| json!({"topic": format!("pg.m{}", i % 3), "body": {"i": i}}))
        .collect();
    let (status, published) = app
        .request(
            "POST",
            "/publish/batch",
            Some(&app.admin.clone()),
            Some(json!({"messages": batch})),
        )
        .await;
    assert_eq!(status, 202, "{published}");
    let ids: Vec<String> = published["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["message_id"].as_str().unwrap().to_string())
        .collect();
    let started = Instant::now();
    loop {
        let (_, listed) = app.admin("GET", "/messages?limit=1000", None).await;
        if listed["items"].as_array().unwrap().len() == 70
            || started.elapsed() > Duration::from_secs(10)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = b.get("/ui/messages").await;
    let m1 = linked_ids(&first.body, "messages", "/ui/messages/");
    let second = b.get(&pager_link(&first.body, "next").unwrap()).await;
    let m2 = linked_ids(&second.body, "messages", "/ui/messages/");
    assert_eq!((m1.len(), m2.len()), (50, 20));
    assert!(pager_link(&second.body, "next").is_none());
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(
        [m1.clone(), m2].concat(),
        newest_first,
        "every message once, newest first"
    );
    // A pattern matched past the database's prefix: pg.m1 only.
    let found = b.get("/ui/messages?topic=pg.%2A").await;
    assert_eq!(
        linked_ids(&found.body, "messages", "/ui/messages/").len(),
        50
    );
    let found = b.get("/ui/messages?topic=%23.m1").await;
    let m = linked_ids(&found.body, "messages", "/ui/messages/");
    let expected: Vec<String> = ids
        .iter()
        .enumerate()
        .rev()
        .filter(|(i, _)| i % 3 == 1)
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(m, expected);
    worker.stop().await;

    // Dead letters: newest first, 50 a page.
    db.sql(&match backend {
        Backend::Sqlite => "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60) \
             INSERT INTO dead_letters (message_id, subscriber_id, topic, request, last_error, attempts) \
             SELECT 'msg_dl' || i, 1, 'dl.t', '{}', 'boom', 3 FROM n"
            .to_string(),
        Backend::Postgres => "INSERT INTO dead_letters (message_id, subscriber_id, topic, request, last_error, attempts) \
             SELECT 'msg_dl' || i, 1, 'dl.t', '{}', 'boom', 3 FROM generate_series(1, 60) AS i"
            .to_string(),
    });
    let first = b.get("/ui/dead-letters").await;
    let d1 = linked_ids(&first.body, "dead-letters", "/ui/messages/");
    let d2 = linked_ids(
        &b.get(&pager_link(&first.body, "next").unwrap()).await.body,
        "dead-letters",
        "/ui/messages/",
    );
    assert_eq!((d1.len(), d2.len()), (50, 10));
    assert_eq!(d1[0], "msg_dl60");
    assert!(d1.iter().all(|id| !d2.contains(id)));
}

async fn a_hundred_thousand_subscribers_page_quickly(backend: Backend) {
    let db = TestDb::new(backend);
    let base = settings(&db, REDIS_URL);
    // The hub's default refresh: a reload of all 100,000 every 5 s, as in production.
    let app = TestApp::spawn(settings_with(
        &base,
        &db,
        &[("SWITCH_REFRESH_INTERVAL", "5s")],
    ))
    .await;
    let started = Instant::now();
    bulk_subscribers(&db, backend, 100_000, "bulk");
    let inserted = started.elapsed();
    let mut b = Browser::new(&app);
    b.sign_in(&app.admin).await;
    let first = b.get("/ui/subscribers").await;
    assert!(first.body.contains("100,000 subscribers in all"));
    let deep = (50_000..50_100).map(|i| i.to_string()).collect::<Vec<_>>();
    let pages = [
        "/ui/subscribers".to_string(),
        pager_link(&first.body, "next").unwrap(),
        format!("/ui/subscribers?after={}", deep[0]),
        "/ui/subscribers?before=99990".to_string(),
        "/ui/subscribers?q=bulk.9999".to_string(),
        "/ui/subscribers?q=no+such+subscriber".to_string(),
    ];
    let mut timings = Vec::new();
    for path in &pages {
        let t = Instant::now();
        let page = b.get(path).await;
        let took = t.elapsed();
        assert_eq!(page.status, 200, "{path}");
        timings.push((path.clone(), took));
        assert!(
            took < Duration::from_millis(500),
            "{path} took {took:?} with 100,000 subscribers"
        );
        if !path.contains("no+such") {
            assert!(
                !linked_ids(&page.body, "subscribers", "/ui/subscribers/").is_empty(),
                "{path}"
            );
        }
    }
    eprintln!("{backend:?}: 100,000 subscribers inserted in {inserted:?}; pages: {timings:?}");
}
