//! A hub of a test's own: `switch-server` and `switch-worker` from the same
//! target directory as the `switch` binary under test, on free ports, a
//! fresh SQLite file and a fresh Redis namespace; both are killed when the
//! test ends, also when it fails.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_switch"))
        .parent()
        .expect("target directory")
        .to_path_buf()
}

fn binary(name: &str) -> PathBuf {
    let bin = bin_dir().join(name);
    assert!(
        bin.exists(),
        "{} missing: run `cargo build --workspace --bins` first",
        bin.display()
    );
    bin
}

fn unique() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}{}", std::process::id(), nanos % 1_000_000_000)
}

/// Children die with the test thread that started them, even when the
/// test process is killed before its destructors run.
fn die_with_parent(cmd: &mut Command) {
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// No `SWITCH_*` variable of the caller's environment leaks into a child.
fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("SWITCH_") {
            cmd.env_remove(k);
        }
    }
}

pub struct Hub {
    pub url: String,
    pub secret: String,
    pub namespace: String,
    dir: tempfile::TempDir,
    port: u16,
    metrics_port: u16,
    server: Option<Child>,
    worker: Option<Child>,
}

impl Hub {
    pub fn start() -> Hub {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut hub = Hub {
            url: format!("http://127.0.0.1:{port}"),
            secret: format!("cli-test-secret-{}", unique()),
            namespace: format!("clitest{}", unique()),
            dir,
            port,
            metrics_port: free_port(),
            server: None,
            worker: None,
        };
        hub.start_server();
        hub.worker = Some(hub.spawn("switch-worker", "worker.log"));
        hub.wait_healthy(
            &format!("http://127.0.0.1:{}/health", hub.metrics_port),
            "worker",
        );
        hub
    }

    fn spawn(&self, name: &str, log: &str) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(log))
            .expect("log file");
        let mut cmd = Command::new(binary(name));
        clean_env(&mut cmd);
        die_with_parent(&mut cmd);
        cmd.current_dir(self.dir.path())
            .env(
                "SWITCH_DATABASE_URL",
                format!("sqlite://{}", self.dir.path().join("switch.db").display()),
            )
            .env("SWITCH_REDIS_URL", REDIS_URL)
            .env("SWITCH_QUEUE_NAMESPACE", &self.namespace)
            .env("SWITCH_JWT_SECRET", &self.secret)
            .env("SWITCH_SERVER_ADDR", format!("127.0.0.1:{}", self.port))
            .env(
                "SWITCH_WORKER_METRICS_ADDR",
                format!("127.0.0.1:{}", self.metrics_port),
            )
            .env("SWITCH_RETRY_SCHEDULE", "200ms")
            .env("SWITCH_REFRESH_INTERVAL", "500ms")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}"))
    }

    fn start_server(&mut self) {
        self.server = Some(self.spawn("switch-server", "server.log"));
        self.wait_healthy(&format!("{}/health", self.url), "server");
    }

    fn wait_healthy(&self, url: &str, what: &str) {
        let client = reqwest::blocking::Client::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(r) = client.get(url).timeout(Duration::from_secs(2)).send() {
                if r.status().is_success() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "the {what} did not become healthy at {url}\n{}",
            self.logs()
        );
    }

    /// Kills the server (SIGKILL) and starts it again on the same port.
    pub fn restart_server(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        self.start_server();
    }

    pub fn logs(&self) -> String {
        let mut all = String::new();
        for name in ["server.log", "worker.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            all.push_str(&format!("--- {name}\n{}\n", tail.join("\n")));
        }
        all
    }

    /// The `switch` binary pointed at this hub, with a token minted from
    /// its secret.
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switch"));
        clean_env(&mut cmd);
        die_with_parent(&mut cmd);
        cmd.env("SWITCH_URL", &self.url)
            .env("SWITCH_JWT_SECRET", &self.secret)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `switch ARGS…` to its end.
    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.cli().args(args).output().expect("switch runs");
        Run::from(args, out)
    }

    /// Runs `switch ARGS…`, which must succeed.
    pub fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert!(
            run.success,
            "switch {args:?} failed ({:?}):\n{}\n{}",
            run.code,
            run.stderr,
            self.logs()
        );
        run
    }

    /// An admin token for direct API calls.
    pub fn token(&self) -> String {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"author": "test", "scope": "admin publish", "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(self.secret.as_bytes()),
        )
        .unwrap()
    }

    /// `GET path` on the API, as an admin.
    pub fn api_get(&self, path: &str) -> Value {
        let resp = reqwest::blocking::Client::new()
            .get(format!("{}{path}", self.url))
            .bearer_auth(self.token())
            .send()
            .expect("the hub answers");
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.json().expect("JSON")
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for child in [self.server.take(), self.worker.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "redis-cli --scan --pattern '{{{ns}}}*' | xargs -r redis-cli del",
                ns = self.namespace
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A finished run of the CLI.
pub struct Run {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(_args: &[&str], out: Output) -> Run {
        Run {
            success: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// stdout as one JSON document.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }

    /// stdout as JSON lines.
    pub fn lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

/// A long-running `switch` (listen, tail): its stdout and stderr read line
/// by line; killed when dropped.
pub struct Background {
    pub child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    pub stderr_seen: Vec<String>,
}

fn pump(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            match line {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    rx
}

impl Background {
    pub fn spawn(mut cmd: Command) -> Background {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("switch starts");
        let stdout = pump(child.stdout.take().unwrap());
        let stderr = pump(child.stderr.take().unwrap());
        Background {
            child,
            stdout,
            stderr,
            stderr_seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle`.
    pub fn wait_stderr(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.stderr_seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no stderr line with `{needle}` within {timeout:?}; stderr so far:\n{}",
                    self.stderr_seen.join("\n")
                ),
            }
        }
    }

    /// The next stdout line, as JSON.
    pub fn next_json(&mut self, timeout: Duration) -> Option<Value> {
        self.stdout.recv_timeout(timeout).ok().map(|l| {
            serde_json::from_str(&l).unwrap_or_else(|e| panic!("stdout line not JSON ({e}): {l}"))
        })
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the exit status, up to `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The rest of stderr after the process ended.
    pub fn drain_stderr(&mut self) -> String {
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_millis(500)) {
            self.stderr_seen.push(l);
        }
        self.stderr_seen.join("\n")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
