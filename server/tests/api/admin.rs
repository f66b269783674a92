use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    subscriber_crud,
    subscriber_bad_input_table,
    seed_file_upserts_all_or_nothing
);

async fn subscriber_crud(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    let created = app
        .subscribe(
            "orders.*",
            "http://127.0.0.1:9000/hook/:id",
            Some("body.total > 100"),
        )
        .await;
    let id = created["id"].as_i64().unwrap();
    for field in [
        "id",
        "topic",
        "target_url",
        "filter_expression",
        "secret",
        "enabled",
        "description",
        "created_at",
        "updated_at",
    ] {
        assert!(created.get(field).is_some(), "{field} missing in {created}");
    }
    assert_eq!(created["enabled"], true);
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));

    let (status, got) = app.admin("GET", &format!("/subscribers/{id}"), None).await;
    assert_eq!((status, &got), (200, &created));

    let (status, patched) = app
        .admin(
            "PATCH",
            &format!("/subscribers/{id}"),
            Some(
                json!({"description": "orders feed", "enabled": false, "filter_expression": null}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["description"], "orders feed");
    assert_eq!(patched["enabled"], false);
    assert_eq!(patched["filter_expression"], Value::Null);
    assert_eq!(patched["topic"], "orders.*", "untouched fields stay");

    let (status, rotated) = app
        .admin("POST", &format!("/subscribers/{id}/rotate-secret"), None)
        .await;
    assert_eq!(status, 200);
    assert_ne!(rotated["secret"], created["secret"]);

    app.subscribe("billing.#", "http://127.0.0.1:9000/b", None)
        .await;
    let (_, all) = app.admin("GET", "/subscribers", None).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    let (_, some) = app
        .admin("GET", "/subscribers?topic=billing.%23", None)
        .await;
    assert_eq!(some["items"].as_array().unwrap().len(), 1);
    assert_eq!(some["items"][0]["topic"], "billing.#");

    let (status, _) = app
        .admin("DELETE", &format!("/subscribers/{id}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, body) = app.admin("GET", &format!("/subscribers/{id}"), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

async fn subscriber_bad_input_table(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    let good = app.subscribe("a.b", "http://127.0.0.1:9/x", None).await;
    let id = good["id"].as_i64().unwrap();
    let publish_only = token(json!({"scope": "publish"}));
    // (reason, method, path, token, body, status, code)
    type Case<'a> = (
        &'a str,
        &'a str,
        String,
        Option<String>,
        Option<Value>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "unknown id",
            "GET",
            "/subscribers/999999".into(),
            None,
            None,
            404,
            "not_found",
        ),
        (
            "non-numeric id",
            "GET",
            "/subscribers/abc".into(),
            None,
            None,
            404,
            "not_found",
        ),
        (
            "unknown id on PATCH",
            "PATCH",
            "/subscribers/999999".into(),
            None,
            Some(json!({"enabled": true})),
            404,
            "not_found",
        ),
        (
            "unknown id on DELETE",
            "DELETE",
            "/subscribers/999999".into(),
            None,
            None,
            404,
            "not_found",
        ),
        (
            "unknown id on rotate",
            "POST",
            "/subscribers/999999/rotate-secret".into(),
            None,
            None,
            404,
            "not_found",
        ),
        (
            "bad pattern",
            "POST",
            "/subscribers".into(),
            None,
            Some(json!({"topic": "a.b*", "target_url": "http://h/"})),
            400,
            "invalid_request",
        ),
        (
            "empty segment",
            "POST",
            "/subscribers".into(),
            None,
            Some(json!({"topic": "a..b", "target_url": "http://h/"})),
            400,
            "invalid_request",
        ),
        (
            "missing topic",
            "POST",
            "/subscribers".into(),
            None,
            Some(json!({"target_url": "http://h/"})),
            400,
            "invalid_request",
        ),
        (
            "bad URL",
            "POST",
            "/subscribers".into(),
            None,
            Some(json!({"topic": "a", "target_url": "not a url"})),
            400,
            "invalid_request",
        ),
        (
            "ftp URL",
            "POST",
            "/subscribers".into(),
            None,
            Some(json!({"topic": "a", "target_url": "ftp://h/x"})),
            400,
            "target_not_allowed",
        ),
        (
            "uncompilable filter",
            "POST",
            "/subscribers".into(),
            None,
            Some(
                json!({"topic": "a", "target_url": "http://h/", "filter_expression": "body.x =="}),
            ),
            400,
            "invalid_request",
        ),
        (
            "bad secret",
            "POST",
            "/subscribers".into(),
            None,
            Some(json!({"topic": "a", "target_url": "http://h/", "secret": "hunter2"})),
            400,
            "invalid_request",
        ),
        (
            "unknown field",
            "POST",
            "/subscribers".into(),
            None,
            Some(json!({"topic": "a", "target_url": "http://h/", "colour": "red"})),
            400,
            "invalid_request",
        ),
        (
            "enabled not boolean",
            "PATCH",
            format!("/subscribers/{id}"),
            None,
            Some(json!({"enabled": "yes"})),
            400,
            "invalid_request",
        ),
        (
            "null topic on PATCH",
            "PATCH",
            format!("/subscribers/{id}"),
            None,
            Some(json!({"topic": null})),
            400,
            "invalid_request",
        ),
        (
            "bad filter on PATCH",
            "PATCH",
            format!("/subscribers/{id}"),
            None,
            Some(json!({"filter_expression": "(("})),
            400,
            "invalid_request",
        ),
        (
            "non-admin token",
            "GET",
            "/subscribers".into(),
            Some(publish_only.clone()),
            None,
            403,
            "forbidden",
        ),
        (
            "non-admin create",
            "POST",
            "/subscribers".into(),
            Some(publish_only.clone()),
            Some(json!({"topic": "a", "target_url": "http://h/"})),
            403,
            "forbidden",
        ),
        (
            "non-admin deliveries",
            "GET",
            "/deliveries".into(),
            Some(publish_only.clone()),
            None,
            403,
            "forbidden",
        ),
        (
            "non-admin dead letters",
            "GET",
            "/dead-letters".into(),
            Some(publish_only),
            None,
            403,
            "forbidden",
        ),
        (
            "bad outcome",
            "GET",
            "/deliveries?outcome=lost".into(),
            None,
            None,
            400,
            "invalid_request",
        ),
        (
            "bad since",
            "GET",
            "/deliveries?since=yesterday".into(),
            None,
            None,
            400,
            "invalid_request",
        ),
        (
            "limit too big",
            "GET",
            "/deliveries?limit=5000".into(),
            None,
            None,
            400,
            "invalid_request",
        ),
        (
            "replay unknown dead letter",
            "POST",
            "/dead-letters/424242/replay".into(),
            None,
            None,
            404,
            "not_found",
        ),
        (
            "replay all with a bad subscriber id",
            "POST",
            "/dead-letters/replay?subscriber_id=abc".into(),
            None,
            None,
            400,
            "invalid_request",
        ),
        (
            "unknown endpoint",
            "GET",
            "/nowhere".into(),
            None,
            None,
            404,
            "not_found",
        ),
    ];
    for (reason, method, path, tok, body, status, code) in cases {
        let tok = tok.unwrap_or_else(admin_token);
        let (got, json) = app.request(method, &path, Some(&tok), body).await;
        assert_eq!(got, status, "{reason}: {json}");
        assert_eq!(json["error"]["code"], code, "{reason}");
    }
    let (_, after) = app.admin("GET", &format!("/subscribers/{id}"), None).await;
    assert_eq!(after, good, "refused changes left the row alone");
}

async fn seed_file_upserts_all_or_nothing(backend: Backend) {
    let db = TestDb::new(backend);
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("subs.yaml");
    std::fs::write(
        &good,
        "- topic: orders.*\n  target_url: http://127.0.0.1:9000/hook/:id\n  filter_expression: body.total > 100\n- topic: billing.#\n  target_url: http://127.0.0.1:9000/billing\n  description: billing feed\n",
    )
    .unwrap();
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("switch-seed");
    let run = |file: &std::path::Path| {
        std::process::Command::new(&bin)
            .arg(file)
            .env_clear()
            .env("SWITCH_DATABASE_URL", db.url_string())
            .output()
            .unwrap()
    };
    let first = run(&good);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("2 created"));
    let rows = |db: &TestDb| {
        let mut c = db.conn();
        switch_core::db::repo::list_subscribers(&mut c, None).unwrap()
    };
    let before = rows(&db);
    let second = run(&good);
    assert!(second.status.success());
    assert!(String::from_utf8_lossy(&second.stdout).contains("2 unchanged"));
    assert_eq!(rows(&db), before, "applying twice changes nothing");

    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"[{"topic": "new.one", "target_url": "http://127.0.0.1:9000/new"},
            {"topic": "orders.*", "target_url": "http://127.0.0.1:9000/hook/:id", "filter_expression": "body.total >"}]"#,
    )
    .unwrap();
    let out = run(&bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("entry 2") && err.contains("filter_expression"),
        "{err}"
    );
    assert_eq!(rows(&db), before, "nothing half-applied");

    let changed = dir.path().join("changed.json");
    std::fs::write(&changed, r#"[{"topic": "billing.#", "target_url": "http://127.0.0.1:9000/billing", "description": "renamed"}]"#).unwrap();
    let out = run(&changed);
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 updated"));
    let after = rows(&db);
    assert_eq!(after.len(), 2);
    assert_eq!(
        after
            .iter()
            .find(|r| r.topic == "billing.#")
            .unwrap()
            .description
            .as_deref(),
        Some("renamed")
    );
}
