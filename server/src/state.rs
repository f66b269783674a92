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

/// When the subscriber snapshot was last loaded: publishes are refused (503)
/// rather than matched against a stale list while the database is down.
pub struct Freshness {
    last_ok: Mutex<Option<Instant>>,
    max_age: Duration,
}

impl Freshness {
    pub fn new(refresh: Duration) -> Self {
        Freshness {
            last_ok: Mutex::new(None),
            max_age: (refresh * 3).max(Duration::from_secs(15)),
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
