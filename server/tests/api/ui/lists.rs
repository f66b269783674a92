//! The dashboard's lists and a message's page: keyset pages without overlap
//! both ways, search, deliveries and explain, the live tail over the session
//! cookie, and 100,000 subscribers paged in under 500 ms.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::client::{bulk_subscribers, linked_ids, pager_link, Browser};
use crate::both_backends;
use crate::helpers::*;

both_backends!(
    a_message_page_shows_deliveries_explain_and_the_live_tail,
    pages_follow_each_other_without_overlap,
    a_hundred_thousand_subscribers_page_quickly,
);

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
