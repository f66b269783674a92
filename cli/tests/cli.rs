//! The `switch` binary against a real hub (server, worker, SQLite, Redis).

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Background, Hub};

const WAIT: Duration = Duration::from_secs(15);

fn publish(hub: &Hub, topic: &str, body: &str) -> String {
    let answer = hub.ok(&["publish", topic, "--body", body]).json();
    answer["message_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no message_id in {answer}"))
        .to_string()
}

#[test]
fn publish_prints_the_message_id() {
    let hub = Hub::start();
    let run = hub.ok(&[
        "publish",
        "orders.created",
        "--body",
        r#"{"id": 42, "total": 9.5}"#,
        "--header",
        "X-Trace=abc",
    ]);
    let answer = run.json();
    assert!(
        answer["message_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{answer}"
    );
    assert_eq!(answer["matched"], 0);
}

#[test]
fn subscribers_add_ls_rm() {
    let hub = Hub::start();
    let created = hub
        .ok(&[
            "subscribers",
            "add",
            "orders.*",
            "http://127.0.0.1:9/hook/:id",
            "--filter",
            "body.total > 100",
            "--description",
            "shop",
            "--max-in-flight",
            "4",
        ])
        .json();
    let id = created["id"].clone();
    assert!(
        created["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_")),
        "{created}"
    );
    assert_eq!(created["topic"], "orders.*");
    assert_eq!(created["target_url"], "http://127.0.0.1:9/hook/:id");
    assert_eq!(created["filter_expression"], "body.total > 100");
    assert_eq!(created["description"], "shop");
    assert_eq!(created["max_in_flight"], 4);
    hub.ok(&["subscribers", "add", "audit.#", "http://127.0.0.1:9/audit"]);

    let all = hub.ok(&["subscribers", "ls"]).lines();
    assert_eq!(all.len(), 2, "{all:?}");
    let only = hub
        .ok(&["subscribers", "ls", "--topic", "orders.*"])
        .lines();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["id"], id);
    let table = hub.ok(&["subscribers", "ls", "--table"]).stdout;
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains("http://127.0.0.1:9/audit"), "{table}");

    // The same topic and target again: the API's conflict, non-zero.
    let dup = hub.run(&[
        "subscribers",
        "add",
        "orders.*",
        "http://127.0.0.1:9/hook/:id",
    ]);
    assert!(!dup.success);
    assert!(dup.stderr.contains("conflict"), "{}", dup.stderr);

    let id_text = id.to_string();
    hub.ok(&["subscribers", "rm", &id_text]);
    let left = hub.ok(&["subscribers", "ls"]).lines();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["topic"], "audit.#");
    let again = hub.run(&["subscribers", "rm", &id_text]);
    assert!(!again.success);
    assert!(again.stderr.contains("not_found"), "{}", again.stderr);
}

#[test]
fn filter_test_prints_true_or_false() {
    let hub = Hub::start();
    let message = r#"{"topic": "orders.created", "body": {"total": 150}}"#;
    let yes = hub.ok(&[
        "subscribers",
        "test",
        "body.total > 100",
        "--message",
        message,
    ]);
    assert_eq!(yes.stdout.trim(), "true");
    let no = hub.ok(&[
        "subscribers",
        "test",
        "body.total > 1000",
        "--message",
        message,
    ]);
    assert_eq!(no.stdout.trim(), "false");
    let missing = hub.ok(&[
        "subscribers",
        "test",
        "body.nope == 1",
        "--message",
        message,
    ]);
    assert_eq!(missing.stdout.trim(), "false");

    let broken = hub.run(&["subscribers", "test", "body.total >", "--message", message]);
    assert!(!broken.success);
    assert!(broken.stdout.is_empty(), "{}", broken.stdout);
    assert!(
        broken.stderr.contains("invalid_request"),
        "{}",
        broken.stderr
    );
}

#[test]
fn listen_verifies_deliveries_and_removes_its_subscriber() {
    let hub = Hub::start();
    let mut cmd = hub.cli();
    cmd.args(["listen", "orders.#"]);
    let mut listen = Background::spawn(cmd);
    let intro = listen.wait_stderr("delivers to", WAIT);
    assert!(intro.contains("http://127.0.0.1:"), "{intro}");
    listen.wait_stderr("listening", WAIT);

    let subs = hub.api_get("/subscribers");
    let items = subs["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{subs}");
    assert_eq!(items[0]["topic"], "orders.#");

    let id = publish(&hub, "orders.created", r#"{"id": 7, "total": 150}"#);
    publish(&hub, "users.created", r#"{"id": 8}"#);
    let line = listen.next_json(WAIT).unwrap_or_else(|| {
        panic!(
            "no delivery printed; stderr:\n{}\n{}",
            listen.drain_stderr(),
            hub.logs()
        )
    });
    assert_eq!(line["webhook_id"], Value::String(id));
    assert_eq!(line["topic"], "orders.created");
    assert_eq!(line["verified"], true);
    assert_eq!(line["body"]["total"], 150);

    listen.signal(libc::SIGTERM);
    let status = listen.wait(WAIT).expect("listen exits on SIGTERM");
    let stderr = listen.drain_stderr();
    assert!(status.success(), "exit {status:?}; stderr:\n{stderr}");
    assert!(stderr.contains("deleted"), "{stderr}");
    assert!(listen.next_json(Duration::from_millis(200)).is_none());
    let subs = hub.api_get("/subscribers");
    assert_eq!(subs["items"], serde_json::json!([]), "{subs}");
}

/// One HTTP request received by a bare TCP listener, answered 204.
fn accept_one(listener: TcpListener) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else {
            return;
        };
        conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if raw.len() >= end + 4 + length {
                    break;
                }
            }
        }
        let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        let _ = tx.send(String::from_utf8_lossy(&raw).into_owned());
    });
    rx
}

#[test]
fn listen_forwards_verified_deliveries() {
    let hub = Hub::start();
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let forward_to = format!("http://{}/app/hook", target.local_addr().unwrap());
    let received = accept_one(target);
    let mut cmd = hub.cli();
    cmd.args([
        "listen",
        "orders.*",
        "--filter",
        "body.total > 100",
        "--forward-to",
        &forward_to,
    ]);
    let mut listen = Background::spawn(cmd);
    listen.wait_stderr("listening", WAIT);

    publish(&hub, "orders.created", r#"{"total": 5}"#);
    let id = publish(&hub, "orders.created", r#"{"total": 500}"#);
    let line = listen.next_json(WAIT).expect("a delivery");
    assert_eq!(line["webhook_id"], Value::String(id.clone()));
    assert_eq!(line["verified"], true);

    let request = received.recv_timeout(WAIT).expect("a forwarded request");
    let lower = request.to_ascii_lowercase();
    assert!(request.starts_with("POST /app/hook "), "{request}");
    assert!(lower.contains(&format!("webhook-id: {id}")), "{request}");
    assert!(lower.contains("webhook-signature: v1,"), "{request}");
    assert!(
        lower.contains("x-switch-topic: orders.created"),
        "{request}"
    );
    assert!(request.ends_with(r#"{"total":500}"#), "{request}");

    listen.signal(libc::SIGINT);
    let status = listen.wait(WAIT).expect("listen exits on SIGINT");
    assert!(status.success(), "{}", listen.drain_stderr());
    assert_eq!(hub.api_get("/subscribers")["items"], serde_json::json!([]));
}

#[test]
fn messages_ls_and_show() {
    let hub = Hub::start();
    let ids = [
        publish(&hub, "orders.created", r#"{"n": 1}"#),
        publish(&hub, "orders.paid", r#"{"n": 2}"#),
        publish(&hub, "users.created", r#"{"n": 3}"#),
    ];
    let started = Instant::now();
    let listed = loop {
        let lines = hub.ok(&["messages", "ls"]).lines();
        if lines.len() >= 3 || started.elapsed() > Duration::from_secs(10) {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let listed_ids: Vec<&str> = listed.iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(
        listed_ids,
        ids.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(listed[0]["author"], "cli");
    assert_eq!(listed[0]["body"]["n"], 1);

    let orders = hub.ok(&["messages", "ls", "--topic", "orders.#"]).lines();
    assert_eq!(orders.len(), 2);
    let two = hub.ok(&["messages", "ls", "--limit", "2"]).lines();
    assert_eq!(two.len(), 2);
    assert_eq!(two[1]["id"], Value::String(ids[1].clone()));
    let none = hub.ok(&["messages", "ls", "--author", "someone-else"]);
    assert!(none.stdout.trim().is_empty(), "{}", none.stdout);

    let shown = hub.ok(&["messages", "show", &ids[2]]).json();
    assert_eq!(shown["id"], Value::String(ids[2].clone()));
    assert_eq!(shown["topic"], "users.created");
    assert!(shown["deliveries"].is_array(), "{shown}");
    let missing = hub.run(&["messages", "show", "msg_nope"]);
    assert!(!missing.success);
    assert!(missing.stderr.contains("not_found"), "{}", missing.stderr);

    let counted = hub
        .ok(&["replay", "--topic", "orders.#", "--dry-run"])
        .json();
    assert_eq!(counted["messages"], 2, "{counted}");
    assert_eq!(counted["jobs"], 0, "{counted}");
    let letters = hub.ok(&["replay", "--dead-letters"]).json();
    assert_eq!(letters["replayed"], 0, "{letters}");
}

#[test]
fn tail_prints_new_messages_and_resumes_after_a_drop() {
    let mut hub = Hub::start();
    let mut cmd = hub.cli();
    cmd.args(["tail", "orders.#"]);
    let mut tail = Background::spawn(cmd);
    tail.wait_stderr("tailing", WAIT);

    publish(&hub, "users.created", r#"{"n": 0}"#);
    let first = publish(&hub, "orders.created", r#"{"n": 1}"#);
    let line = tail.next_json(WAIT).expect("a message on the stream");
    assert_eq!(line["id"], Value::String(first.clone()));
    assert_eq!(line["topic"], "orders.created");
    assert_eq!(line["body"]["n"], 1);

    // The server goes away and comes back: the tail reconnects from the
    // last message it printed, with no duplicate.
    hub.restart_server();
    tail.wait_stderr("resumed", Duration::from_secs(20));
    let second = publish(&hub, "orders.paid", r#"{"n": 2}"#);
    let line = tail.next_json(WAIT).expect("a message after the reconnect");
    assert_eq!(line["id"], Value::String(second));
    assert!(tail.next_json(Duration::from_millis(500)).is_none());
}

#[test]
fn errors_go_to_stderr_with_a_non_zero_exit() {
    let hub = Hub::start();

    let bad = hub.run(&["--token", "not-a-token", "publish", "orders.created"]);
    assert!(!bad.success);
    assert_eq!(bad.code, Some(1));
    assert!(bad.stdout.is_empty(), "{}", bad.stdout);
    assert!(bad.stderr.contains("unauthorized"), "{}", bad.stderr);

    let mut no_credential = hub.cli();
    no_credential
        .env_remove("SWITCH_JWT_SECRET")
        .args(["subscribers", "ls"]);
    let out = no_credential.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthorized"));

    let bad_topic = hub.run(&["publish", "no spaces allowed"]);
    assert!(!bad_topic.success);
    assert!(
        bad_topic.stderr.contains("invalid_request"),
        "{}",
        bad_topic.stderr
    );

    let bad_json = hub.run(&["publish", "orders.created", "--body", "{nope"]);
    assert!(!bad_json.success);
    assert!(bad_json.stderr.contains("--body"), "{}", bad_json.stderr);

    let tail = hub.run(&["--token", "not-a-token", "tail", "#"]);
    assert!(!tail.success);
    assert!(tail.stderr.contains("unauthorized"), "{}", tail.stderr);

    let listen = hub.run(&["--token", "not-a-token", "listen", "#"]);
    assert!(!listen.success);
    assert!(listen.stderr.contains("unauthorized"), "{}", listen.stderr);

    let unreachable = hub.run(&[
        "--url",
        &format!("http://127.0.0.1:{}", support::free_port()),
        "subscribers",
        "ls",
    ]);
    assert!(!unreachable.success);
    assert!(
        unreachable.stderr.contains("cannot reach"),
        "{}",
        unreachable.stderr
    );

    let usage = hub.run(&["subscribers", "frobnicate"]);
    assert_eq!(usage.code, Some(2));
}

#[test]
fn keys_add_ls_rm() {
    let hub = Hub::start();
    let created = hub
        .ok(&[
            "keys", "add", "shop", "--scope", "publish", "--topic", "orders.#",
        ])
        .json();
    let key = created["key"]
        .as_str()
        .expect("the key, shown once")
        .to_string();
    assert!(key.starts_with("sk_"), "{created}");
    assert_eq!(created["topics"], serde_json::json!(["orders.#"]));
    // The key publishes through the CLI, within its topics only.
    let mut with_key = hub.cli();
    with_key
        .env_remove("SWITCH_JWT_SECRET")
        .env("SWITCH_TOKEN", &key);
    let out = with_key
        .args(["publish", "orders.created"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = hub.ok(&["keys", "ls"]).lines();
    assert_eq!(listed.len(), 1);
    assert!(
        !hub.ok(&["keys", "ls"]).stdout.contains(&key),
        "never listed"
    );
    let id = created["id"].to_string();
    hub.ok(&["keys", "rm", &id]);
    assert!(hub.ok(&["keys", "ls"]).lines().is_empty());
    let gone = hub.run(&["keys", "rm", &id]);
    assert!(
        !gone.success && gone.stderr.contains("not_found"),
        "{}",
        gone.stderr
    );
}
