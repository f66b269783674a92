//! The subscriber cache: every row loaded, its pattern parsed and its filter
//! compiled once, indexed for publish-time matching. Shared by the server
//! (matching) and the workers (target URL and secret of each job).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::db::models::Subscriber;
use crate::db::{repo, DbPool};
use crate::filter::{CompiledFilter, FilterError};
use crate::message::Message;
use crate::queue::Queue;
use crate::topic::{Topic, TopicPattern};

/// A subscriber as loaded: the row plus what was compiled from it.
#[derive(Debug)]
pub struct Loaded {
    pub row: Subscriber,
    pub pattern: Result<TopicPattern, String>,
    pub filter: Result<CompiledFilter, FilterError>,
}

impl Loaded {
    pub fn new(row: Subscriber) -> Self {
        let pattern = TopicPattern::parse(&row.topic).map_err(|e| e.0);
        let filter = CompiledFilter::compile(row.filter_expression.as_deref());
        Loaded {
            row,
            pattern,
            filter,
        }
    }

    /// Why this subscriber can get no jobs, if it cannot.
    pub fn load_error(&self) -> Option<String> {
        match (&self.pattern, &self.filter) {
            (Err(e), _) => Some(format!("topic: {e}")),
            (_, Err(e)) => Some(match e.position {
                Some(p) => format!("{} (at byte {p})", e.message),
                None => e.message.clone(),
            }),
            _ => None,
        }
    }

    /// The filter error alone, as `GET /subscribers` shows it.
    pub fn filter_error(&self) -> Option<&FilterError> {
        self.filter.as_ref().err()
    }
}

/// An immutable snapshot of all subscribers.
#[derive(Debug, Default)]
pub struct Index {
    by_id: HashMap<i64, Arc<Loaded>>,
    exact: HashMap<String, Vec<Arc<Loaded>>>,
    wildcard: Vec<Arc<Loaded>>,
}

impl Index {
    /// Builds the index, reusing the compiled form of rows that did not change.
    pub fn build(rows: Vec<Subscriber>, previous: Option<&Index>) -> Self {
        let mut index = Index::default();
        for row in rows {
            let loaded = match previous.and_then(|p| p.by_id.get(&row.id)) {
                Some(old) if old.row == row => old.clone(),
                _ => {
                    let l = Arc::new(Loaded::new(row));
                    if let Some(err) = l.load_error() {
                        tracing::warn!(subscriber_id = l.row.id, error = %err, "subscriber skipped: it does not compile");
                    }
                    l
                }
            };
            match &loaded.pattern {
                Ok(p) if p.is_exact() => index
                    .exact
                    .entry(p.as_str().to_string())
                    .or_default()
                    .push(loaded.clone()),
                Ok(_) => index.wildcard.push(loaded.clone()),
                Err(_) => {}
            }
            index.by_id.insert(loaded.row.id, loaded);
        }
        index
    }

    pub fn get(&self, id: i64) -> Option<&Arc<Loaded>> {
        self.by_id.get(&id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Ids of enabled subscribers whose pattern and filter match the message.
    pub fn matching(&self, topic: &Topic, message: &Message) -> Vec<i64> {
        let exact = self
            .exact
            .get(topic.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        // Split once per publish, not once per wildcard pattern.
        let words: Vec<&str> = if self.wildcard.is_empty() {
            Vec::new()
        } else {
            topic.as_str().split('.').collect()
        };
        let wild = self
            .wildcard
            .iter()
            .filter(|l| l.pattern.as_ref().is_ok_and(|p| p.matches_words(&words)));
        exact
            .iter()
            .chain(wild)
            .filter(|l| l.row.enabled)
            .filter(|l| l.filter.as_ref().is_ok_and(|f| f.matches(message)))
            .map(|l| l.row.id)
            .collect()
    }
}

/// Why a subscriber whose pattern matches a topic would, or would not, get a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained {
    pub id: i64,
    pub matched: bool,
    /// `matched`, `filter_false`, `filter_error` or `disabled`.
    pub reason: &'static str,
    /// Variables its filter reads that the message does not have.
    pub missing: Vec<String>,
}

impl Index {
    /// For every subscriber whose pattern matches `topic`: whether it would get
    /// `message`, and why (the explain view of a dry-run publish).
    pub fn explain(&self, topic: &Topic, message: &Message) -> Vec<Explained> {
        let words: Vec<&str> = topic.as_str().split('.').collect();
        let mut out: Vec<Explained> = self
            .by_id
            .values()
            .filter(|l| l.pattern.as_ref().is_ok_and(|p| p.matches_words(&words)))
            .map(|l| {
                let missing: Vec<String> = match &l.filter {
                    Ok(f) => f
                        .variables()
                        .into_iter()
                        .filter(|v| {
                            matches!(
                                crate::filter::eval::resolve(message, v),
                                crate::filter::eval::V::Missing
                            )
                        })
                        .map(str::to_string)
                        .collect(),
                    Err(_) => Vec::new(),
                };
                let (matched, reason) = match &l.filter {
                    _ if !l.row.enabled => (false, "disabled"),
                    Err(_) => (false, "filter_error"),
                    Ok(f) if f.matches(message) => (true, "matched"),
                    Ok(_) => (false, "filter_false"),
                };
                Explained {
                    id: l.row.id,
                    matched,
                    reason,
                    missing,
                }
            })
            .collect();
        out.sort_by_key(|e| e.id);
        out
    }
}

/// The live cache, swapped atomically on each reload.
pub struct Cache {
    pool: DbPool,
    index: ArcSwap<Index>,
    /// The announced subscribers version (see [`Queue::bump_subscribers_version`])
    /// the snapshot reflects; `i64::MIN` until one is known.
    version: AtomicI64,
    /// One reload at a time: two overlapping reloads could otherwise store
    /// the older list last, under the newer version.
    reloading: tokio::sync::Mutex<()>,
}

impl Cache {
    pub fn new(pool: DbPool) -> Self {
        Cache {
            pool,
            index: ArcSwap::from_pointee(Index::default()),
            version: AtomicI64::new(i64::MIN),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// Makes the snapshot reflect announced `version`, reloading if it does not
    /// yet. Read the version *after* the jobs at hand: a change made through the
    /// API is announced before the publish it precedes, so those jobs then see it.
    pub async fn catch_up(self: &Arc<Self>, version: i64) -> anyhow::Result<()> {
        if self.version.load(Ordering::Acquire) == version {
            return Ok(());
        }
        self.reload_as_of(version).await.map(|_| ())
    }

    /// After a change made by this process: announces it to every process, then
    /// reloads here, noting the new version so this process does not reload a
    /// second time when its refresh loop sees the announcement.
    pub async fn changed(self: &Arc<Self>, queue: &Queue) -> anyhow::Result<usize> {
        match queue.bump_subscribers_version().await {
            Ok(version) => self.reload_as_of(version).await,
            Err(e) => {
                tracing::warn!(error = %e, "could not announce the subscriber change; others see it within their refresh interval");
                self.reload_async().await
            }
        }
    }

    /// Reloads (read after `version` was announced), then notes `version` as
    /// seen. Reloads run one at a time, each storing its list and version
    /// together, so a snapshot is never older than the version noted with it.
    async fn reload_as_of(self: &Arc<Self>, version: i64) -> anyhow::Result<usize> {
        let _one_at_a_time = self.reloading.lock().await;
        let n = self.reload_blocking().await?;
        self.version.store(version, Ordering::Release);
        Ok(n)
    }

    pub fn current(&self) -> Arc<Index> {
        self.index.load_full()
    }

    /// Loads every row (blocking: call from a blocking thread). Rows without a
    /// secret get one generated and stored.
    pub fn reload(&self) -> anyhow::Result<usize> {
        let mut conn = self.pool.get()?;
        let mut rows = repo::list_subscribers(&mut conn, None)?;
        repo::fill_missing_secrets(&mut conn, &mut rows)?;
        let previous = self.current();
        let index = Index::build(rows, Some(&previous));
        let n = index.len();
        self.index.store(Arc::new(index));
        Ok(n)
    }

    /// Reloads on a blocking thread (after any reload already under way).
    pub async fn reload_async(self: &Arc<Self>) -> anyhow::Result<usize> {
        let _one_at_a_time = self.reloading.lock().await;
        self.reload_blocking().await
    }

    async fn reload_blocking(self: &Arc<Self>) -> anyhow::Result<usize> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.reload()).await?
    }

    /// Looks one subscriber up, reading its row from the database when the
    /// snapshot does not have it (created after the last reload, or deleted).
    pub async fn lookup(self: &Arc<Self>, id: i64) -> anyhow::Result<Option<Arc<Loaded>>> {
        if let Some(l) = self.current().get(id) {
            return Ok(Some(l.clone()));
        }
        // One row, not a whole reload: jobs of a deleted subscriber stay cheap.
        self.fetch_fresh(id).await
    }

    /// Reads one subscriber straight from the database, bypassing the
    /// snapshot; a row inserted by SQL without a secret gets one, as on reload.
    pub async fn fetch_fresh(self: &Arc<Self>, id: i64) -> anyhow::Result<Option<Arc<Loaded>>> {
        let pool = self.pool.clone();
        let row = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let mut conn = pool.get()?;
            let mut row = repo::get_subscriber(&mut conn, id)?;
            repo::fill_missing_secrets(&mut conn, row.as_mut_slice())?;
            Ok(row)
        })
        .await??;
        Ok(row.map(|r| Arc::new(Loaded::new(r))))
    }

    /// Reloads every `interval`, and within a quarter second of a change
    /// announced through `queue` (see [`Queue::bump_subscribers_version`]).
    /// `on_reload` is told each outcome.
    pub fn spawn_refresh(
        self: &Arc<Self>,
        interval: Duration,
        queue: Queue,
        on_reload: impl Fn(&anyhow::Result<usize>) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let poll = interval.min(Duration::from_millis(250));
            let mut last_reload = tokio::time::Instant::now();
            if let Ok(v) = queue.subscribers_version().await {
                let _ =
                    me.version
                        .compare_exchange(i64::MIN, v, Ordering::AcqRel, Ordering::Acquire);
            }
            loop {
                tokio::time::sleep(poll).await;
                let version = queue.subscribers_version().await.ok();
                let announced = version.is_some_and(|v| v != me.version.load(Ordering::Acquire));
                if !announced && last_reload.elapsed() < interval {
                    continue;
                }
                let result = match version {
                    Some(v) => me.reload_as_of(v).await,
                    None => me.reload_async().await,
                };
                if let Err(e) = &result {
                    tracing::warn!(error = %e, "subscriber refresh failed; keeping the last snapshot");
                }
                on_reload(&result);
                last_reload = tokio::time::Instant::now();
            }
        })
    }
}
