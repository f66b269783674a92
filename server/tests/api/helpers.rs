//! Test support: a hub on a port of its own against real Redis and a real
//! database (a fresh SQLite file or a fresh PostgreSQL database per test), a
//! real HTTP receiver, and workers in-process or as processes.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use serde_json::{json, Value};
use switch_core::config::DatabaseUrl;
use switch_core::db::AnyConnection;
use switch_core::queue::{Queue, RedisHandle};
use switch_core::Settings;
use switch_server::startup::Application;

pub const SECRET: &str = "test-secret-for-jwt-signing-0123456789";
pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one `#[tokio::test]` per backend for an `async fn(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() { super::$name($crate::helpers::Backend::Sqlite).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() { super::$name($crate::helpers::Backend::Postgres).await }
        }
    )*};
}

/// A database of its own for one test.
pub struct TestDb {
    pub url: DatabaseUrl,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDb {
    pub fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("switch.db");
                TestDb {
                    url: DatabaseUrl::Sqlite(path.to_string_lossy().into_owned()),
                    _dir: Some(dir),
                    pg_name: None,
                }
            }
            Backend::Postgres => {
                let name = format!("switch_test_{}", uuid::Uuid::now_v7().simple());
                let mut admin =
                    PgConnection::establish(PG_ADMIN_URL).expect("PostgreSQL at 127.0.0.1:5432");
                admin
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .expect("create database");
                TestDb {
                    url: DatabaseUrl::Postgres(format!(
                        "postgres://postgres@127.0.0.1:5432/{name}"
                    )),
                    _dir: None,
                    pg_name: Some(name),
                }
            }
        }
    }

    pub fn url_string(&self) -> String {
        match &self.url {
            DatabaseUrl::Sqlite(p) => format!("sqlite://{p}"),
            DatabaseUrl::Postgres(u) => u.clone(),
        }
    }

    pub fn conn(&self) -> AnyConnection {
        match &self.url {
            DatabaseUrl::Sqlite(p) => {
                let mut c =
                    AnyConnection::Sqlite(diesel::SqliteConnection::establish(p).expect("sqlite"));
                c.batch_execute("PRAGMA busy_timeout = 10000;")
                    .expect("pragma");
                c
            }
            DatabaseUrl::Postgres(u) => {
                AnyConnection::Postgresql(PgConnection::establish(u).expect("pg"))
            }
        }
    }

    /// Takes a PostgreSQL database away (`false`: every connection cut, new
    /// ones refused) or gives it back (`true`), as an outage would.
    pub fn set_reachable(&self, reachable: bool) {
        let name = self.pg_name.as_ref().expect("a PostgreSQL test database");
        let mut admin = PgConnection::establish(PG_ADMIN_URL).expect("PostgreSQL");
        admin
            .batch_execute(&format!(
                "ALTER DATABASE {name} ALLOW_CONNECTIONS {reachable}"
            ))
            .expect("alter database");
        if !reachable {
            admin
                .batch_execute(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
                ))
                .expect("terminate connections");
        }
    }

    /// Runs plain SQL, as an operator seeding by hand would.
    pub fn sql(&self, sql: &str) {
        self.conn()
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name {
            if let Ok(mut admin) = PgConnection::establish(PG_ADMIN_URL) {
                let _ =
                    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Settings for a test: its own namespace, quick retries and refresh.
pub fn settings(db: &TestDb, redis_url: &str) -> Settings {
    let ns = format!("t{}", &uuid::Uuid::now_v7().simple().to_string()[16..]);
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.insert("SWITCH_DATABASE_URL".into(), db.url_string());
    vars.insert("SWITCH_REDIS_URL".into(), redis_url.into());
    vars.insert("SWITCH_QUEUE_NAMESPACE".into(), ns);
    vars.insert("SWITCH_JWT_SECRET".into(), SECRET.into());
    vars.insert("SWITCH_SERVER_ADDR".into(), "127.0.0.1:0".into());
    vars.insert("SWITCH_RETRY_SCHEDULE".into(), "100ms,100ms".into());
    vars.insert("SWITCH_DELIVERY_TIMEOUT".into(), "2s".into());
    vars.insert("SWITCH_REFRESH_INTERVAL".into(), "300ms".into());
    vars.insert("SWITCH_WORKER_CONCURRENCY".into(), "16".into());
    vars.insert(
        "SWITCH_WORKER_METRICS_ADDR".into(),
        format!("127.0.0.1:{}", free_port()),
    );
    Settings::from_lookup(&move |k| vars.get(k).cloned()).expect("test settings")
}

/// The same settings with a metrics address of their own: a second worker in
/// one process cannot serve `/metrics` where the first does, and would not start.
pub fn own_metrics_addr(settings: &Settings) -> Settings {
    Settings {
        worker_metrics_addr: format!("127.0.0.1:{}", free_port()),
        ..settings.clone()
    }
}

/// `base` with some variables set otherwise, as a process started with them would read it.
pub fn settings_with(base: &Settings, db: &TestDb, pairs: &[(&str, &str)]) -> Settings {
    let mut vars: HashMap<String, String> = env_of(base, db).into_iter().collect();
    vars.insert("SWITCH_JWT_SECRET".into(), SECRET.into());
    vars.insert("SWITCH_SERVER_ADDR".into(), "127.0.0.1:0".into());
    for (k, v) in pairs {
        vars.insert(k.to_string(), v.to_string());
    }
    Settings::from_lookup(&move |k| vars.get(k).cloned()).expect("settings")
}

pub fn token(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

pub fn admin_token() -> String {
    token(json!({"author": "ops", "scope": "admin publish"}))
}

#[derive(Clone)]
pub struct TestApp {
    pub base: String,
    pub settings: Settings,
    pub queue: Queue,
    pub http: reqwest::Client,
    pub admin: String,
}

impl TestApp {
    pub async fn spawn(settings: Settings) -> TestApp {
        let app = Application::build(settings.clone(), true)
            .await
            .expect("app builds");
        let base = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped());
        let redis = RedisHandle::new(&settings.redis_url, Duration::from_secs(5)).unwrap();
        TestApp {
            base,
            queue: Queue::with_partitions(&settings.namespace, settings.queue_partitions, redis),
            settings,
            http: reqwest::Client::new(),
            admin: admin_token(),
        }
    }

    pub async fn with(backend: Backend) -> (TestApp, TestDb) {
        let db = TestDb::new(backend);
        let app = TestApp::spawn(settings(&db, REDIS_URL)).await;
        (app, db)
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", self.base),
        );
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.request(method, path, Some(&self.admin.clone()), body)
            .await
    }

    pub async fn publish(&self, body: Value) -> (u16, Value) {
        self.request("POST", "/publish", Some(&self.admin.clone()), Some(body))
            .await
    }

    pub async fn subscribe(&self, topic: &str, url: &str, filter: Option<&str>) -> Value {
        let (status, body) = self
            .admin(
                "POST",
                "/subscribers",
                Some(json!({"topic": topic, "target_url": url, "filter_expression": filter})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// Jobs sitting in this test's stream.
    pub async fn stream_len(&self) -> u64 {
        self.queue.depth().await.unwrap().0
    }

    /// The (subscriber, message) of every job in the stream.
    pub async fn stream_messages(&self) -> Vec<(i64, switch_core::message::Message)> {
        let mut conn = self.queue.redis().get().await.unwrap();
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(&self.queue.partition(0).stream)
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut out = Vec::new();
        for (_, fields) in entries {
            let mut job = switch_core::job::Job::decode(&fields[0].1).unwrap();
            if job.stored_body {
                let body: String = redis::cmd("HGET")
                    .arg(self.queue.message_key(0, &job.message_id))
                    .arg("b")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                job.message_json = body.into();
            }
            out.push((job.subscriber_id, job.message().unwrap()));
        }
        out
    }

    /// The (subscriber, message id) of every job in the stream.
    pub async fn stream_jobs(&self) -> Vec<(i64, String)> {
        self.stream_messages()
            .await
            .into_iter()
            .map(|(s, m)| (s, m.id))
            .collect()
    }

    /// Polls `GET /deliveries` until `pred` holds or `within` passes.
    pub async fn wait_deliveries(
        &self,
        query: &str,
        within: Duration,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let (_, body) = self
                .admin("GET", &format!("/deliveries?limit=1000&{query}"), None)
                .await;
            let items = body["items"].as_array().cloned().unwrap_or_default();
            if pred(&items) || started.elapsed() > within {
                return items;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What a receiver answers.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// Status with a `Retry-After` header (seconds).
    RetryAfter(u16, u64),
    /// Sleep this long, then 200.
    Hang(Duration),
    /// This status with this body, as the bytes are.
    Body(u16, Vec<u8>),
}

#[derive(Debug, Clone)]
pub struct Captured {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Captured {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

#[derive(Default)]
struct Script {
    replies: Vec<Reply>,
    default_delay: Duration,
}

/// A real HTTP server capturing every request; replies follow a script, then 200.
#[derive(Clone)]
pub struct Receiver {
    pub base: String,
    captured: Arc<Mutex<Vec<Captured>>>,
    script: Arc<Mutex<Script>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let captured: Arc<Mutex<Vec<Captured>>> = Arc::default();
        let script: Arc<Mutex<Script>> = Arc::default();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let (c, s) = (captured.clone(), script.clone());
        let server = HttpServer::new(move || {
            let (c, s) = (c.clone(), s.clone());
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let (c, s) = (c.clone(), s.clone());
                async move {
                    let (reply, delay) = {
                        let mut s = s.lock().unwrap();
                        let r = if s.replies.is_empty() {
                            Reply::Status(200)
                        } else {
                            s.replies.remove(0)
                        };
                        (r, s.default_delay)
                    };
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    c.lock().unwrap().push(Captured {
                        method: req.method().to_string(),
                        path: req.path().to_string(),
                        query: req.query_string().to_string(),
                        headers: req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.as_str().to_ascii_lowercase(),
                                    v.to_str().unwrap_or("").to_string(),
                                )
                            })
                            .collect(),
                        body: body.to_vec(),
                        at: Instant::now(),
                    });
                    match reply {
                        Reply::Status(code) => HttpResponse::build(
                            actix_web::http::StatusCode::from_u16(code).unwrap(),
                        )
                        .body("receiver says so"),
                        Reply::RetryAfter(code, secs) => HttpResponse::build(
                            actix_web::http::StatusCode::from_u16(code).unwrap(),
                        )
                        .insert_header(("Retry-After", secs.to_string()))
                        .finish(),
                        Reply::Hang(d) => {
                            tokio::time::sleep(d).await;
                            HttpResponse::Ok().finish()
                        }
                        Reply::Body(code, bytes) => HttpResponse::build(
                            actix_web::http::StatusCode::from_u16(code).unwrap(),
                        )
                        .body(bytes),
                    }
                }
            }))
        })
        .workers(2)
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Receiver {
            base,
            captured,
            script,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn script(&self, replies: Vec<Reply>) {
        self.script.lock().unwrap().replies = replies;
    }

    pub fn delay_every_reply(&self, d: Duration) {
        self.script.lock().unwrap().default_delay = d;
    }

    pub fn captured(&self) -> Vec<Captured> {
        self.captured.lock().unwrap().clone()
    }

    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Captured> {
        let started = Instant::now();
        loop {
            let c = self.captured();
            if c.len() >= n || started.elapsed() > within {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A worker running in this process until dropped or stopped.
pub struct InProcessWorker {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcessWorker {
    pub fn start(settings: Settings) -> Self {
        Self::start_with_lookup(settings, Arc::new(switch_worker::target::SystemLookup))
    }

    /// A worker resolving target hosts through `lookup` instead of DNS.
    pub fn start_with_lookup(
        settings: Settings,
        lookup: Arc<dyn switch_worker::target::Lookup>,
    ) -> Self {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            switch_worker::startup::Worker::build_with_lookup(settings, lookup)
                .await?
                .run_until_stopped(async move {
                    let _ = rx.await;
                })
                .await
        });
        InProcessWorker {
            stop: Some(tx),
            handle,
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.handle).await;
    }
}

impl Drop for InProcessWorker {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn target_dir_binary(name: &str) -> PathBuf {
    // tests run from target/<profile>/deps/<test-binary>
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join(name)
}

/// Environment variables equivalent to `settings`, for a worker process.
pub fn env_of(settings: &Settings, db: &TestDb) -> Vec<(String, String)> {
    let schedule: Vec<String> = settings
        .retry_schedule
        .iter()
        .map(|d| format!("{}ms", d.as_millis()))
        .collect();
    let mut vars: Vec<(String, String)> = vec![
        ("SWITCH_DATABASE_URL".into(), db.url_string()),
        ("SWITCH_REDIS_URL".into(), settings.redis_url.clone()),
        ("SWITCH_QUEUE_NAMESPACE".into(), settings.namespace.clone()),
        ("SWITCH_RETRY_SCHEDULE".into(), schedule.join(",")),
        (
            "SWITCH_DELIVERY_TIMEOUT".into(),
            format!("{}ms", settings.delivery_timeout.as_millis()),
        ),
        (
            "SWITCH_REFRESH_INTERVAL".into(),
            format!("{}ms", settings.refresh_interval.as_millis()),
        ),
        (
            "SWITCH_WORKER_CONCURRENCY".into(),
            settings.worker_concurrency.to_string(),
        ),
        (
            "SWITCH_WORKER_METRICS_ADDR".into(),
            format!("127.0.0.1:{}", free_port()),
        ),
        (
            "SWITCH_QUEUE_PARTITIONS".into(),
            settings.queue_partitions.to_string(),
        ),
        (
            "SWITCH_REDIS_WAIT_REPLICAS".into(),
            settings.redis_wait_replicas.to_string(),
        ),
        ("RUST_LOG".into(), "warn".into()),
    ];
    if let Some(endpoint) = &settings.otlp_endpoint {
        vars.push(("SWITCH_OTLP_ENDPOINT".into(), endpoint.to_string()));
    }
    vars
}

/// A worker process, killed when dropped so a failing test leaves none behind.
pub struct WorkerProcess(pub Child);

impl std::ops::Deref for WorkerProcess {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for WorkerProcess {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A `switch-worker` process (so it can be killed with SIGKILL).
pub fn worker_process(settings: &Settings, db: &TestDb) -> WorkerProcess {
    let bin = target_dir_binary("switch-worker");
    assert!(
        bin.exists(),
        "{} missing: build the workspace first",
        bin.display()
    );
    WorkerProcess(
        Command::new(bin)
            .env_clear()
            .envs(env_of(settings, db))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("worker starts"),
    )
}

pub fn signal(child: &WorkerProcess, sig: i32) {
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// A Redis server of a test's own (so it can be restarted), with AOF fsync always.
pub struct PrivateRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> Self {
        let mut r = PrivateRedis {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        r.up();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn up(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Wait until the AOF is loaded.
        let client = redis::Client::open(self.url()).unwrap();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(mut c) = client.get_connection() {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server hard (SIGKILL); the AOF keeps what was acknowledged.
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.down();
    }
}

/// A Redis Cluster of three masters and three replicas, started on free
/// ports for one test (`redis-server --cluster-enabled yes` and
/// `redis-cli --cluster create --cluster-replicas 1`).
pub struct RedisCluster {
    pub ports: Vec<u16>,
    dir: tempfile::TempDir,
    children: HashMap<u16, Child>,
}

/// A free port whose cluster bus port (+10000) is free too.
fn free_cluster_port(taken: &[u16]) -> u16 {
    loop {
        let p = free_port();
        if p < 55_000 && !taken.contains(&p) && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok()
        {
            return p;
        }
    }
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli on PATH");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl RedisCluster {
    pub fn start() -> Self {
        let mut ports = Vec::new();
        for _ in 0..6 {
            let p = free_cluster_port(&ports);
            ports.push(p);
        }
        let mut c = RedisCluster {
            ports: ports.clone(),
            dir: tempfile::tempdir().unwrap(),
            children: HashMap::new(),
        };
        for p in &ports {
            c.up(*p);
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli on PATH");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        c.wait_healthy(Duration::from_secs(30));
        c
    }

    fn up(&mut self, port: u16) {
        let dir = self.dir.path().join(port.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                "redis.log",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.children.insert(port, child);
        let started = Instant::now();
        while redis_cli(port, &["PING"]).trim() != "PONG" {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "node {port} did not start: {}",
                std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every live node sees the cluster ok, and every master has a replica in sync.
    pub fn wait_healthy(&self, within: Duration) {
        let started = Instant::now();
        loop {
            let live: Vec<u16> = self.children.keys().copied().collect();
            let ok = live
                .iter()
                .all(|p| redis_cli(*p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"));
            let masters = self.masters();
            let synced = masters.len() == 3
                && masters.iter().all(|m| {
                    let info = redis_cli(*m, &["INFO", "replication"]);
                    info.contains("connected_slaves:1") && info.contains("state=online")
                });
            if ok && synced {
                return;
            }
            assert!(
                started.elapsed() < within,
                "the cluster did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// Ports of the nodes that are masters now.
    pub fn masters(&self) -> Vec<u16> {
        let mut m: Vec<u16> = self
            .children
            .keys()
            .copied()
            .filter(|p| redis_cli(*p, &["ROLE"]).starts_with("master"))
            .collect();
        m.sort_unstable();
        m
    }

    /// A field of `INFO commandstats` (e.g. `cmdstat_xadd` calls) on one node.
    pub fn calls(&self, port: u16, command: &str) -> u64 {
        let info = redis_cli(port, &["INFO", "commandstats"]);
        info.lines()
            .find(|l| l.starts_with(&format!("cmdstat_{command}:")))
            .and_then(|l| l.split("calls=").nth(1))
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Kills a node hard.
    pub fn kill(&mut self, port: u16) {
        if let Some(mut c) = self.children.remove(&port) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a killed node again (it rejoins, as a replica if it was failed over).
    pub fn restart(&mut self, port: u16) {
        self.up(port);
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, mut c) in self.children.drain() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
