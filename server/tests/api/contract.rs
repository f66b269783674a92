//! The server keeps what its OpenAPI document promises. Each test here is a
//! case schemathesis (`make test-schema`) found the server getting wrong.

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    concurrent_subscriber_writes_never_fail,
    integers_written_with_a_fraction_are_integers,
    empty_query_values_count_as_absent,
    an_empty_time_in_a_replay_body_is_refused,
    a_key_name_is_counted_in_characters
);

/// On SQLite a transaction that reads and then writes failed at once with
/// "database is locked" (a 500) when another write came in between.
async fn concurrent_subscriber_writes_never_fail(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    let first = app
        .subscribe("orders.*", "http://127.0.0.1:9/a", None)
        .await;
    let id = first["id"].as_i64().unwrap();
    let mut calls = Vec::new();
    for i in 0..24 {
        let (a, b) = (app.http.clone(), app.base.clone());
        let token = app.admin.clone();
        calls.push(tokio::spawn(async move {
            let req = if i % 2 == 0 {
                a.patch(format!("{b}/subscribers/{id}"))
                    .body(json!({"enabled": true}).to_string())
            } else {
                a.post(format!("{b}/subscribers")).body(
                    json!({"topic": "orders.*", "target_url": format!("http://127.0.0.1:9/{i}")})
                        .to_string(),
                )
            };
            let res = req.bearer_auth(token).send().await.unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }));
    }
    for call in calls {
        let (status, body) = call.await.unwrap();
        assert!(status == 200 || status == 201, "{status} {body}");
    }
}

/// JSON Schema counts `7.0` an integer; the server refused it.
async fn integers_written_with_a_fraction_are_integers(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    let (status, created) = app
        .admin(
            "POST",
            "/subscribers",
            Some(
                json!({"topic": "a.b", "target_url": "http://127.0.0.1:9/a", "max_in_flight": 7.0}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["max_in_flight"], 7);
    let id = created["id"].as_i64().unwrap();
    let (status, patched) = app
        .admin(
            "PATCH",
            &format!("/subscribers/{id}"),
            Some(json!({"max_in_flight": 8.0})),
        )
        .await;
    assert_eq!(
        (status, &patched["max_in_flight"]),
        (200, &json!(8)),
        "{patched}"
    );
    let (status, replayed) = app
        .admin(
            "POST",
            "/messages/replay",
            Some(json!({"subscriber_id": id as f64, "dry_run": true})),
        )
        .await;
    assert_eq!(status, 200, "{replayed}");
    // A fraction is still not an integer.
    let (status, _) = app
        .admin(
            "PATCH",
            &format!("/subscribers/{id}"),
            Some(json!({"max_in_flight": 7.5})),
        )
        .await;
    assert_eq!(status, 400);
}

/// `?name=` is the parameter left out, on every list (as the document says
/// with `allowEmptyValue`); `/subscribers?topic=` and `/deliveries?outcome=`
/// refused it.
async fn empty_query_values_count_as_absent(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    app.subscribe("orders.*", "http://127.0.0.1:9/a", None)
        .await;
    for path in [
        "/subscribers?topic=",
        "/deliveries?subscriber_id=&message_id=&outcome=&since=&limit=",
        "/dead-letters?subscriber_id=&since=&limit=",
        "/messages?topic=&after=&before=&since=&limit=",
    ] {
        let (status, body) = app.admin("GET", path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body["items"].is_array(), "{path}: {body}");
    }
    let (_, listed) = app.admin("GET", "/subscribers?topic=", None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let (status, _) = app.admin("GET", "/deliveries?outcome=lost", None).await;
    assert_eq!(status, 400, "a value that is there is still checked");
}

/// In a JSON body an empty string is a value, not a missing one: it was
/// taken for no bound.
async fn an_empty_time_in_a_replay_body_is_refused(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    for body in [
        json!({"before": ""}),
        json!({"after": " ", "dry_run": true}),
    ] {
        let (status, answer) = app
            .admin("POST", "/messages/replay", Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_request");
    }
}

/// The name's limit is 200 characters, as the error says (it was bytes).
async fn a_key_name_is_counted_in_characters(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    let (status, key) = app
        .admin(
            "POST",
            "/keys",
            Some(json!({"name": "é".repeat(200), "scope": "publish"})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let (status, _) = app
        .admin(
            "POST",
            "/keys",
            Some(json!({"name": "é".repeat(201), "scope": "publish"})),
        )
        .await;
    assert_eq!(status, 400);
}

/// An Idempotency-Key the server cannot use was accepted when the publish
/// was only a dry run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_idempotency_key_is_refused_in_a_dry_run_too() {
    let (app, _db) = TestApp::with(Backend::Sqlite).await;
    let long = "k".repeat(256);
    let keys: [&[u8]; 2] = [long.as_bytes(), b"\xc3\x97"];
    for key in keys {
        for path in ["/publish", "/publish?dry_run=true"] {
            let res = app
                .http
                .post(format!("{}{path}", app.base))
                .bearer_auth(&app.admin)
                .header(
                    "Idempotency-Key",
                    reqwest::header::HeaderValue::from_bytes(key).unwrap(),
                )
                .body(json!({"topic": "orders.created"}).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 400, "{path}");
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"]["code"], "invalid_request");
        }
    }
}

/// Another method on a path of the API is 405 with the methods it has in
/// `Allow` (TRACE /publish was 404: no route, so no path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_method_on_a_known_path_is_405_with_allow() {
    let (app, _db) = TestApp::with(Backend::Sqlite).await;
    for (method, path, allow) in [
        ("TRACE", "/publish", Some("POST")),
        ("PUT", "/subscribers/1", Some("GET, PATCH, DELETE")),
        ("POST", "/subscribers/1", Some("GET, PATCH, DELETE")),
        ("DELETE", "/messages/replay", Some("POST")),
        ("GET", "/messages/replay", Some("POST")),
        ("OPTIONS", "/refresh", Some("GET, POST")),
        ("DELETE", "/ping", Some("GET")),
        ("GET", "/no/such/path", None),
        ("TRACE", "/subscribers/1/nope", None),
    ] {
        let res = app
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", app.base),
            )
            .bearer_auth(&app.admin)
            .send()
            .await
            .unwrap();
        let got = res
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_string());
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        match allow {
            Some(allow) => {
                assert_eq!(status, 405, "{method} {path}: {body}");
                assert_eq!(got.as_deref(), Some(allow), "{method} {path}");
                assert_eq!(body["error"]["code"], "invalid_request", "{method} {path}");
            }
            None => {
                assert_eq!(status, 404, "{method} {path}: {body}");
                assert_eq!(body["error"]["code"], "not_found");
            }
        }
    }
}

/// The document and the page that reads it are served without credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_and_its_page_are_served() {
    let (app, _db) = TestApp::with(Backend::Sqlite).await;
    let res = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let doc: Value = res.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/publish"]["post"].is_object());
    let res = app
        .http
        .get(format!("{}/docs", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = res.text().await.unwrap();
    assert!(page.contains("fetch(\"/openapi.json\")"));
    assert!(
        !page.contains("https://"),
        "the page loads nothing from elsewhere"
    );
}
