//! Builds the application: database, migrations, subscriber cache, queue, HTTP server.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
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
        let secret = settings.jwt_secret.clone().context(
            "SWITCH_JWT_SECRET is not set: the server needs it to verify publisher tokens",
        )?;
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
        let queue = Queue::new(&settings.namespace, redis);
        if let Err(e) = queue.ensure_group().await {
            tracing::warn!(error = %e, "Redis is not reachable yet; publishes answer 503 until it is");
        }
        let cache = Arc::new(Cache::new(pool.clone()));
        let freshness = Freshness::new();
        match cache.reload_async().await {
            Ok(n) => {
                freshness.mark_ok();
                tracing::info!(subscribers = n, "subscribers loaded");
            }
            Err(e) => tracing::warn!(error = %e, "subscribers could not be loaded yet"),
        }
        let state = web::Data::new(AppState {
            auth: Authenticator::new(&secret),
            metrics: Metrics::new(),
            settings: settings.clone(),
            pool,
            cache,
            queue,
            freshness,
        });
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
                    .app_data(data.clone())
                    .app_data(web::PayloadConfig::new(data.settings.max_body_bytes))
                    .app_data(web::JsonConfig::default().error_handler(|e, _| {
                        crate::error::ApiError::invalid(e.to_string()).into()
                    }))
                    .app_data(web::QueryConfig::default().error_handler(|e, _| {
                        crate::error::ApiError::invalid(e.to_string()).into()
                    }))
                    .configure(routes::health::config)
                    .configure(routes::publish::config)
                    .configure(routes::subscribers::config)
                    .configure(routes::filters::config)
                    .configure(routes::deliveries::config)
                    .configure(routes::dead_letters::config)
                    .default_service(web::to(|| async {
                        Err::<actix_web::HttpResponse, _>(crate::error::ApiError::NotFound(
                            "no such endpoint".into(),
                        ))
                    }))
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

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
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
