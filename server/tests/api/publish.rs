use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    auth_and_bad_input_table,
    publish_forms_enqueue_matching_jobs,
    idempotency_key,
    sql_rows_are_picked_up,
    filters_end_to_end,
    fan_out_of_one_thousand_is_one_script
);

/// Every auth rule and every 400/401/403/413 case of the contract, each with its reason.
async fn auth_and_bad_input_table(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    let ok_body = json!({"topic": "orders.created", "body": {"a": 1}});
    let now = chrono::Utc::now().timestamp();
    let none_alg = {
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "JWT"})),
            b64(json!({"author": "x"}))
        )
    };
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &json!({"author": "x"}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let wrong_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"author": "x"}),
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret"),
    )
    .unwrap();
    let big = json!({"topic": "a", "body": "x".repeat(1_048_600)});
    let legacy = |payload: &str| json!({"Topic": "orders.created", "Payload": payload});
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    // (reason, authorization header, body, expected status, expected code)
    let cases: Vec<(&str, Option<String>, Value, u16, &str)> = vec![
        (
            "no Authorization header",
            None,
            ok_body.clone(),
            401,
            "unauthorized",
        ),
        (
            "not a bearer scheme",
            Some(format!("Basic {}", token(json!({})))),
            ok_body.clone(),
            401,
            "unauthorized",
        ),
        (
            "garbage token",
            Some("Bearer abc.def.ghi".into()),
            ok_body.clone(),
            401,
            "unauthorized",
        ),
        (
            "alg none",
            Some(format!("Bearer {none_alg}")),
            ok_body.clone(),
            401,
            "unauthorized",
        ),
        (
            "HS512 is not accepted",
            Some(format!("Bearer {hs512}")),
            ok_body.clone(),
            401,
            "unauthorized",
        ),
        (
            "signed with another key",
            Some(format!("Bearer {wrong_key}")),
            ok_body.clone(),
            401,
            "unauthorized",
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                token(json!({"author": "x", "exp": now - 120}))
            )),
            ok_body.clone(),
            401,
            "unauthorized",
        ),
        (
            "not yet valid",
            Some(format!(
                "Bearer {}",
                token(json!({"author": "x", "nbf": now + 120}))
            )),
            ok_body.clone(),
            401,
            "unauthorized",
        ),
        (
            "lower-case bearer, no exp (legacy)",
            Some(format!("bearer {}", token(json!({"Author": "legacy"})))),
            ok_body.clone(),
            202,
            "",
        ),
        (
            "exp in the future",
            Some(format!(
                "Bearer {}",
                token(json!({"author": "x", "exp": now + 60}))
            )),
            ok_body.clone(),
            202,
            "",
        ),
        (
            "scope without publish",
            Some(format!("Bearer {}", token(json!({"scope": "read"})))),
            ok_body.clone(),
            403,
            "forbidden",
        ),
        (
            "topic outside the token's topics",
            Some(format!(
                "Bearer {}",
                token(json!({"topics": ["billing.*"]}))
            )),
            ok_body.clone(),
            403,
            "forbidden",
        ),
        (
            "topic inside the token's topics",
            Some(format!("Bearer {}", token(json!({"topics": ["orders.#"]})))),
            ok_body.clone(),
            202,
            "",
        ),
        (
            "missing topic",
            Some(format!("Bearer {}", token(json!({})))),
            json!({"body": {}}),
            400,
            "invalid_request",
        ),
        (
            "bad topic",
            Some(format!("Bearer {}", token(json!({})))),
            json!({"topic": "a..b"}),
            400,
            "invalid_request",
        ),
        (
            "wildcard topic",
            Some(format!("Bearer {}", token(json!({})))),
            json!({"topic": "a.*"}),
            400,
            "invalid_request",
        ),
        (
            "unknown method",
            Some(format!("Bearer {}", token(json!({})))),
            json!({"topic": "a", "http_method": "TRACE"}),
            400,
            "invalid_request",
        ),
        (
            "bad base64",
            Some(format!("Bearer {}", token(json!({})))),
            legacy("%%%"),
            400,
            "invalid_request",
        ),
        (
            "payload not an object",
            Some(format!("Bearer {}", token(json!({})))),
            legacy(&b64("[1,2]")),
            400,
            "invalid_request",
        ),
        (
            "payload not JSON",
            Some(format!("Bearer {}", token(json!({})))),
            legacy(&b64("hello")),
            400,
            "invalid_request",
        ),
        (
            "body over SWITCH_MAX_BODY_BYTES",
            Some(format!("Bearer {}", token(json!({})))),
            big,
            413,
            "payload_too_large",
        ),
    ];
    for (reason, auth, body, status, code) in cases {
        let mut req = app
            .http
            .post(format!("{}/publish", app.base))
            .body(body.to_string());
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{reason}");
        let json: Value = resp.json().await.unwrap();
        if status >= 400 {
            assert_eq!(json["error"]["code"], code, "{reason}: {json}");
            assert!(
                json["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{reason}"
            );
        } else {
            assert!(
                json["message_id"].as_str().unwrap().starts_with("msg_"),
                "{reason}"
            );
        }
    }
    // Not JSON at all, no Content-Type (as the legacy SDK sends).
    let resp = app
        .http
        .post(format!("{}/publish", app.base))
        .header("Authorization", format!("Bearer {}", token(json!({}))))
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // Admin endpoints need the admin scope.
    let (status, body) = app
        .request(
            "GET",
            "/subscribers",
            Some(&token(json!({"scope": "publish"}))),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, _) = app
        .request("GET", "/subscribers", Some(&token(json!({}))), None)
        .await;
    assert_eq!(
        status, 403,
        "a token with no scope may publish, not administer"
    );
    let (status, _) = app.request("GET", "/subscribers", None, None).await;
    assert_eq!(status, 401);
}

async fn publish_forms_enqueue_matching_jobs(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    let a = app
        .subscribe("orders.*", "http://127.0.0.1:9/a", None)
        .await;
    let b = app
        .subscribe("orders.#", "http://127.0.0.1:9/b", Some("body.total > 100"))
        .await;
    let _c = app
        .subscribe("billing.*", "http://127.0.0.1:9/c", None)
        .await;
    let (status, body) = app
        .publish(json!({"topic": "orders.created", "body": {"total": 150}}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["matched"], 2);
    let inner = json!({"body": {"total": 5}, "headers": {}, "query_params": {}, "path_params": {}, "http_method": "post"});
    let payload = base64::engine::general_purpose::STANDARD.encode(inner.to_string());
    let resp = app
        .http
        .post(format!("{}/publish", app.base))
        .header(
            "Authorization",
            format!("bearer {}", token(json!({"Author": "legacy-svc"}))),
        )
        .body(json!({"Topic": "orders.created", "Payload": payload}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let legacy: Value = resp.json().await.unwrap();
    assert_eq!(legacy["matched"], 1, "only the unfiltered subscriber");
    let jobs = app.stream_jobs().await;
    let first = body["message_id"].as_str().unwrap().to_string();
    let second = legacy["message_id"].as_str().unwrap().to_string();
    let mut expected = vec![
        (a["id"].as_i64().unwrap(), first.clone()),
        (b["id"].as_i64().unwrap(), first),
        (a["id"].as_i64().unwrap(), second),
    ];
    let mut got = jobs.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    // A topic nobody listens to: accepted, nothing queued.
    let (status, body) = app.publish(json!({"topic": "nobody.listens"})).await;
    assert_eq!((status, body["matched"].as_u64()), (202, Some(0)));
    assert_eq!(app.stream_len().await, 3);
}

async fn idempotency_key(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    app.subscribe("orders.created", "http://127.0.0.1:9/a", None)
        .await;
    let send = |key: &'static str, author: &'static str| {
        let app = &app;
        async move {
            let resp = app
                .http
                .post(format!("{}/publish", app.base))
                .header(
                    "Authorization",
                    format!("Bearer {}", token(json!({"author": author}))),
                )
                .header("Idempotency-Key", key)
                .body(json!({"topic": "orders.created"}).to_string())
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let (s1, b1) = send("k-1", "svc").await;
    let (s2, b2) = send("k-1", "svc").await;
    let (s3, b3) = send("k-1", "other-svc").await;
    assert_eq!(s1, 202);
    assert_eq!(s2, 200);
    assert_eq!(b2["duplicate"], true);
    assert_eq!(b2["message_id"], b1["message_id"]);
    assert_eq!(b2["matched"], 1);
    assert_eq!(s3, 202, "keys are per author");
    assert_ne!(b3["message_id"], b1["message_id"]);
    assert_eq!(app.stream_len().await, 2, "the duplicate created nothing");
}

async fn sql_rows_are_picked_up(backend: Backend) {
    let (app, db) = TestApp::with(backend).await;
    // Read back at once, before any reload: the API never shows a row without its secret.
    db.sql("INSERT INTO subscribers (topic, target_url) VALUES ('early.t', 'http://localhost:9000/early');");
    let (_, list) = app.admin("GET", "/subscribers?topic=early.t", None).await;
    let early = &list["items"][0];
    assert!(
        early["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_")),
        "{early}"
    );
    let (_, again) = app
        .admin("GET", &format!("/subscribers/{}", early["id"]), None)
        .await;
    assert_eq!(
        again["secret"], early["secret"],
        "generated once and stored"
    );
    app.admin("DELETE", &format!("/subscribers/{}", early["id"]), None)
        .await;
    db.sql("INSERT INTO subscribers (topic, target_url, filter_expression) VALUES ('orders.*', 'http://localhost:9000/hook/:id', 'body.total > 100');");
    db.sql("INSERT INTO subscribers (topic, target_url, filter_expression) VALUES ('orders.*', 'http://localhost:9000/broken', 'body.total >>> 1');");
    // Within SWITCH_REFRESH_INTERVAL (300 ms here), without /refresh.
    let mut matched = 0;
    for _ in 0..40 {
        let (_, body) = app
            .publish(json!({"topic": "orders.created", "body": {"total": 500}}))
            .await;
        matched = body["matched"].as_u64().unwrap();
        if matched > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        matched, 1,
        "the SQL row is matched; the broken filter is skipped"
    );
    let (_, list) = app.admin("GET", "/subscribers", None).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    for item in items {
        let secret = item["secret"]
            .as_str()
            .expect("a secret was generated and stored");
        assert!(secret.starts_with("whsec_"));
    }
    let broken = items
        .iter()
        .find(|i| i["target_url"] == "http://localhost:9000/broken")
        .unwrap();
    assert!(broken["filter_error"].as_str().is_some(), "{broken}");
    // The stored secret is the one shown: read it back from the table.
    let (_, again) = app
        .admin("GET", &format!("/subscribers/{}", items[0]["id"]), None)
        .await;
    assert_eq!(again["secret"], items[0]["secret"]);
    // GET /refresh (legacy) and POST /refresh reload at once.
    db.sql("INSERT INTO subscribers (topic, target_url) VALUES ('orders.created', 'http://localhost:9000/third');");
    let (status, _) = app
        .request("GET", "/refresh", Some(&token(json!({}))), None)
        .await;
    assert_eq!(status, 200);
    let (_, body) = app
        .publish(json!({"topic": "orders.created", "body": {"total": 500}}))
        .await;
    assert_eq!(body["matched"], 2);
}

async fn filters_end_to_end(backend: Backend) {
    let (app, db) = TestApp::with(backend).await;
    let table: Vec<(&str, Value, bool)> = vec![
        ("body.user.id == 7", json!({"user": {"id": 7}}), true),
        ("body.user.id == 7", json!({"user": {"id": "7"}}), false),
        (
            "body.total >= 10.0 && headers.x_kind == \"a\"",
            json!({"total": 10}),
            true,
        ),
        (
            "body.missing == 1 || body.total == 10",
            json!({"total": 10}),
            true,
        ),
        ("body.missing > 1", json!({"total": 10}), false),
        (
            r#"data["body"]["total"] == 10 and data["http_method"] == "POST""#,
            json!({"total": 10}),
            true,
        ),
        (
            r#"data["body"]["note"] == "a and b" or False"#,
            json!({"note": "a and b"}),
            true,
        ),
        ("True", json!({}), true),
    ];
    for (i, (filter, _, _)) in table.iter().enumerate() {
        app.subscribe(
            &format!("f.t{i}"),
            &format!("http://127.0.0.1:9/{i}"),
            Some(filter),
        )
        .await;
    }
    for (i, (filter, body, expected)) in table.iter().enumerate() {
        let (_, resp) = app
            .publish(json!({"topic": format!("f.t{i}"), "body": body, "headers": {"X-Kind": "a"}}))
            .await;
        assert_eq!(
            resp["matched"].as_u64(),
            Some(*expected as u64),
            "{filter} with {body}"
        );
    }
    // Legacy filters are stored translated.
    let (_, list) = app.admin("GET", "/subscribers?topic=f.t5", None).await;
    assert_eq!(
        list["items"][0]["filter_expression"],
        "body.total == 10 && http_method == \"POST\""
    );
    // Hostile input is refused cleanly through the API, with a position where known.
    let deep = format!("{}1{}", "(".repeat(5000), ")".repeat(5000));
    for bad in [
        "body.x ==",
        "(body.x == 1",
        "body.x = 1",
        &"a".repeat(100_000),
        &deep,
    ] {
        let (status, body) = app
            .admin(
                "POST",
                "/subscribers",
                Some(json!({"topic": "x", "target_url": "http://h/", "filter_expression": bad})),
            )
            .await;
        assert_eq!(status, 400, "{}", &bad[..bad.len().min(30)]);
        assert_eq!(body["error"]["code"], "invalid_request");
    }
    let (_, body) = app.admin("POST", "/subscribers", Some(json!({"topic": "x", "target_url": "http://h/", "filter_expression": "(body.x == 1"}))).await;
    assert_eq!(body["error"]["position"], 0);
    // Hostile rows inserted by SQL are skipped and the server keeps serving.
    db.sql(&format!("INSERT INTO subscribers (topic, target_url, filter_expression) VALUES ('h', 'http://h/', '{deep}');"));
    let (status, _) = app
        .request("POST", "/refresh", Some(&token(json!({}))), None)
        .await;
    assert_eq!(status, 200);
    let (status, body) = app.publish(json!({"topic": "h"})).await;
    assert_eq!((status, body["matched"].as_u64()), (202, Some(0)));
    // POST /filters/test
    let (status, body) = app.admin("POST", "/filters/test", Some(json!({"filter_expression": "body.a > 1", "message": {"topic": "t", "body": {"a": 2}}}))).await;
    assert_eq!((status, body["matches"].as_bool()), (200, Some(true)));
    let (status, body) = app
        .admin(
            "POST",
            "/filters/test",
            Some(json!({"filter_expression": "body.a >", "message": {"body": {}}})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_request");
    assert_eq!(
        body["error"]["position"], 7,
        "the operator missing its operand: {body}"
    );
    // The message may name its author, a filter variable.
    let (status, body) = app
        .admin(
            "POST",
            "/filters/test",
            Some(json!({"filter_expression": "author == \"shop\"", "message": {"author": "shop"}})),
        )
        .await;
    assert_eq!(
        (status, body["matches"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    // Over-size admin bodies get the same JSON error as /publish.
    let big =
        json!({"topic": "x", "target_url": "http://h/", "description": "x".repeat(1_048_600)});
    let (status, body) = app.admin("POST", "/subscribers", Some(big)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );
}

async fn fan_out_of_one_thousand_is_one_script(backend: Backend) {
    let redis = PrivateRedis::start();
    let db = TestDb::new(backend);
    let app = TestApp::spawn(settings(&db, &redis.url())).await;
    let values: Vec<String> = (0..1000)
        .map(|i| format!("('fan.out', 'http://127.0.0.1:9/{i}')"))
        .collect();
    db.sql(&format!(
        "INSERT INTO subscribers (topic, target_url) VALUES {};",
        values.join(",")
    ));
    let (status, _) = app
        .request("POST", "/refresh", Some(&token(json!({}))), None)
        .await;
    assert_eq!(status, 200);
    // Warm-up: the first call loads the script into Redis.
    let (status, _) = app.publish(json!({"topic": "warm.up"})).await;
    assert_eq!(status, 202);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut c)
        .await
        .unwrap();
    let (status, body) = app
        .publish(json!({"topic": "fan.out", "body": {"n": 1}}))
        .await;
    assert_eq!((status, body["matched"].as_u64()), (202, Some(1000)));
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .unwrap();
    let calls = |cmd: &str| -> u64 {
        stats
            .lines()
            .find(|l| l.starts_with(&format!("cmdstat_{cmd}:")))
            .and_then(|l| l.split("calls=").nth(1))
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        calls("evalsha") + calls("eval"),
        1,
        "one script call for the whole fan-out:\n{stats}"
    );
    assert_eq!(
        calls("xadd"),
        1001,
        "its XADDs (1,000 jobs and the message's log entry) ran inside the script"
    );
    assert_eq!(app.stream_len().await, 1000);
}
