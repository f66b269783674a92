//! Topics (`orders.created`) and subscriber patterns with AMQP topic-exchange
//! semantics: `*` is exactly one segment, `#` is zero or more.

use std::fmt;

const MAX_LEN: usize = 255;

fn valid_segment_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':')
}

/// Why a topic or pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TopicError(pub String);

fn check_shape(src: &str, what: &str) -> Result<(), TopicError> {
    if src.is_empty() || src.len() > MAX_LEN {
        return Err(TopicError(format!(
            "a {what} must be 1 to {MAX_LEN} characters long"
        )));
    }
    if src.split('.').any(str::is_empty) {
        return Err(TopicError(format!(
            "{what} `{src}` has an empty segment (segments are joined by single dots)"
        )));
    }
    Ok(())
}

/// A concrete topic a message is published on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic(String);

impl Topic {
    pub fn parse(src: &str) -> Result<Self, TopicError> {
        check_shape(src, "topic")?;
        if let Some(c) = src.chars().find(|c| *c != '.' && !valid_segment_char(*c)) {
            return Err(TopicError(format!(
                "topic `{}` contains `{c}`; allowed are A-Z a-z 0-9 _ - : and `.` between segments",
                src.escape_default()
            )));
        }
        Ok(Topic(src.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Literal(String),
    One,
    Many,
}

/// A subscriber's topic pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicPattern {
    source: String,
    segments: Vec<Segment>,
}

impl TopicPattern {
    pub fn parse(src: &str) -> Result<Self, TopicError> {
        check_shape(src, "topic pattern")?;
        let mut segments = Vec::new();
        for seg in src.split('.') {
            segments.push(match seg {
                "*" => Segment::One,
                "#" => Segment::Many,
                lit => {
                    if let Some(c) = lit.chars().find(|c| !valid_segment_char(*c)) {
                        return Err(TopicError(format!(
                            "pattern `{}` contains `{c}`; a segment is A-Z a-z 0-9 _ - : or exactly `*` or `#`",
                            src.escape_default()
                        )));
                    }
                    Segment::Literal(lit.to_string())
                }
            });
        }
        // `#.#` is the same as `#`; collapsing keeps matching linear.
        segments.dedup_by(|a, b| *a == Segment::Many && *b == Segment::Many);
        Ok(TopicPattern {
            source: src.to_string(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when the pattern has no wildcard, so it matches only itself.
    pub fn is_exact(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Literal(_)))
    }

    pub fn matches(&self, topic: &Topic) -> bool {
        if self.is_exact() {
            return self.source == topic.0;
        }
        let words: Vec<&str> = topic.0.split('.').collect();
        match_segments(&self.segments, &words)
    }

    /// Matches a topic already split at its dots (split once per publish, not per pattern).
    /// Whether every topic `other` can match is matched by this pattern (a
    /// token limited to this pattern may watch `other`).
    pub fn covers(&self, other: &TopicPattern) -> bool {
        let mine: Vec<&str> = self.as_str().split('.').collect();
        let theirs: Vec<&str> = other.as_str().split('.').collect();
        covers(&mine, &theirs)
    }

    pub fn matches_words(&self, words: &[&str]) -> bool {
        match_segments(&self.segments, words)
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Iterative matcher with one backtrack point for the last `#` seen
/// (the classic wildcard algorithm), so hostile patterns stay linear-ish.
fn match_segments(pattern: &[Segment], words: &[&str]) -> bool {
    let (mut p, mut w) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while w < words.len() {
        match pattern.get(p) {
            Some(Segment::Literal(l)) if l == words[w] => {
                p += 1;
                w += 1;
            }
            Some(Segment::One) => {
                p += 1;
                w += 1;
            }
            Some(Segment::Many) => {
                star = Some((p, w));
                p += 1;
            }
            _ => match star {
                Some((sp, sw)) => {
                    p = sp + 1;
                    w = sw + 1;
                    star = Some((sp, sw + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|s| *s == Segment::Many)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(p: &str, t: &str) -> bool {
        TopicPattern::parse(p)
            .unwrap()
            .matches(&Topic::parse(t).unwrap())
    }

    #[test]
    fn amqp_examples() {
        assert!(m("DATABASE.*", "DATABASE.CONNECTION_LOST"));
        assert!(!m("DATABASE.*", "DATABASE"));
        assert!(!m("DATABASE.*", "DATABASE.a.b"));
        assert!(m("orders.#", "orders"));
        assert!(m("orders.#", "orders.created.eu"));
        assert!(m("#", "anything.at.all"));
        assert!(m("*.created", "orders.created"));
        assert!(!m("*.created", "created"));
        assert!(m("a.#.z", "a.z"));
        assert!(m("a.#.z", "a.b.c.z"));
        assert!(!m("a.#.z", "a.b.c"));
        assert!(m("#.b.#", "a.b.c"));
        assert!(m("orders.created", "orders.created"));
        assert!(!m("orders.created", "orders.created.x"));
        assert!(m("*.*.#", "a.b"));
        assert!(!m("*.*.#", "a"));
    }

    #[test]
    fn bad_topics_and_patterns() {
        for bad in ["", ".a", "a.", "a..b", "a b", "a/b", "é", "a.*", "a.#"] {
            assert!(Topic::parse(bad).is_err(), "topic {bad}");
        }
        assert!(Topic::parse(&"a".repeat(256)).is_err());
        assert!(Topic::parse(&"a".repeat(255)).is_ok());
        for bad in ["", "a.b*", "a.#x", "a..*", "a b.*"] {
            assert!(TopicPattern::parse(bad).is_err(), "pattern {bad}");
        }
    }

    /// Reference matcher: plain recursion straight from the definition.
    fn reference(p: &[Segment], w: &[&str]) -> bool {
        match p.split_first() {
            None => w.is_empty(),
            Some((Segment::Many, rest)) => (0..=w.len()).any(|i| reference(rest, &w[i..])),
            Some((Segment::One, rest)) => !w.is_empty() && reference(rest, &w[1..]),
            Some((Segment::Literal(l), rest)) => {
                w.first() == Some(&l.as_str()) && reference(rest, &w[1..])
            }
        }
    }

    proptest! {
        #[test]
        fn matcher_agrees_with_definition(
            pat in proptest::collection::vec(prop_oneof!["a", "b", Just("*".to_string()), Just("#".to_string())], 1..6),
            topic in proptest::collection::vec(prop_oneof!["a", "b", "c"], 1..7),
        ) {
            let p = TopicPattern::parse(&pat.join(".")).unwrap();
            let t = Topic::parse(&topic.join(".")).unwrap();
            let words: Vec<&str> = topic.iter().map(String::as_str).collect();
            prop_assert_eq!(p.matches(&t), reference(&p.segments, &words));
            prop_assert_eq!(p.matches_words(&words), reference(&p.segments, &words));
        }

        #[test]
        fn exact_pattern_matches_only_itself(a in "[a-z]{1,5}(\\.[a-z]{1,5}){0,3}", b in "[a-z]{1,5}(\\.[a-z]{1,5}){0,3}") {
            let p = TopicPattern::parse(&a).unwrap();
            prop_assert_eq!(p.matches(&Topic::parse(&b).unwrap()), a == b);
        }

        #[test]
        fn hash_matches_everything(t in "[a-z]{1,5}(\\.[a-z]{1,5}){0,5}") {
            prop_assert!(TopicPattern::parse("#").unwrap().matches(&Topic::parse(&t).unwrap()));
        }
    }
}

/// Pattern `c` covers pattern `p`: every topic `p` matches, `c` matches.
fn covers(c: &[&str], p: &[&str]) -> bool {
    match (c.first(), p.first()) {
        (None, None) => true,
        // `c` has run out: `p` still needs at least one segment (even `#`
        // matches a longer topic), which `c` cannot match.
        (None, Some(_)) => false,
        (Some(&"#"), _) => {
            // `c`'s `#` takes nothing, or one more of `p`'s segments
            // (`p`'s own `#` included, for any number of them).
            covers(&c[1..], p) || (!p.is_empty() && covers(c, &p[1..]))
        }
        // `p` matches the empty rest only where `c` is all `#`, handled above.
        (Some(_), None) => false,
        (Some(cw), Some(&"#")) => {
            // `p`'s `#` matching no segment, and matching one or more.
            *cw == "*" && covers(c, &p[1..]) && covers(&c[1..], p)
        }
        (Some(cw), Some(&"*")) => *cw == "*" && covers(&c[1..], &p[1..]),
        (Some(cw), Some(pw)) => (*cw == "*" || cw == pw) && covers(&c[1..], &p[1..]),
    }
}

#[cfg(test)]
mod covers_tests {
    use super::*;

    fn cov(c: &str, p: &str) -> bool {
        TopicPattern::parse(c)
            .unwrap()
            .covers(&TopicPattern::parse(p).unwrap())
    }

    #[test]
    fn a_pattern_covers_what_it_always_matches() {
        for (c, p) in [
            ("#", "#"),
            ("#", "orders.*"),
            ("orders.#", "orders.#"),
            ("orders.#", "orders.*"),
            ("orders.#", "orders.eu.#"),
            ("orders.*", "orders.created"),
            ("orders.*", "orders.*"),
            ("*.created", "orders.created"),
            ("#.created", "orders.*.created"),
            ("orders.created", "orders.created"),
        ] {
            assert!(cov(c, p), "{c} covers {p}");
        }
        for (c, p) in [
            ("orders.*", "orders.#"),
            ("orders.*", "#"),
            ("orders.#", "#"),
            ("orders.#", "billing.x"),
            ("orders.created", "orders.*"),
            ("*.created", "#.created"),
            ("orders.*.x", "orders.*"),
        ] {
            assert!(!cov(c, p), "{c} does not cover {p}");
        }
    }
}
