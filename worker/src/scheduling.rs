//! Which job starts when: at most a subscriber's limit of this worker's
//! deliveries are in flight to it (its `max_in_flight`, else
//! `SWITCH_SUBSCRIBER_CONCURRENCY`, lowered by `429`s and raised again by
//! successes), and none while its circuit is open, but for the one probe.
//! Jobs that may not start are parked by the consumer; this module releases
//! them as slots free up, and sends the probes of open circuits.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use switch_core::queue::circuit::{Circuit, CircuitPolicy, CircuitState};
use switch_core::queue::consumer::Gate;
use switch_core::queue::{Entry, Queue};
use switch_core::subscribers::Cache;
use tokio::sync::Notify;

/// A job handed out this many times (read once, then taken over after its
/// worker stopped each time) is a poison job: it is dead-lettered, not retried.
pub const POISON_DELIVERIES: u32 = 6;
/// How often shared state (circuits, parked subscribers) is looked at.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// Released jobs not yet seen back by then were taken by another worker.
const IN_TRANSIT_FOR: Duration = Duration::from_secs(2);

/// One subscriber's lane in this worker.
#[derive(Debug, Clone)]
struct Lane {
    in_flight: usize,
    /// The current limit: the cap, halved by each 429, +1 per success.
    limit: usize,
    /// Jobs released from parking, not yet read back.
    in_transit: usize,
    released_at: Instant,
}

/// Per-subscriber limits and circuit state of one worker.
pub struct Scheduler {
    cache: Arc<Cache>,
    default_cap: usize,
    lanes: Mutex<HashMap<i64, Lane>>,
    /// Subscribers whose circuit has a record (any recent failure), as last seen.
    circuits: ArcSwap<HashMap<i64, Circuit>>,
    /// Subscribers known to have parked jobs, and in which partitions.
    parked: Mutex<HashMap<i64, HashSet<usize>>>,
    wake: Notify,
}

impl Scheduler {
    pub fn new(cache: Arc<Cache>, default_cap: usize) -> Arc<Self> {
        Arc::new(Scheduler {
            cache,
            default_cap: default_cap.max(1),
            lanes: Mutex::new(HashMap::new()),
            circuits: ArcSwap::from_pointee(HashMap::new()),
            parked: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        })
    }

    fn lanes(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Lane>> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn parked(&self) -> std::sync::MutexGuard<'_, HashMap<i64, HashSet<usize>>> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most deliveries of this worker in flight to `subscriber_id`.
    pub fn cap(&self, subscriber_id: i64) -> usize {
        self.cache
            .current()
            .get(subscriber_id)
            .and_then(|l| l.row.max_in_flight)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n > 0)
            .unwrap_or(self.default_cap)
    }

    fn new_lane(&self, subscriber_id: i64) -> Lane {
        Lane {
            in_flight: 0,
            limit: self.cap(subscriber_id),
            in_transit: 0,
            released_at: Instant::now(),
        }
    }

    pub fn circuit(&self, subscriber_id: i64) -> CircuitState {
        self.circuits
            .load()
            .get(&subscriber_id)
            .map(|c| c.state)
            .unwrap_or_default()
    }

    /// Whether the subscriber has failed recently (its circuit has a record),
    /// so that a success must be reported to close or reset it.
    pub fn has_circuit_record(&self, subscriber_id: i64) -> bool {
        self.circuits.load().contains_key(&subscriber_id)
    }

    /// Notes a circuit state just returned by Redis.
    pub fn note_circuit(&self, subscriber_id: i64, circuit: Option<Circuit>) {
        let mut next = HashMap::clone(&self.circuits.load());
        match circuit {
            Some(c) => next.insert(subscriber_id, c),
            None => next.remove(&subscriber_id),
        };
        self.circuits.store(Arc::new(next));
        self.wake.notify_one();
    }

    /// A delivery to `subscriber_id` is over; `throttled` when it was a 429,
    /// `delivered` when it succeeded (AIMD: halve on 429, +1 on success).
    pub fn finished(&self, subscriber_id: i64, delivered: bool, throttled: bool) {
        let cap = self.cap(subscriber_id);
        {
            let mut lanes = self.lanes();
            if let Some(lane) = lanes.get_mut(&subscriber_id) {
                lane.in_flight = lane.in_flight.saturating_sub(1);
                if throttled {
                    lane.limit = (lane.limit / 2).max(1);
                } else if delivered {
                    lane.limit = (lane.limit + 1).min(cap);
                }
                lane.limit = lane.limit.min(cap);
                if lane.in_flight == 0 && lane.limit == cap && lane.in_transit == 0 {
                    lanes.remove(&subscriber_id);
                }
            }
        }
        if self.parked().contains_key(&subscriber_id) {
            self.wake.notify_one();
        }
    }

    /// The current limit of this worker for `subscriber_id`.
    pub fn limit(&self, subscriber_id: i64) -> usize {
        self.lanes()
            .get(&subscriber_id)
            .map(|l| l.limit)
            .unwrap_or_else(|| self.cap(subscriber_id))
    }

    /// Deliveries of this worker in flight to `subscriber_id`.
    pub fn in_flight(&self, subscriber_id: i64) -> usize {
        self.lanes()
            .get(&subscriber_id)
            .map(|l| l.in_flight)
            .unwrap_or(0)
    }

    /// Releases parked jobs while there is room, and sends the probes of open
    /// circuits when due: at every sweep, and as soon as a slot frees.
    pub async fn run_releases(self: Arc<Self>, queue: Queue, policy: CircuitPolicy) {
        let mut last_sweep = Instant::now() - SWEEP_EVERY;
        loop {
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = Instant::now();
                match queue.circuits().await {
                    Ok(c) => self.circuits.store(Arc::new(c)),
                    Err(e) => tracing::debug!(error = %e, "circuit states unavailable"),
                }
                match queue.parked_subscribers().await {
                    Ok(pairs) => {
                        let mut parked: HashMap<i64, HashSet<usize>> = HashMap::new();
                        for (part, id) in pairs {
                            parked.entry(id).or_default().insert(part);
                        }
                        *self.parked() = parked;
                    }
                    Err(e) => tracing::debug!(error = %e, "parked subscribers unavailable"),
                }
            }
            let ids: Vec<(i64, Vec<usize>)> = self
                .parked()
                .iter()
                .map(|(id, parts)| {
                    let mut parts: Vec<usize> = parts.iter().copied().collect();
                    parts.sort_unstable();
                    (*id, parts)
                })
                .collect();
            let now_ms = chrono::Utc::now().timestamp_millis();
            for (id, parts) in ids {
                if let Err(e) = self.release_one(&queue, &policy, id, &parts, now_ms).await {
                    tracing::debug!(subscriber_id = id, error = %e, "releasing parked jobs failed");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    async fn release_one(
        &self,
        queue: &Queue,
        policy: &CircuitPolicy,
        id: i64,
        partitions: &[usize],
        now_ms: i64,
    ) -> redis::RedisResult<()> {
        let disabled = self.cache.current().get(id).is_none_or(|l| !l.row.enabled);
        match self.circuits.load().get(&id) {
            // Jobs of a disabled subscriber go through at once (to their
            // dead letters), whatever its circuit.
            Some(c) if c.state != CircuitState::Closed && !disabled => {
                let due = match c.state {
                    CircuitState::Open => c.probe_at_ms.is_none_or(|at| at <= now_ms),
                    _ => true, // the script knows when a half-open probe is lost
                };
                if due && queue.circuit_probe(id, partitions, now_ms, policy).await? {
                    tracing::info!(subscriber_id = id, "circuit open: probe sent");
                }
                return Ok(());
            }
            _ => {}
        }
        let room = {
            let mut lanes = self.lanes();
            let lane = lanes.entry(id).or_insert_with(|| self.new_lane(id));
            if lane.in_transit > 0 && lane.released_at.elapsed() > IN_TRANSIT_FOR {
                lane.in_transit = 0;
            }
            let limit = if disabled { usize::MAX / 4 } else { lane.limit };
            let room = limit.saturating_sub(lane.in_flight + lane.in_transit);
            let room = room.min(256);
            lane.in_transit += room;
            lane.released_at = Instant::now();
            room
        };
        if room == 0 {
            return Ok(());
        }
        // From each partition holding some, while there is room.
        let mut moved_n = 0;
        let mut result = Ok(());
        for part in partitions {
            let want = room - moved_n;
            if want == 0 {
                break;
            }
            match queue.release_parked(*part, id, want, false).await {
                Ok(m) => {
                    moved_n += m;
                    if m < want {
                        let mut parked = self.parked();
                        if let Some(parts) = parked.get_mut(&id) {
                            parts.remove(part);
                            if parts.is_empty() {
                                parked.remove(&id);
                            }
                        }
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let mut lanes = self.lanes();
        if let Some(lane) = lanes.get_mut(&id) {
            lane.in_transit = lane.in_transit.saturating_sub(room - moved_n);
        }
        result
    }
}

impl Gate for Scheduler {
    fn admit(&self, entry: &Entry) -> bool {
        let Ok(job) = &entry.job else {
            return true; // unreadable: dead-lettered at once
        };
        let id = job.subscriber_id;
        // A poison job is dead-lettered at once.
        let poison = entry.deliveries > POISON_DELIVERIES;
        let disabled = self.cache.current().get(id).is_some_and(|l| !l.row.enabled);
        let mut lanes = self.lanes();
        let lane = lanes.entry(id).or_insert_with(|| self.new_lane(id));
        lane.in_transit = lane.in_transit.saturating_sub(1);
        // A disabled subscriber's jobs finish at once, without a request.
        let admit = disabled
            || poison
            || entry.probe
            || (self.circuit(id) == CircuitState::Closed && lane.in_flight < lane.limit);
        if admit {
            lane.in_flight += 1;
        } else {
            drop(lanes);
            self.parked().entry(id).or_default().insert(entry.partition);
        }
        admit
    }

    fn force(&self, entry: &Entry) {
        if let Ok(job) = &entry.job {
            let id = job.subscriber_id;
            let mut lanes = self.lanes();
            lanes
                .entry(id)
                .or_insert_with(|| self.new_lane(id))
                .in_flight += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switch_core::config::DatabaseUrl;
    use switch_core::job::Job;

    fn scheduler(cap: usize) -> Arc<Scheduler> {
        let pool = switch_core::db::pool(&DatabaseUrl::Sqlite(":memory:".into()), 1);
        Scheduler::new(Arc::new(Cache::new(pool)), cap)
    }

    fn entry(n: usize, subscriber_id: i64) -> Entry {
        let job = Job::new(subscriber_id, 1, Arc::from(r#"{"id":"m"}"#));
        Entry {
            raw: job.encode(),
            job: Ok(job),
            ..Entry::bare(0, &format!("{n}-0"))
        }
    }

    #[test]
    fn a_subscriber_at_its_limit_is_parked_others_are_not() {
        let s = scheduler(2);
        assert!(s.admit(&entry(1, 7)));
        assert!(s.admit(&entry(2, 7)));
        assert!(!s.admit(&entry(3, 7)), "third job of 7 waits");
        assert!(s.parked().contains_key(&7));
        assert!(s.admit(&entry(4, 8)), "another subscriber is not held up");
        s.finished(7, true, false);
        assert!(s.admit(&entry(5, 7)), "a freed slot is used again");
        assert_eq!(s.in_flight(7), 2);
    }

    #[test]
    fn throttling_halves_the_limit_and_successes_raise_it_again() {
        let s = scheduler(8);
        for i in 0..8 {
            assert!(s.admit(&entry(i, 1)));
        }
        s.finished(1, false, true);
        assert_eq!(s.limit(1), 4, "429: halved");
        s.finished(1, false, true);
        s.finished(1, false, true);
        s.finished(1, false, true);
        assert_eq!(s.limit(1), 1, "never below one");
        assert_eq!(s.in_flight(1), 4);
        assert!(!s.admit(&entry(20, 1)), "over the lowered limit");
        s.finished(1, true, false);
        assert_eq!(s.limit(1), 2, "+1 per success");
        for _ in 0..20 {
            assert!(s.admit(&entry(30, 1)) || s.in_flight(1) >= s.limit(1));
            s.finished(1, true, false);
        }
        assert_eq!(s.limit(1), 8, "back to the cap, not above");
    }

    #[test]
    fn open_circuits_hold_jobs_but_let_probes_and_poison_through() {
        let s = scheduler(8);
        s.note_circuit(
            3,
            Some(Circuit {
                state: CircuitState::Open,
                failures: 10,
                failing_since_ms: Some(0),
                probe_at_ms: Some(i64::MAX),
            }),
        );
        assert!(!s.admit(&entry(1, 3)));
        let mut probe = entry(2, 3);
        probe.probe = true;
        assert!(s.admit(&probe), "the probe goes");
        let mut poison = entry(3, 3);
        poison.deliveries = POISON_DELIVERIES + 1;
        assert!(s.admit(&poison), "a poison job is dead-lettered at once");
        let unreadable = Entry {
            job: Err("bad".into()),
            ..entry(4, 3)
        };
        assert!(s.admit(&unreadable));
        s.note_circuit(3, None);
        assert!(s.admit(&entry(5, 3)), "closed again");
    }
}
