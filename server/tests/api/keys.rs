//! SPEC §3: API keys (scoped, revocable, expiring, never shown twice) and
//! asymmetric tokens (EdDSA, ES256, RS256 chosen by `kid`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switch_core::Settings;

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    keys_act_with_their_scope_and_topics,
    a_revoked_key_is_refused_by_another_server_within_a_second,
    an_expired_key_is_refused,
);

async fn issue(app: &TestApp, body: Value) -> Value {
    let (status, key) = app.admin("POST", "/keys", Some(body)).await;
    assert_eq!(status, 201, "{key}");
    key
}

async fn publish_with(app: &TestApp, key: &str, topic: &str) -> (u16, Value) {
    app.request("POST", "/publish", Some(key), Some(json!({"topic": topic})))
        .await
}

async fn keys_act_with_their_scope_and_topics(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    let receiver = Receiver::start().await;
    app.subscribe("orders.*", &receiver.url("/o"), None).await;
    let publisher = issue(
        &app,
        json!({"name": "shop", "scope": "publish", "topics": ["orders.#"]}),
    )
    .await;
    let key = publisher["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("sk_"));
    assert_eq!(publisher["scope"], "publish");
    assert_eq!(publisher["topics"], json!(["orders.#"]));
    let (status, _) = publish_with(&app, &key, "orders.created").await;
    assert_eq!(status, 202);
    let (status, body) = publish_with(&app, &key, "billing.x").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, _) = app.request("GET", "/subscribers", Some(&key), None).await;
    assert_eq!(status, 403, "a publish key cannot reach admin endpoints");
    let operator = issue(&app, json!({"name": "ops-key", "scope": "admin"})).await;
    let (status, _) = app
        .request(
            "GET",
            "/subscribers",
            Some(operator["key"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 200);
    // The author of a key's publishes is its name.
    let worker = InProcessWorker::start(app.settings.clone());
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].header("x-switch-author"), Some("shop"));
    worker.stop().await;
    // Never shown again: not in the list, not in metrics.
    let (_, list) = app.admin("GET", "/keys", None).await;
    let text = list.to_string();
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert!(list["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k.get("key").is_none()));
    assert!(!text.contains(&key));
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains(&key));
    for bad in [
        json!({"name": "x", "scope": "root"}),
        json!({"scope": "publish"}),
        json!({"name": "x", "scope": "publish", "topics": ["a..b"]}),
        json!({"name": "x", "scope": "publish", "expires_at": "tomorrow"}),
        json!({"name": "x", "scope": "publish", "colour": "red"}),
    ] {
        let (status, _) = app.admin("POST", "/keys", Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}");
    }
    let (status, _) = app
        .request(
            "POST",
            "/keys",
            Some(&key),
            Some(json!({"name": "x", "scope": "admin"})),
        )
        .await;
    assert_eq!(status, 403, "a publish key cannot issue keys");
    let (status, _) = publish_with(&app, "sk_notakey", "orders.x").await;
    assert_eq!(status, 401);
}

async fn a_revoked_key_is_refused_by_another_server_within_a_second(backend: Backend) {
    let db = TestDb::new(backend);
    let a = TestApp::spawn(settings(&db, REDIS_URL)).await;
    let b = TestApp::spawn(a.settings.clone()).await;
    let issued = issue(&a, json!({"name": "temp", "scope": "publish"})).await;
    let key = issued["key"].as_str().unwrap().to_string();
    let started = Instant::now();
    loop {
        if publish_with(&b, &key, "k.t").await.0 == 202 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "B learns of a new key within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (status, _) = a
        .admin("DELETE", &format!("/keys/{}", issued["id"]), None)
        .await;
    assert_eq!(status, 204);
    let revoked = Instant::now();
    loop {
        let (status, _) = publish_with(&b, &key, "k.t").await;
        if status == 401 {
            break;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "B still accepts the key after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    eprintln!(
        "revocation seen by the other server after {:?}",
        revoked.elapsed()
    );
    let (status, _) = a
        .admin("DELETE", &format!("/keys/{}", issued["id"]), None)
        .await;
    assert_eq!(status, 404);
}

async fn an_expired_key_is_refused(backend: Backend) {
    let (app, _db) = TestApp::with(backend).await;
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    let issued = issue(
        &app,
        json!({"name": "brief", "scope": "publish", "expires_at": soon}),
    )
    .await;
    let key = issued["key"].as_str().unwrap();
    assert_eq!(publish_with(&app, key, "e.t").await.0, 202);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let (status, body) = publish_with(&app, key, "e.t").await;
    assert_eq!(status, 401, "{body}");
    let past = issue(
        &app,
        json!({"name": "old", "scope": "publish", "expires_at": "2020-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(
        publish_with(&app, past["key"].as_str().unwrap(), "e.t")
            .await
            .0,
        401
    );
}

/// A private key made by openssl, and its public key in PEM.
fn keypair(dir: &Path, name: &str, args: &[&str]) -> (Vec<u8>, String) {
    let private = dir.join(format!("{name}.pem"));
    let ok = Command::new("openssl")
        .arg("genpkey")
        .args(args)
        .arg("-out")
        .arg(&private)
        .status()
        .expect("openssl on PATH")
        .success();
    assert!(ok, "openssl genpkey {name}");
    let public = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .output()
        .unwrap();
    assert!(public.status.success());
    (
        std::fs::read(&private).unwrap(),
        String::from_utf8(public.stdout).unwrap(),
    )
}

fn sign(
    alg: jsonwebtoken::Algorithm,
    kid: Option<&str>,
    private_pem: &[u8],
    claims: &Value,
) -> String {
    let key = match alg {
        jsonwebtoken::Algorithm::EdDSA => jsonwebtoken::EncodingKey::from_ed_pem(private_pem),
        jsonwebtoken::Algorithm::ES256 => jsonwebtoken::EncodingKey::from_ec_pem(private_pem),
        _ => jsonwebtoken::EncodingKey::from_rsa_pem(private_pem),
    }
    .unwrap();
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn asymmetric_tokens_are_checked_with_the_key_their_kid_names() {
    use jsonwebtoken::Algorithm::{EdDSA, ES256, RS256};
    let dir = tempfile::tempdir().unwrap();
    let (ed, ed_pub) = keypair(dir.path(), "ed", &["-algorithm", "ed25519"]);
    let (ec, ec_pub) = keypair(
        dir.path(),
        "ec",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let (rsa, rsa_pub) = keypair(
        dir.path(),
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let (other_ed, _) = keypair(dir.path(), "other", &["-algorithm", "ed25519"]);
    let file = dir.path().join("public.pem");
    // Two keys named by a kid comment; the third is kid "2", its place.
    std::fs::write(
        &file,
        format!("# kid: edkey\n{ed_pub}kid: eckey\n{ec_pub}{rsa_pub}"),
    )
    .unwrap();
    let db = TestDb::new(Backend::Sqlite);
    let base = settings(&db, REDIS_URL);
    let with_both = TestApp::spawn(Settings {
        jwt_public_keys: Some(file.to_string_lossy().into_owned()),
        ..base.clone()
    })
    .await;
    let claims = json!({"author": "signed", "scope": "publish"});
    let cases = [
        (
            sign(EdDSA, Some("edkey"), &ed, &claims),
            202,
            "EdDSA with its kid",
        ),
        (
            sign(EdDSA, None, &ed, &claims),
            202,
            "EdDSA without a kid: the Ed25519 key",
        ),
        (
            sign(ES256, Some("eckey"), &ec, &claims),
            202,
            "ES256 with its kid",
        ),
        (
            sign(RS256, Some("2"), &rsa, &claims),
            202,
            "RS256 by its place",
        ),
        (
            sign(EdDSA, Some("edkey"), &other_ed, &claims),
            401,
            "signed by another key",
        ),
        (
            sign(EdDSA, Some("eckey"), &ed, &claims),
            401,
            "a kid naming a key of another algorithm",
        ),
        (
            sign(ES256, Some("nope"), &ec, &claims),
            401,
            "an unknown kid",
        ),
        (
            token(json!({"author": "hs", "scope": "publish"})),
            202,
            "HS256 still, with the secret set",
        ),
    ];
    for (t, want, why) in &cases {
        let (status, body) = with_both
            .request("POST", "/publish", Some(t), Some(json!({"topic": "a.t"})))
            .await;
        assert_eq!(status, *want, "{why}: {body}");
    }
    let only_public = TestApp::spawn(Settings {
        jwt_secret: None,
        jwt_public_keys: Some(file.to_string_lossy().into_owned()),
        namespace: format!("{}b", base.namespace),
        ..base.clone()
    })
    .await;
    let hs = token(json!({"author": "hs", "scope": "publish"}));
    let (status, _) = only_public
        .request("POST", "/publish", Some(&hs), Some(json!({"topic": "a.t"})))
        .await;
    assert_eq!(status, 401, "HS256 refused without a secret");
    let (status, _) = only_public
        .request(
            "POST",
            "/publish",
            Some(&sign(EdDSA, Some("edkey"), &ed, &claims)),
            Some(json!({"topic": "a.t"})),
        )
        .await;
    assert_eq!(status, 202);
}

both_backends!(the_seed_file_creates_keys_once);

async fn the_seed_file_creates_keys_once(backend: Backend) {
    let (app, db) = TestApp::with(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("seed.yaml");
    std::fs::write(
        &file,
        "subscribers:\n  - topic: orders.*\n    target_url: http://127.0.0.1:9/o\nkeys:\n  - name: shop\n    scope: publish\n    topics: [orders.#]\n  - name: ops\n    scope: publish admin\n",
    )
    .unwrap();
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("switch-seed");
    let run = || {
        let out = Command::new(&bin)
            .arg(&file)
            .env_clear()
            .env("SWITCH_DATABASE_URL", db.url_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = run();
    let keys: Vec<(&str, &str)> = first
        .lines()
        .filter_map(|l| l.strip_prefix("API key "))
        .filter_map(|l| l.split_once(": "))
        .collect();
    assert_eq!(
        keys.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        ["shop", "ops"],
        "{first}"
    );
    app.request("POST", "/refresh", Some(&app.admin.clone()), None)
        .await;
    let (_, shop) = keys[0];
    let started = Instant::now();
    while publish_with(&app, shop, "orders.created").await.0 != 202 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the seeded key works"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(publish_with(&app, shop, "billing.x").await.0, 403);
    let second = run();
    assert!(
        !second.contains("API key"),
        "printed once, created once: {second}"
    );
    let (_, list) = app.admin("GET", "/keys", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
}
