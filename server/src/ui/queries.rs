//! The dashboard's lists: keyset pages (see [`super::keyset`]) over the
//! subscribers, the message log and the dead letters, and a few counts.
//! Written once for SQLite and PostgreSQL, like `switch_core::db::repo`.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use switch_core::db::models::{DeadLetter, DeliveryAttempt, LoggedMessage, Subscriber};
use switch_core::db::schema::{dead_letters, delivery_attempts, messages, subscribers};
use switch_core::db::{repo, AnyConnection};

use super::keyset::{keyset, Bound, Cursor, Fetched, Order, Page};
use crate::routes::messages::TopicFilter;

type Result<T> = std::result::Result<T, DieselError>;
type Backend = <AnyConnection as diesel::Connection>::Backend;

/// `%text%` for LIKE, with `%`, `_` and `\` taken literally.
fn contains_pattern(text: &str) -> String {
    format!("%{}%", like_literal(text))
}

/// Subscribers whose topic, target URL or description contains `text`,
/// whatever its case, or whose id it is. SQLite's LIKE already ignores case
/// (ASCII, as far as its `lower()` goes too); on PostgreSQL each column is
/// lowered first, which it does faster than an ILIKE.
fn subscriber_search(
    sqlite: bool,
    text: &str,
) -> diesel::expression::SqlLiteral<
    diesel::sql_types::Bool,
    impl diesel::query_builder::QueryFragment<Backend> + Send + 'static,
> {
    use diesel::sql_types::{BigInt, Text};
    let text = text.trim();
    let like = if sqlite {
        contains_pattern(text)
    } else {
        contains_pattern(&text.to_lowercase())
    };
    let column = |c: &str| {
        if sqlite {
            c.to_string()
        } else {
            format!("lower({c})")
        }
    };
    let id: i64 = text.parse().unwrap_or(-1);
    let test = |c: &str| format!("{} LIKE ", column(c));
    diesel::dsl::sql::<diesel::sql_types::Bool>(&format!("({}", test("topic")))
        .bind::<Text, _>(like.clone())
        .sql(&format!(" ESCAPE '\\' OR {}", test("target_url")))
        .bind::<Text, _>(like.clone())
        .sql(&format!(" ESCAPE '\\' OR {}", test("description")))
        .bind::<Text, _>(like)
        .sql(" ESCAPE '\\' OR id = ")
        .bind::<BigInt, _>(id)
        .sql(")")
}

/// A page of subscribers by id, those whose topic, target URL or description
/// contains `search` (any case), or whose id it is.
pub fn subscribers_page(
    c: &mut AnyConnection,
    search: Option<&str>,
    cursor: Cursor,
    limit: i64,
) -> Result<Page<Subscriber>> {
    let sqlite = matches!(c, AnyConnection::Sqlite(_));
    keyset(
        Order::Asc,
        cursor,
        limit,
        |s: &Subscriber| s.id,
        |bound, order, n| {
            let mut q = subscribers::table.into_boxed::<Backend>();
            if let Some(s) = search {
                q = q.filter(subscriber_search(sqlite, s));
            }
            q = match bound {
                Some(Bound::Gt(k)) => q.filter(subscribers::id.gt(k)),
                Some(Bound::Lt(k)) => q.filter(subscribers::id.lt(k)),
                None => q,
            };
            q = match order {
                Order::Asc => q.order(subscribers::id.asc()),
                Order::Desc => q.order(subscribers::id.desc()),
            };
            q.limit(n).load(c).map(Fetched::from)
        },
    )
}

/// How many subscribers there are, and how many of them are enabled.
pub fn subscriber_counts(c: &mut AnyConnection) -> Result<(i64, i64)> {
    let all = subscribers::table.count().get_result(c)?;
    let enabled = subscribers::table
        .filter(subscribers::enabled.eq(true))
        .count()
        .get_result(c)?;
    Ok((all, enabled))
}

/// The latest attempts at one subscriber, newest first.
pub fn recent_attempts(
    c: &mut AnyConnection,
    subscriber_id: i64,
    n: i64,
) -> Result<Vec<DeliveryAttempt>> {
    delivery_attempts::table
        .filter(delivery_attempts::subscriber_id.eq(subscriber_id))
        .order(delivery_attempts::id.desc())
        .limit(n)
        .load(c)
}

/// Which logged messages a search shows.
#[derive(Default)]
pub struct MessageSearch {
    pub topic: Option<TopicFilter>,
    pub author: Option<String>,
    pub after: Option<NaiveDateTime>,
    pub before: Option<NaiveDateTime>,
}

/// Rows of the (log_seq, topic) index read per step while matching a pattern.
const SCAN_STEP: i64 = 1000;
/// Steps one page may read before it shows what it found.
const SCAN_STEPS: usize = 20;

fn messages_query<'a>(
    s: &MessageSearch,
    bound: Option<Bound>,
    order: Order,
) -> messages::BoxedQuery<'a, Backend> {
    let mut q = messages::table.into_boxed::<Backend>();
    if let Some(t) = &s.topic {
        if let Some(exact) = &t.exact {
            q = q.filter(messages::topic.eq(exact.clone()));
        } else if let Some(prefix) = &t.prefix {
            q = q.filter(
                messages::topic
                    .like(format!("{}%", like_literal(prefix)))
                    .escape('\\'),
            );
        }
    }
    if let Some(a) = &s.author {
        q = q.filter(messages::author.eq(a.clone()));
    }
    if let Some(t) = s.after {
        q = q.filter(messages::created_at.gt(t));
    }
    if let Some(t) = s.before {
        q = q.filter(messages::created_at.lt(t));
    }
    q = match bound {
        Some(Bound::Gt(k)) => q.filter(messages::log_seq.gt(k)),
        Some(Bound::Lt(k)) => q.filter(messages::log_seq.lt(k)),
        None => q,
    };
    match order {
        Order::Asc => q.order(messages::log_seq.asc()),
        Order::Desc => q.order(messages::log_seq.desc()),
    }
}

fn like_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Reads up to `n` messages of the search from `bound` in `order`. A topic
/// pattern the database cannot select exactly is matched here, over the
/// places and topics of the index alone, for a bounded number of rows.
fn read_messages(
    c: &mut AnyConnection,
    s: &MessageSearch,
    bound: Option<Bound>,
    order: Order,
    n: i64,
) -> Result<Fetched<LoggedMessage>> {
    let Some(pattern) = s.topic.as_ref().filter(|t| t.exact.is_none()) else {
        return messages_query(s, bound, order)
            .limit(n)
            .load(c)
            .map(Fetched::from);
    };
    let mut wanted: Vec<i64> = Vec::new();
    let mut bound = bound;
    let mut last_seen = None;
    let mut complete = false;
    for _ in 0..SCAN_STEPS {
        let rows: Vec<(i64, String)> = messages_query(s, bound, order)
            .select((messages::log_seq, messages::topic))
            .limit(SCAN_STEP)
            .load(c)?;
        let exhausted = (rows.len() as i64) < SCAN_STEP;
        for (seq, topic) in rows {
            last_seen = Some(seq);
            if pattern.matches(&topic) {
                wanted.push(seq);
                if wanted.len() as i64 == n {
                    complete = true;
                    break;
                }
            }
        }
        if complete || exhausted {
            complete = true;
            break;
        }
        bound = last_seen.map(|seq| match order {
            Order::Asc => Bound::Gt(seq),
            Order::Desc => Bound::Lt(seq),
        });
    }
    let stopped_at = if complete { None } else { last_seen };
    let mut rows = repo::messages_at(c, &wanted)?;
    if order == Order::Desc {
        rows.reverse();
    }
    Ok(Fetched { rows, stopped_at })
}

/// A page of the message log, newest first.
pub fn messages_page(
    c: &mut AnyConnection,
    s: &MessageSearch,
    cursor: Cursor,
    limit: i64,
) -> Result<Page<LoggedMessage>> {
    keyset(
        Order::Desc,
        cursor,
        limit,
        |m: &LoggedMessage| m.log_seq,
        |bound, order, n| read_messages(c, s, bound, order, n),
    )
}

/// A page of dead letters, newest first: of one subscriber or all, pending
/// only or replayed too.
pub fn dead_letters_page(
    c: &mut AnyConnection,
    subscriber_id: Option<i64>,
    pending_only: bool,
    cursor: Cursor,
    limit: i64,
) -> Result<Page<DeadLetter>> {
    keyset(
        Order::Desc,
        cursor,
        limit,
        |d: &DeadLetter| d.id,
        |bound, order, n| {
            let mut q = dead_letters::table.into_boxed::<Backend>();
            if let Some(id) = subscriber_id {
                q = q.filter(dead_letters::subscriber_id.eq(id));
            }
            if pending_only {
                q = q.filter(dead_letters::replayed_at.is_null());
            }
            q = match bound {
                Some(Bound::Gt(k)) => q.filter(dead_letters::id.gt(k)),
                Some(Bound::Lt(k)) => q.filter(dead_letters::id.lt(k)),
                None => q,
            };
            q = match order {
                Order::Asc => q.order(dead_letters::id.asc()),
                Order::Desc => q.order(dead_letters::id.desc()),
            };
            q.limit(n).load(c).map(Fetched::from)
        },
    )
}

/// Pending dead letters, counted up to `cap` (a large backlog shows as "cap+").
pub fn pending_dead_letters(c: &mut AnyConnection, cap: i64) -> Result<i64> {
    let ids: Vec<i64> = dead_letters::table
        .select(dead_letters::id)
        .filter(dead_letters::replayed_at.is_null())
        .limit(cap + 1)
        .load(c)?;
    Ok(ids.len() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_text_is_taken_literally() {
        assert_eq!(contains_pattern("A_b%"), "%A\\_b\\%%");
        assert_eq!(like_literal("x\\y"), "x\\\\y");
    }
}
