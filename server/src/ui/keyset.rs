//! Keyset paging: a page starts after (or before) the key of a row, so it
//! costs one index range read however deep it is; never OFFSET, never a
//! count of what precedes it.

type Result<T> = std::result::Result<T, diesel::result::Error>;

/// Where a page starts, in the list's own order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    First,
    /// The rows after this key.
    After(i64),
    /// The rows before this key.
    Before(i64),
}

impl Cursor {
    /// From the `after` and `before` parameters of a page's URL.
    pub fn of(after: Option<i64>, before: Option<i64>) -> Cursor {
        match (after, before) {
            (Some(k), _) => Cursor::After(k),
            (None, Some(k)) => Cursor::Before(k),
            (None, None) => Cursor::First,
        }
    }

    /// The `(after, before)` parameters of a link to this page.
    pub fn params(self) -> (Option<String>, Option<String>) {
        match self {
            Cursor::First => (None, None),
            Cursor::After(k) => (Some(k.to_string()), None),
            Cursor::Before(k) => (None, Some(k.to_string())),
        }
    }
}

/// Key order of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

impl Order {
    fn reversed(self) -> Order {
        match self {
            Order::Asc => Order::Desc,
            Order::Desc => Order::Asc,
        }
    }
}

/// Keys strictly greater or smaller than a key.
#[derive(Debug, Clone, Copy)]
pub enum Bound {
    Gt(i64),
    Lt(i64),
}

/// What one read found: its rows, and, when it stopped before reaching its
/// limit or the end (a bounded scan), the key it stopped at.
pub struct Fetched<T> {
    pub rows: Vec<T>,
    pub stopped_at: Option<i64>,
}

impl<T> From<Vec<T>> for Fetched<T> {
    fn from(rows: Vec<T>) -> Self {
        Fetched {
            rows,
            stopped_at: None,
        }
    }
}

/// One page, in the list's order, and the cursors of its neighbours.
pub struct Page<T> {
    pub rows: Vec<T>,
    pub prev: Option<Cursor>,
    pub next: Option<Cursor>,
}

/// The page read forward from `bound`, and the cursor of the next one.
fn forward<T>(
    fetch: &mut impl FnMut(Option<Bound>, Order, i64) -> Result<Fetched<T>>,
    key: &impl Fn(&T) -> i64,
    bound: Option<Bound>,
    order: Order,
    limit: i64,
) -> Result<(Vec<T>, Option<Cursor>)> {
    let got = fetch(bound, order, limit + 1)?;
    let mut rows = got.rows;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = match (more, got.stopped_at) {
        (true, _) => rows.last().map(|r| Cursor::After(key(r))),
        (false, Some(k)) => Some(Cursor::After(k)),
        (false, None) => None,
    };
    Ok((rows, next))
}

/// Keyset paging: reads `limit + 1` rows from the cursor to know whether more
/// follow, and one row the other way to know whether any precede. `fetch`
/// reads rows within a bound, in a key order, at most `n`.
pub fn keyset<T>(
    order: Order,
    cursor: Cursor,
    limit: i64,
    key: impl Fn(&T) -> i64,
    mut fetch: impl FnMut(Option<Bound>, Order, i64) -> Result<Fetched<T>>,
) -> Result<Page<T>> {
    // "After" and "before" in the list's order.
    let after = |k: i64| match order {
        Order::Asc => Bound::Gt(k),
        Order::Desc => Bound::Lt(k),
    };
    let before = |k: i64| match order {
        Order::Asc => Bound::Lt(k),
        Order::Desc => Bound::Gt(k),
    };
    match cursor {
        Cursor::First => {
            let (rows, next) = forward(&mut fetch, &key, None, order, limit)?;
            Ok(Page {
                rows,
                prev: None,
                next,
            })
        }
        Cursor::After(k) => {
            let (rows, next) = forward(&mut fetch, &key, Some(after(k)), order, limit)?;
            let first = rows.first().map(&key).unwrap_or(k);
            let earlier = fetch(Some(before(first)), order.reversed(), 1)?;
            let prev = (!earlier.rows.is_empty() || earlier.stopped_at.is_some())
                .then_some(Cursor::Before(first));
            Ok(Page { rows, prev, next })
        }
        Cursor::Before(k) => {
            let got = fetch(Some(before(k)), order.reversed(), limit + 1)?;
            let mut rows = got.rows;
            let more = rows.len() as i64 > limit || got.stopped_at.is_some();
            if !more {
                // Back at the start: show a whole first page.
                let (rows, next) = forward(&mut fetch, &key, None, order, limit)?;
                return Ok(Page {
                    rows,
                    prev: None,
                    next,
                });
            }
            rows.truncate(limit as usize);
            rows.reverse();
            let prev = match got.stopped_at {
                Some(s) if (rows.len() as i64) < limit => Some(Cursor::Before(s)),
                _ => rows.first().map(|r| Cursor::Before(key(r))),
            };
            let next = rows.last().map(|r| Cursor::After(key(r)));
            Ok(Page { rows, prev, next })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keyset paging over the keys 1..=n, as a table would answer.
    fn pages(n: i64, order: Order, cursor: Cursor, limit: i64) -> Page<i64> {
        let all: Vec<i64> = (1..=n).collect();
        keyset(
            order,
            cursor,
            limit,
            |k| *k,
            |bound, o, take| {
                let mut rows: Vec<i64> = all
                    .iter()
                    .copied()
                    .filter(|k| match bound {
                        Some(Bound::Gt(b)) => *k > b,
                        Some(Bound::Lt(b)) => *k < b,
                        None => true,
                    })
                    .collect();
                if o == Order::Desc {
                    rows.reverse();
                }
                rows.truncate(take as usize);
                Ok(Fetched::from(rows))
            },
        )
        .unwrap()
    }

    #[test]
    fn pages_follow_each_other_both_ways_without_overlap() {
        for order in [Order::Asc, Order::Desc] {
            let mut seen = Vec::new();
            let mut cursor = Cursor::First;
            let mut visited = Vec::new();
            loop {
                let p = pages(23, order, cursor, 5);
                assert!(p.rows.len() <= 5);
                visited.push((cursor, p.rows.clone()));
                seen.extend(p.rows.iter().copied());
                match p.next {
                    Some(n) => cursor = n,
                    None => break,
                }
            }
            let mut expected: Vec<i64> = (1..=23).collect();
            if order == Order::Desc {
                expected.reverse();
            }
            assert_eq!(seen, expected, "{order:?}: every row once, in order");
            // Walking back from the last page gives the same pages.
            let (_, last_rows) = visited.last().unwrap().clone();
            let mut back = pages(23, order, visited.last().unwrap().0, 5).prev;
            let mut i = visited.len() - 1;
            let mut rows = last_rows;
            while let Some(c) = back {
                i -= 1;
                let p = pages(23, order, c, 5);
                assert_eq!(p.rows, visited[i].1, "{order:?}: page {i} again");
                assert_eq!(p.next.map(|n| pages(23, order, n, 5).rows), Some(rows));
                rows = p.rows.clone();
                back = p.prev;
            }
            assert_eq!(i, 0, "{order:?}: back to the first page");
        }
    }

    #[test]
    fn an_empty_list_has_no_neighbours() {
        let p = pages(0, Order::Asc, Cursor::First, 5);
        assert!(p.rows.is_empty() && p.prev.is_none() && p.next.is_none());
        let p = pages(5, Order::Asc, Cursor::First, 5);
        assert_eq!((p.rows.len(), p.next), (5, None));
    }
}
