//! Builds the application: database, migrations, subscriber cache, queue, HTTP server.

use std::future::Future;
use std::net::TcpListener;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use actix_web::dev::{Payload, Server, Service, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::HttpMessage;
use actix_web::{web, App, HttpServer, ResponseError};
use anyhow::Context;
use futures_util::Stream;
use switch_core::db;
use switch_core::queue::{Queue, RedisHandle};
use switch_core::subscribers::Cache;
use switch_core::Settings;

use crate::auth::Authenticator;
use crate::metrics::Metrics;
use crate::routes;
use crate::state::{AppState, Freshness};

pub struct Application {
    port: u16,
    server: Server,
    pub state: web::Data<AppState>,
}

impl Application {
    /// Migrates (unless `migrate` is false), loads subscribers, binds the listener.
    pub async fn build(settings: Settings, migrate: bool) -> anyhow::Result<Self> {
        let public_keys = match &settings.jwt_public_keys {
            None => Vec::new(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("SWITCH_JWT_PUBLIC_KEYS: cannot read {path}"))?;
                crate::auth::read_public_keys(&text)
                    .with_context(|| format!("SWITCH_JWT_PUBLIC_KEYS: {path}"))?
            }
        };
        if settings.jwt_secret.is_none() && public_keys.is_empty() {
            anyhow::bail!("SWITCH_JWT_SECRET is not set (nor SWITCH_JWT_PUBLIC_KEYS): the server needs one to verify publisher tokens");
        }
        let pool = db::pool(&settings.database_url, 16);
        if migrate {
            let p = pool.clone();
            let applied = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
                let mut conn = p.get().context("cannot connect to the database")?;
                db::migrate(&mut conn)
            })
            .await??;
            if !applied.is_empty() {
                tracing::info!(migrations = ?applied, "migrations applied");
            }
        }
        let redis = RedisHandle::new(&settings.redis_url, Duration::from_secs(5))
            .context("SWITCH_REDIS_URL")?;
        let queue = Queue::with_partitions(
            &settings.namespace,
            settings.queue_partitions,
            redis.clone(),
        )
        .waiting_for_replicas(settings.redis_wait_replicas);
        let live = crate::live::LiveHub::start(
            queue.clone(),
            queue.on(redis.separate(Duration::from_secs(7))),
        );
        if let Err(e) = queue.ensure_group().await {
            tracing::warn!(error = %e, "Redis is not reachable yet; publishes answer 503 until it is");
        }
        let cache = Arc::new(Cache::new(pool.clone()));
        let keys = crate::keys::KeyStore::new(pool.clone());
        if let Err(e) = keys.reload().await {
            tracing::warn!(error = %e, "API keys could not be loaded yet");
        }
        keys.spawn_refresh(queue.clone(), settings.refresh_interval);
        let freshness = Freshness::new();
        match cache.reload_async().await {
            Ok(n) => {
                freshness.mark_ok();
                tracing::info!(subscribers = n, "subscribers loaded");
            }
            Err(e) => tracing::warn!(error = %e, "subscribers could not be loaded yet"),
        }
        let spans =
            switch_core::otlp::Spans::start(settings.otlp_endpoint.as_ref(), "switch-server")
                .context("SWITCH_OTLP_ENDPOINT")?;
        let state = web::Data::new(AppState {
            spans,
            auth: Authenticator::new(settings.jwt_secret.as_deref(), public_keys, keys.clone()),
            keys,
            metrics: Metrics::new(),
            settings: settings.clone(),
            pool,
            cache,
            queue,
            freshness,
            targets: switch_core::target::TargetPolicy::from_settings(&settings),
            live,
            outbox: Arc::new(crate::outbox::Outbox::default()),
        });
        state
            .outbox
            .clone()
            .spawn_drain(state.pool.clone(), state.queue.clone());
        spawn_refresh(state.clone(), settings.refresh_interval);
        crate::state::spawn_database_pinger(state.clone());

        let listener = TcpListener::bind(&settings.server_addr)
            .with_context(|| format!("cannot listen on {}", settings.server_addr))?;
        let port = listener.local_addr()?.port();
        let data = state.clone();
        let server =
            HttpServer::new(move || {
                App::new()
                    .wrap(
                        actix_web::middleware::ErrorHandlers::new()
                            .default_handler(crate::error::json_errors),
                    )
                    .wrap_fn(|mut req, srv| {
                        let expired = limit_body_time(&mut req, BODY_READ_TIMEOUT);
                        let fut = srv.call(req);
                        async move {
                            let res = fut.await?;
                            if expired.is_some_and(|flag| flag.load(Ordering::Acquire)) {
                                let (req, _) = res.into_parts();
                                let answer = body_timeout().error_response();
                                return Ok(ServiceResponse::new(req, answer).map_into_right_body());
                            }
                            Ok(res.map_into_left_body())
                        }
                    })
                    .app_data(data.clone())
                    .app_data(web::PayloadConfig::new(data.settings.max_body_bytes))
                    .app_data(web::JsonConfig::default().error_handler(|e, _| {
                        crate::error::ApiError::invalid(e.to_string()).into()
                    }))
                    .app_data(web::QueryConfig::default().error_handler(|e, _| {
                        crate::error::ApiError::invalid(e.to_string()).into()
                    }))
                    .configure(routes::configure)
                    .configure(crate::ui::config)
                    .default_service(web::to(routes::unrouted))
            })
            .listen(listener)?
            .shutdown_timeout(10)
            .run();
        Ok(Application {
            port,
            server,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until stopped, then sends the spans still waiting.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        self.state.spans.shutdown().await;
        served
    }
}

/// How long a request body may take to arrive once its head is read. The
/// server's `client_request_timeout` bounds only the head: without this a
/// client sending one byte every few seconds holds a connection (and a
/// handler) forever. At the default 1 MiB body limit this asks for at least
/// 100 KiB/s, far below any link a publisher uses.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

fn body_timeout() -> crate::error::ApiError {
    crate::error::ApiError::BodyTimeout(format!(
        "the request body did not arrive within {} s",
        BODY_READ_TIMEOUT.as_secs()
    ))
}

/// Whether a body read failed because [`BODY_READ_TIMEOUT`] passed.
pub fn is_body_timeout(e: &PayloadError) -> bool {
    matches!(e, PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
}

/// Makes the request's body fail once `limit` has passed. Returns, when the
/// request has a body, a flag set when it timed out: whatever a handler or
/// extractor makes of the failed read, the answer is then a `408` that
/// closes the connection. A WebSocket handshake is left alone: its "body" is
/// the stream of frames, which lasts as long as the socket.
fn limit_body_time(req: &mut ServiceRequest, limit: Duration) -> Option<Arc<AtomicBool>> {
    let websocket = req.method() == actix_web::http::Method::GET
        && req
            .headers()
            .get(actix_web::http::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if websocket {
        return None;
    }
    let inner = req.take_payload();
    if matches!(inner, Payload::None) {
        return None;
    }
    let expired = Arc::new(AtomicBool::new(false));
    req.set_payload(Payload::Stream {
        payload: Box::pin(DeadlineBody {
            inner,
            deadline: tokio::time::Instant::now() + limit,
            timer: None,
            expired: expired.clone(),
        }),
    });
    Some(expired)
}

/// A request body that fails with `TimedOut` when it is not complete by its
/// deadline. The timer is made only when a read has to wait, so a body that
/// is already there (the usual publish) costs no timer.
struct DeadlineBody {
    inner: Payload,
    deadline: tokio::time::Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    expired: Arc<AtomicBool>,
}

impl Stream for DeadlineBody {
    type Item = Result<web::Bytes, PayloadError>;

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.expired.load(Ordering::Acquire) {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut this.inner).poll_next(cx) {
            return Poll::Ready(item);
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                this.expired.store(true, Ordering::Release);
                Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    body_timeout().to_string(),
                )))))
            }
        }
    }
}

fn spawn_refresh(state: web::Data<AppState>, interval: Duration) {
    let marker = state.clone();
    state
        .cache
        .spawn_refresh(interval, state.queue.clone(), move |result| {
            if result.is_ok() {
                marker.freshness.mark_ok();
            }
        });
}
