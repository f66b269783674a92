//! The original `switcher` 0.1.8 SDK from PyPI publishes to this hub unchanged.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

fn switcher_python() -> PathBuf {
    if let Ok(p) = std::env::var("SWITCHER_PYTHON") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv-switcher/bin/python");
    assert!(
        p.exists(),
        "{} missing: run `make test-deps` (a virtualenv with switcher==0.1.8)",
        p.display()
    );
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switcher_0_1_8_publishes_unchanged() {
    let (app, _db) = TestApp::with(Backend::Sqlite).await;
    let a = app
        .subscribe(
            "hellow",
            "http://127.0.0.1:9/a",
            Some(r#"data["body"]["hello"] == "world""#),
        )
        .await;
    let _b = app
        .subscribe(
            "hellow",
            "http://127.0.0.1:9/b",
            Some("body.hello == \"nobody\""),
        )
        .await;
    // The two filters of the original README, as written there.
    let c = app
        .subscribe(
            "hellow",
            "http://127.0.0.1:9/c",
            Some(r#"data["http_method"] == "post" and data["body"]["hello"]"#),
        )
        .await;
    let d = app
        .subscribe(
            "hellow",
            "http://127.0.0.1:9/d",
            Some(
                r#"data["body"]["x"] == 1 and data["headers"]["y"] == "z" or data["special_key"] == "special value""#,
            ),
        )
        .await;
    let script = r#"
from switcher import publisher
ok = publisher.publish('hellow', 'legacy-service', {'body': {'hello': 'world'}, 'headers': {'X-From': 'py'}, 'http_method': 'post', 'path_params': {'id': 1}, 'query_params': {}, 'special_key': 'special value'})
print(ok)
"#;
    let out = tokio::process::Command::new(switcher_python())
        .arg("-c")
        .arg(script)
        .env("SWITCH_BASE_URL", &app.base)
        .env("SWITCH_JWT_SECRET", SECRET)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "True");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let jobs = app.stream_messages().await;
    let mut got: Vec<i64> = jobs.iter().map(|j| j.0).collect();
    got.sort_unstable();
    let want: Vec<i64> = [&a, &c, &d]
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect();
    assert_eq!(got, want, "exactly the matching subscribers got a job");
    let job_msg = &jobs[0].1;
    assert_eq!(job_msg.author.as_deref(), Some("legacy-service"));
    assert_eq!(job_msg.body, json!({"hello": "world"}));
    assert_eq!(
        job_msg.headers.get("X-From").map(String::as_str),
        Some("py")
    );
    assert_eq!(job_msg.path_params.get("id").map(String::as_str), Some("1"));
}
