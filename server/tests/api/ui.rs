//! The dashboard at `/ui`: sign-in and sessions, CSRF, and the forms doing
//! what the API does. Its lists (paging, search, 100,000 subscribers) and a
//! message's page are in `ui/lists.rs`; the browser stand-in in `ui/client.rs`.

mod client;
mod lists;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::*;
use client::{csrf_of, session_cookie, Browser};

both_backends!(
    signs_in_with_an_admin_token_only,
    sessions_end_when_the_token_does,
    forms_without_the_sessions_csrf_token_are_refused,
    subscribers_are_created_edited_and_disabled_through_forms,
    a_dead_letter_is_replayed_from_the_dashboard,
);

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

    // A sign-in posted from another site is refused; from this one it is not.
    let cross = app
        .http
        .post(format!("{}/ui/login", app.base))
        .header("Origin", "http://evil.example")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("token={}", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    assert!(cross
        .headers()
        .get_all("set-cookie")
        .iter()
        .all(|c| !c.to_str().unwrap_or("").starts_with("switch_session=")));
    let same = app
        .http
        .post(format!("{}/ui/login", app.base))
        .header("Origin", app.base.as_str())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("token={}", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 200, "signed in and sent on to the overview");

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
    // `exp` is checked to the second: 3 s after it was made, it has passed.
    tokio::time::sleep(Duration::from_millis(3100)).await;
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
