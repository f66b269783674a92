//! What every handler shares.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switch_core::db::DbPool;
use switch_core::queue::Queue;
use switch_core::subscribers::Cache;
use switch_core::Settings;

use crate::auth::Authenticator;
use crate::metrics::Metrics;

pub struct AppState {
    pub settings: Settings,
    pub pool: DbPool,
    pub cache: Arc<Cache>,
    pub queue: Queue,
    pub auth: Authenticator,
    pub metrics: Metrics,
    pub freshness: Freshness,
    /// API keys, as every server checks them.
    pub keys: Arc<crate::keys::KeyStore>,
    /// This server's live stream clients.
    pub live: Arc<crate::live::LiveHub>,
    /// Which target URLs subscribers may have.
    pub targets: switch_core::target::TargetPolicy,
    /// Publishes spooled while Redis is unreachable.
    pub outbox: Arc<crate::outbox::Outbox>,
    /// Where publish spans are exported (nowhere unless SWITCH_OTLP_ENDPOINT is set).
    pub spans: switch_core::otlp::Spans,
}

impl AppState {
    /// After a change through the API: reload here at once, and tell the other
    /// servers and the workers (best effort: they also reload on their interval).
    pub async fn subscribers_changed(&self) -> Result<usize, crate::error::ApiError> {
        self.loaded(self.cache.changed(&self.queue).await)
    }

    /// Reloads the subscriber snapshot now and records that it is fresh.
    pub async fn reload_subscribers(&self) -> Result<usize, crate::error::ApiError> {
        self.loaded(self.cache.reload_async().await)
    }

    fn loaded(&self, reload: anyhow::Result<usize>) -> Result<usize, crate::error::ApiError> {
        let n = reload.map_err(|e| {
            crate::error::ApiError::Unavailable(format!("the database cannot be reached: {e}"))
        })?;
        self.freshness.mark_ok();
        Ok(n)
    }
}

/// When the database was last reached (a snapshot load or a ping): publishes
/// are refused (503) rather than matched against a list that can no longer be
/// checked while the database is down.
pub struct Freshness {
    last_ok: Mutex<Option<Instant>>,
    max_age: Duration,
}

/// How often the server checks that the database answers.
pub const PING_EVERY: Duration = Duration::from_secs(1);

impl Freshness {
    pub fn new() -> Self {
        Freshness {
            last_ok: Mutex::new(None),
            max_age: PING_EVERY * 4,
        }
    }

    pub fn mark_ok(&self) {
        *self.last_ok.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    pub fn is_fresh(&self) -> bool {
        self.last_ok
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() <= self.max_age)
    }
}

impl Default for Freshness {
    fn default() -> Self {
        Self::new()
    }
}

/// Pings the database every [`PING_EVERY`], so an outage turns publishes into
/// 503s within seconds and recovery is noticed as soon; after an outage the
/// subscriber list is reloaded before publishes are accepted again.
pub fn spawn_database_pinger(state: actix_web::web::Data<AppState>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PING_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let pool = state.pool.clone();
            let reached = tokio::task::spawn_blocking(move || switch_core::db::answers(&pool))
                .await
                .unwrap_or(false);
            if !reached {
                continue;
            }
            if state.freshness.is_fresh() {
                state.freshness.mark_ok();
            } else if let Err(e) = state.reload_subscribers().await {
                // Back, but not well enough to load the list: still refusing.
                tracing::warn!(error = %e, "database answers but subscribers could not be loaded");
            } else {
                tracing::info!("database reachable again; publishes are accepted");
            }
        }
    });
}
