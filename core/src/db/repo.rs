//! Queries, written once for both backends.

use diesel::prelude::*;
use diesel::result::Error as DieselError;

use super::models::*;
use super::schema::{api_keys, dead_letters, delivery_attempts, messages, outbox, subscribers};
use super::AnyConnection;

type Result<T> = std::result::Result<T, DieselError>;

pub fn list_subscribers(conn: &mut AnyConnection, topic: Option<&str>) -> Result<Vec<Subscriber>> {
    let mut q = subscribers::table.into_boxed();
    if let Some(t) = topic {
        q = q.filter(subscribers::topic.eq(t.to_string()));
    }
    q.order(subscribers::id.asc()).load(conn)
}

pub fn get_subscriber(conn: &mut AnyConnection, id: i64) -> Result<Option<Subscriber>> {
    subscribers::table.find(id).first(conn).optional()
}

pub fn insert_subscriber(conn: &mut AnyConnection, new: &NewSubscriber) -> Result<Subscriber> {
    let id: i64 = diesel::insert_into(subscribers::table)
        .values(new)
        .returning(subscribers::id)
        .get_result(conn)?;
    subscribers::table.find(id).first(conn)
}

pub fn update_subscriber(
    conn: &mut AnyConnection,
    id: i64,
    changes: &SubscriberChanges,
) -> Result<Option<Subscriber>> {
    let n = diesel::update(subscribers::table.find(id))
        .set(changes)
        .execute(conn)?;
    if n == 0 {
        return Ok(None);
    }
    get_subscriber(conn, id)
}

pub fn delete_subscriber(conn: &mut AnyConnection, id: i64) -> Result<bool> {
    Ok(diesel::delete(subscribers::table.find(id)).execute(conn)? > 0)
}

/// Gives every row without a secret (rows inserted by SQL) a generated one,
/// stored, so no reader ever sees a subscriber without its secret.
pub fn fill_missing_secrets(conn: &mut AnyConnection, rows: &mut [Subscriber]) -> Result<()> {
    for row in rows.iter_mut().filter(|r| r.secret.is_none()) {
        row.secret = fill_missing_secret(conn, row.id, &crate::signature::generate_secret())?;
    }
    Ok(())
}

/// Stores a generated secret for a row that has none; another server may have won the race.
pub fn fill_missing_secret(
    conn: &mut AnyConnection,
    id: i64,
    secret: &str,
) -> Result<Option<String>> {
    diesel::update(
        subscribers::table
            .find(id)
            .filter(subscribers::secret.is_null()),
    )
    .set(subscribers::secret.eq(secret.to_string()))
    .execute(conn)?;
    subscribers::table
        .find(id)
        .select(subscribers::secret)
        .first(conn)
}

/// Disables a subscriber on the hub's own account, saying why (`gone`: it
/// answered 410; `failing`: every attempt failed for too long).
pub fn disable(conn: &mut AnyConnection, id: i64, reason: &str) -> Result<bool> {
    let n = diesel::update(subscribers::table.find(id))
        .set((
            subscribers::enabled.eq(false),
            subscribers::disabled_reason.eq(Some(reason.to_string())),
            subscribers::updated_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(n > 0)
}

/// Finds a subscriber by its natural key (the seed's upsert key).
pub fn find_by_topic_and_url(
    conn: &mut AnyConnection,
    topic: &str,
    url: &str,
) -> Result<Option<Subscriber>> {
    subscribers::table
        .filter(subscribers::topic.eq(topic.to_string()))
        .filter(subscribers::target_url.eq(url.to_string()))
        .order(subscribers::id.asc())
        .first(conn)
        .optional()
}

/// Rows per multi-row INSERT on PostgreSQL (9 binds each, well under its 65,535).
const PG_INSERT_CHUNK: usize = 1000;

/// Writes a batch of attempt rows in one transaction, on the backend's own
/// connection type: through the multi-backend connection every statement is
/// serialized once more, which cost a tenth of a worker's CPU under load.
pub fn insert_attempts(conn: &mut AnyConnection, rows: &[NewDeliveryAttempt]) -> Result<()> {
    match conn {
        // One cached prepared statement executed per row: cheaper in SQLite
        // than preparing a new thousand-row statement for every batch.
        AnyConnection::Sqlite(c) => c.transaction(|c| {
            for row in rows {
                diesel::insert_into(delivery_attempts::table)
                    .values(row)
                    .execute(c)?;
            }
            Ok(())
        }),
        // One round trip per chunk.
        AnyConnection::Postgresql(c) => c.transaction(|c| {
            for chunk in rows.chunks(PG_INSERT_CHUNK) {
                diesel::insert_into(delivery_attempts::table)
                    .values(chunk)
                    .execute(c)?;
            }
            Ok(())
        }),
    }
}

#[derive(Debug, Default, Clone)]
pub struct AttemptQuery {
    pub subscriber_id: Option<i64>,
    pub message_id: Option<String>,
    pub outcome: Option<String>,
    pub since: Option<i64>,
    pub limit: i64,
}

pub fn list_attempts(conn: &mut AnyConnection, q: &AttemptQuery) -> Result<Vec<DeliveryAttempt>> {
    let mut query = delivery_attempts::table.into_boxed();
    if let Some(s) = q.subscriber_id {
        query = query.filter(delivery_attempts::subscriber_id.eq(s));
    }
    if let Some(m) = &q.message_id {
        query = query.filter(delivery_attempts::message_id.eq(m.clone()));
    }
    if let Some(o) = &q.outcome {
        query = query.filter(delivery_attempts::outcome.eq(o.clone()));
    }
    if let Some(since) = q.since {
        query = query.filter(delivery_attempts::id.gt(since));
    }
    query
        .order(delivery_attempts::id.asc())
        .limit(q.limit)
        .load(conn)
}

pub fn insert_dead_letter(conn: &mut AnyConnection, row: &NewDeadLetter) -> Result<i64> {
    diesel::insert_into(dead_letters::table)
        .values(row)
        .returning(dead_letters::id)
        .get_result(conn)
}

pub fn list_dead_letters(
    conn: &mut AnyConnection,
    subscriber_id: Option<i64>,
    since: Option<i64>,
    limit: i64,
) -> Result<Vec<DeadLetter>> {
    let mut q = dead_letters::table.into_boxed();
    if let Some(s) = subscriber_id {
        q = q.filter(dead_letters::subscriber_id.eq(s));
    }
    if let Some(since) = since {
        q = q.filter(dead_letters::id.gt(since));
    }
    q.order(dead_letters::id.asc()).limit(limit).load(conn)
}

pub fn get_dead_letter(conn: &mut AnyConnection, id: i64) -> Result<Option<DeadLetter>> {
    dead_letters::table.find(id).first(conn).optional()
}

/// Dead letters not replayed yet, of one subscriber or of all.
pub fn pending_dead_letters(
    conn: &mut AnyConnection,
    subscriber_id: Option<i64>,
) -> Result<Vec<DeadLetter>> {
    let mut q = dead_letters::table
        .filter(dead_letters::replayed_at.is_null())
        .into_boxed();
    if let Some(id) = subscriber_id {
        q = q.filter(dead_letters::subscriber_id.eq(id));
    }
    q.order(dead_letters::id.asc()).load(conn)
}

pub fn mark_replayed(conn: &mut AnyConnection, ids: &[i64]) -> Result<usize> {
    diesel::update(dead_letters::table.filter(dead_letters::id.eq_any(ids.to_vec())))
        .set(dead_letters::replayed_at.eq(Some(now())))
        .execute(conn)
}

/// Rows per multi-row INSERT of messages on PostgreSQL (13 binds each).
const PG_MESSAGE_CHUNK: usize = 1000;

/// Writes logged messages in one transaction; a message already there (its
/// log entry archived twice after a crash) is left as it is. Returns how many
/// rows were new.
pub fn insert_messages(conn: &mut AnyConnection, rows: &[LoggedMessage]) -> Result<usize> {
    match conn {
        AnyConnection::Sqlite(c) => c.transaction(|c| {
            let mut n = 0;
            for row in rows {
                n += diesel::insert_or_ignore_into(messages::table)
                    .values(row)
                    .execute(c)?;
            }
            Ok(n)
        }),
        AnyConnection::Postgresql(c) => c.transaction(|c| {
            let mut n = 0;
            for chunk in rows.chunks(PG_MESSAGE_CHUNK) {
                n += diesel::insert_into(messages::table)
                    .values(chunk)
                    .on_conflict_do_nothing()
                    .execute(c)?;
            }
            Ok(n)
        }),
    }
}

/// Which logged messages to list.
#[derive(Debug, Default, Clone)]
pub struct MessageQuery {
    /// Only this topic.
    pub topic: Option<String>,
    /// Only topics starting with this (a pattern's literal prefix).
    pub topic_prefix: Option<String>,
    pub author: Option<String>,
    pub after: Option<chrono::NaiveDateTime>,
    pub before: Option<chrono::NaiveDateTime>,
    /// Only after this place in publish order.
    pub since: Option<i64>,
    /// Only before this place: everything before it is committed.
    pub horizon: Option<i64>,
    pub limit: i64,
}

/// Escapes `%`, `_` and the escape character itself for a LIKE pattern.
fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The rows of `q`, filtered by the database, as a boxed query.
fn messages_query<'a>(
    q: &MessageQuery,
) -> messages::BoxedQuery<'a, <AnyConnection as diesel::Connection>::Backend> {
    let mut query = messages::table.into_boxed();
    if let Some(t) = &q.topic {
        query = query.filter(messages::topic.eq(t.clone()));
    }
    if let Some(p) = &q.topic_prefix {
        query = query.filter(messages::topic.like(like_prefix(p)).escape('\\'));
    }
    if let Some(a) = &q.author {
        query = query.filter(messages::author.eq(a.clone()));
    }
    if let Some(t) = q.after {
        query = query.filter(messages::created_at.gt(t));
    }
    if let Some(t) = q.before {
        query = query.filter(messages::created_at.lt(t));
    }
    if let Some(s) = q.since {
        query = query.filter(messages::log_seq.gt(s));
    }
    if let Some(h) = q.horizon {
        query = query.filter(messages::log_seq.lt(h));
    }
    query.order(messages::log_seq.asc()).limit(q.limit)
}

pub fn list_messages(conn: &mut AnyConnection, q: &MessageQuery) -> Result<Vec<LoggedMessage>> {
    messages_query(q).load(conn)
}

/// Place and topic of the rows of `q`: without author or time bounds, read
/// from the (log_seq, topic) index alone, for filtering by a topic pattern.
pub fn scan_topics(conn: &mut AnyConnection, q: &MessageQuery) -> Result<Vec<(i64, String)>> {
    messages_query(q)
        .select((messages::log_seq, messages::topic))
        .load(conn)
}

/// The rows at these places, in publish order.
pub fn messages_at(conn: &mut AnyConnection, seqs: &[i64]) -> Result<Vec<LoggedMessage>> {
    messages::table
        .filter(messages::log_seq.eq_any(seqs.to_vec()))
        .order(messages::log_seq.asc())
        .load(conn)
}

pub fn get_message(conn: &mut AnyConnection, id: &str) -> Result<Option<LoggedMessage>> {
    messages::table.find(id.to_string()).first(conn).optional()
}

/// Every attempt of one message, oldest first.
pub fn attempts_of_message(conn: &mut AnyConnection, id: &str) -> Result<Vec<DeliveryAttempt>> {
    delivery_attempts::table
        .filter(delivery_attempts::message_id.eq(id.to_string()))
        .order(delivery_attempts::id.asc())
        .load(conn)
}

/// Deletes up to `batch` of each: messages, attempts, and replayed dead
/// letters older than `cutoff`, each in a statement of its own so that no
/// lock is held for long. Returns how many rows went.
pub fn delete_older_than(
    conn: &mut AnyConnection,
    cutoff: chrono::NaiveDateTime,
    batch: i64,
) -> Result<usize> {
    let old: Vec<String> = messages::table
        .select(messages::id)
        .filter(messages::created_at.lt(cutoff))
        .limit(batch)
        .load(conn)?;
    let mut n = diesel::delete(messages::table.filter(messages::id.eq_any(old))).execute(conn)?;
    let old: Vec<i64> = delivery_attempts::table
        .select(delivery_attempts::id)
        .filter(delivery_attempts::created_at.lt(cutoff))
        .limit(batch)
        .load(conn)?;
    n += diesel::delete(delivery_attempts::table.filter(delivery_attempts::id.eq_any(old)))
        .execute(conn)?;
    let old: Vec<i64> = dead_letters::table
        .select(dead_letters::id)
        .filter(dead_letters::replayed_at.is_not_null())
        .filter(dead_letters::created_at.lt(cutoff))
        .limit(batch)
        .load(conn)?;
    n += diesel::delete(dead_letters::table.filter(dead_letters::id.eq_any(old))).execute(conn)?;
    Ok(n)
}

pub fn insert_api_key(conn: &mut AnyConnection, new: &NewApiKey) -> Result<ApiKey> {
    let id: i64 = diesel::insert_into(api_keys::table)
        .values(new)
        .returning(api_keys::id)
        .get_result(conn)?;
    api_keys::table.find(id).first(conn)
}

pub fn list_api_keys(conn: &mut AnyConnection) -> Result<Vec<ApiKey>> {
    api_keys::table.order(api_keys::id.asc()).load(conn)
}

/// Revokes a key by deleting it; false when there was none.
pub fn delete_api_key(conn: &mut AnyConnection, id: i64) -> Result<bool> {
    Ok(diesel::delete(api_keys::table.find(id)).execute(conn)? > 0)
}

/// Spools publishes (all or none), in order.
pub fn insert_outbox(conn: &mut AnyConnection, rows: &[NewOutboxRow]) -> Result<()> {
    let write = |c: &mut AnyConnection| -> Result<()> {
        for row in rows {
            diesel::insert_into(outbox::table).values(row).execute(c)?;
        }
        Ok(())
    };
    conn.transaction(write)
}

/// The oldest spooled publishes, at most `limit`, in publish order.
pub fn next_outbox(conn: &mut AnyConnection, limit: i64) -> Result<Vec<OutboxRow>> {
    outbox::table
        .order(outbox::seq.asc())
        .limit(limit)
        .load(conn)
}

/// Forgets spooled publishes once they are in the queue.
pub fn delete_outbox(conn: &mut AnyConnection, seqs: &[i64]) -> Result<usize> {
    diesel::delete(outbox::table.filter(outbox::seq.eq_any(seqs))).execute(conn)
}

/// Spooled publishes still waiting.
pub fn outbox_len(conn: &mut AnyConnection) -> Result<i64> {
    outbox::table.count().get_result(conn)
}
