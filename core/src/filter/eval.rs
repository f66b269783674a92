//! The filter evaluator: walks an evalexpr operator tree against a message.
//!
//! Semantics, chosen so a filter never turns into an error for the publisher:
//! - a variable the message does not have is *missing*; any comparison reading
//!   it is false, and arithmetic on it stays missing;
//! - `&&`, `||` short-circuit; a non-boolean in a boolean position is judged by
//!   truthiness (non-zero, non-empty), as the original Python filters were;
//! - integers and floats compare by value (`1 == 1.0`); a number and a string are
//!   never equal, and ordering between them is false.
//!
//! Filters run on the request threads of every publish, so each evaluation has
//! a [`Budget`]. Each tree node is visited at most once, so visits are bounded
//! by the 4 KiB source; what grows with the message is counted and charged
//! *before* it is done: bytes compared, searched or counted, JSON values
//! visited, and the bytes of every string built. Once the budget is spent the
//! evaluation stops and the filter does not match; without that, a 4 KiB
//! filter such as `body.s + body.s + ...` against a large `body.s` copies
//! gigabytes.

use std::borrow::Cow;
use std::cell::Cell;
use std::cmp::Ordering;

use evalexpr::{DefaultNumericTypes, Node, Operator, Value};
use serde_json::Value as Json;

use crate::message::Message;

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum V<'a> {
    Missing,
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    /// A JSON array or object from the body.
    Json(&'a Json),
}

impl V<'_> {
    fn truthy(&self) -> bool {
        match self {
            V::Missing | V::Null => false,
            V::Bool(b) => *b,
            V::Int(i) => *i != 0,
            V::Float(f) => *f != 0.0,
            V::Str(s) => !s.is_empty(),
            V::Json(Json::Array(a)) => !a.is_empty(),
            V::Json(Json::Object(o)) => !o.is_empty(),
            V::Json(_) => true,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            V::Int(i) => Some(*i as f64),
            V::Float(f) => Some(*f),
            _ => None,
        }
    }
}

fn from_json(j: &Json) -> V<'_> {
    match j {
        Json::Null => V::Null,
        Json::Bool(b) => V::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => V::Int(i),
            None => V::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => V::Str(Cow::Borrowed(s)),
        other => V::Json(other),
    }
}

fn from_const(v: &Value<DefaultNumericTypes>) -> V<'_> {
    match v {
        Value::String(s) => V::Str(Cow::Borrowed(s)),
        Value::Float(f) => V::Float(*f),
        Value::Int(i) => V::Int(*i),
        Value::Boolean(b) => V::Bool(*b),
        Value::Tuple(t) if t.is_empty() => V::Null,
        Value::Tuple(_) | Value::Empty => V::Null,
    }
}

fn header_lookup<'a>(map: &'a std::collections::BTreeMap<String, String>, name: &str) -> V<'a> {
    // Header names are case-insensitive, and `_` stands for `-` because evalexpr
    // reads `headers.content-type` as a subtraction.
    map.iter()
        .find(|(k, _)| {
            k.len() == name.len()
                && k.bytes()
                    .zip(name.bytes())
                    .all(|(a, b)| a.eq_ignore_ascii_case(&b) || (a == b'-' && b == b'_'))
        })
        .map(|(_, v)| V::Str(Cow::Borrowed(v.as_str())))
        .unwrap_or(V::Missing)
}

fn map_lookup<'a>(map: &'a std::collections::BTreeMap<String, String>, name: &str) -> V<'a> {
    map.get(name)
        .map(|v| V::Str(Cow::Borrowed(v.as_str())))
        .unwrap_or(V::Missing)
}

/// Reads `body.a.b`, `headers.x`, `query_params.q`, `path_params.id`, `http_method`, `topic`, `author`,
/// and the other keys of a legacy payload.
pub fn resolve<'a>(message: &'a Message, name: &str) -> V<'a> {
    let (root, rest) = match name.split_once('.') {
        Some((r, rest)) => (r, Some(rest)),
        None => (name, None),
    };
    match (root, rest) {
        ("body", path) => walk(&message.body, path),
        ("headers", Some(h)) => header_lookup(&message.headers, h),
        ("query_params", Some(q)) => map_lookup(&message.query_params, q),
        ("path_params", Some(p)) => map_lookup(&message.path_params, p),
        ("http_method", None) => V::Str(Cow::Borrowed(message.http_method.as_str())),
        ("topic", None) => V::Str(Cow::Borrowed(message.topic.as_str())),
        ("author", None) => match &message.author {
            Some(a) => V::Str(Cow::Borrowed(a.as_str())),
            None => V::Missing,
        },
        // Other keys of a legacy payload (`data["special_key"]`).
        (other, path) => match message.extra.get(other) {
            Some(v) => walk(v, path),
            None => V::Missing,
        },
    }
}

/// Follows a dotted path (`a.b.0`) into a JSON value.
fn walk<'a>(root: &'a Json, path: Option<&str>) -> V<'a> {
    let mut cur = root;
    for key in path.into_iter().flat_map(|p| p.split('.')) {
        cur = match cur {
            Json::Object(m) => match m.get(key) {
                Some(v) => v,
                None => return V::Missing,
            },
            Json::Array(a) => match key.parse::<usize>().ok().and_then(|i| a.get(i)) {
                Some(v) => v,
                None => return V::Missing,
            },
            _ => return V::Missing,
        };
    }
    from_json(cur)
}

/// Left-side chains up to this long are evaluated by recursion, which needs
/// no allocation; longer ones by the loop in [`Evaluator::chain`].
const SHORT_CHAIN: usize = 16;

/// Whether the chain of binary operators down the left side of `node` is
/// shorter than [`SHORT_CHAIN`].
fn is_short(mut node: &Node<DefaultNumericTypes>) -> bool {
    for _ in 0..SHORT_CHAIN {
        match node.children() {
            [left, _] if is_binary(node) => node = left,
            _ => return true,
        }
    }
    false
}

/// Which way `lower`/`upper` map.
#[derive(Clone, Copy)]
enum Case {
    Lower,
    Upper,
}

/// An operator with two operands, evaluated by [`Evaluator::chain`].
fn is_binary(node: &Node<DefaultNumericTypes>) -> bool {
    node.children().len() == 2
        && matches!(
            node.operator(),
            Operator::And
                | Operator::Or
                | Operator::Eq
                | Operator::Neq
                | Operator::Gt
                | Operator::Lt
                | Operator::Geq
                | Operator::Leq
                | Operator::Add
                | Operator::Sub
                | Operator::Mul
                | Operator::Div
                | Operator::Mod
                | Operator::Exp
        )
}

/// `http_method` compares without regard to case: the original SDKs send
/// `post`, and filters written for them say `data["http_method"] == "post"`.
fn is_method(node: &Node<DefaultNumericTypes>) -> bool {
    matches!(node.operator(), Operator::VariableIdentifierRead { identifier } if identifier == "http_method")
}

/// Units of work one evaluation may spend. A unit is one byte compared,
/// counted or copied; slower steps cost more ([`SEARCH_BYTE_COST`],
/// [`CASE_MAPPING_COST`], [`SIGMA_COST`], [`JSON_VALUE_COST`]). 4 Mi units let
/// a filter read the largest message (1 MiB) four times over, or search it for
/// a substring twice, and hold a thread for a few milliseconds at worst.
pub const WORK_LIMIT: u64 = 4 << 20;

/// Work units per byte a `contains` searches: a substring search can take
/// over a nanosecond per byte, where comparing or copying takes far less.
pub const SEARCH_BYTE_COST: u64 = 2;

/// Bytes of strings (`+`, `lower`, `upper`) one evaluation may build. 2 MiB lets
/// a filter lower-case or concatenate any string the largest message can hold,
/// while no filter can hold more than that in memory per evaluation.
pub const BUILT_LIMIT: u64 = 2 << 20;

/// Work units per byte `lower` or `upper` maps one character at a time: an
/// ASCII string is mapped (and charged) like a copy, but from its first
/// non-ASCII byte on a string is mapped character by character, at 5 to 15 ns
/// per byte.
pub const CASE_MAPPING_COST: u64 = 12;

/// Work units per `Σ` that `lower` maps: choosing between `σ` and a word-final
/// `ς` looks up the Unicode properties of the characters around it, over
/// 100 ns per `Σ`.
pub const SIGMA_COST: u64 = 128;

/// Work units per JSON value visited by an equality or `contains`: walking a
/// value takes several nanoseconds, like a substring search over 8 bytes.
pub const JSON_VALUE_COST: u64 = 8;

/// What an evaluation may spend, or (in an [`Outcome`]) what it spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Units of work (see [`WORK_LIMIT`]).
    pub work: u64,
    /// Bytes of strings built by concatenation, `lower` and `upper`.
    pub built: u64,
}

impl Budget {
    /// The budget of one filter evaluation at publish time.
    pub const PER_EVALUATION: Budget = Budget {
        work: WORK_LIMIT,
        built: BUILT_LIMIT,
    };
}

/// The result of evaluating a filter against a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the message matches; always false when the budget ran out.
    pub matched: bool,
    /// The budget ran out, so the evaluation stopped early.
    pub exhausted: bool,
    /// What the evaluation spent (up to where it stopped).
    pub spent: Budget,
}

/// Evaluates trees against one message, within a [`Budget`].
pub struct Evaluator<'m> {
    message: &'m Message,
    limit: Budget,
    work: Cell<u64>,
    built: Cell<u64>,
    exhausted: Cell<bool>,
}

impl<'m> Evaluator<'m> {
    /// An evaluator with the publish-time budget, [`Budget::PER_EVALUATION`].
    pub fn new(message: &'m Message) -> Self {
        Self::with_budget(message, Budget::PER_EVALUATION)
    }

    /// An evaluator that gives up, and does not match, past `limit`.
    pub fn with_budget(message: &'m Message, limit: Budget) -> Self {
        Evaluator {
            message,
            limit,
            work: Cell::new(0),
            built: Cell::new(0),
            exhausted: Cell::new(false),
        }
    }

    /// Evaluates a whole filter: a filter whose budget runs out does not match,
    /// whatever its partial result (`!(expensive)` must not turn into a match).
    pub fn verdict(&self, root: &'m Node<DefaultNumericTypes>) -> Outcome {
        let truthy = self.truthy(root);
        let exhausted = self.exhausted.get();
        Outcome {
            matched: truthy && !exhausted,
            exhausted,
            spent: Budget {
                work: self.work.get(),
                built: self.built.get(),
            },
        }
    }

    /// Charges `units` of work; false (and exhausted from then on) when they do
    /// not fit, so the caller skips the work.
    fn charge(&self, units: u64) -> bool {
        if self.exhausted.get() {
            return false;
        }
        let work = self.work.get().saturating_add(units);
        if work > self.limit.work {
            self.exhausted.set(true);
            return false;
        }
        self.work.set(work);
        true
    }

    /// Charges a string of `bytes` about to be built, as memory and as work.
    fn charge_built(&self, bytes: usize) -> bool {
        let bytes = bytes as u64;
        let built = self.built.get().saturating_add(bytes);
        if built > self.limit.built {
            self.exhausted.set(true);
            return false;
        }
        if !self.charge(bytes) {
            return false;
        }
        self.built.set(built);
        true
    }

    /// The boolean verdict of a node. Logic and comparisons are evaluated here
    /// directly, the common case; long chains go through [`Self::chain`].
    pub fn truthy(&self, node: &'m Node<DefaultNumericTypes>) -> bool {
        if self.exhausted.get() {
            return false;
        }
        match (node.operator(), node.children()) {
            (Operator::RootNode, [c]) => self.truthy(c),
            (Operator::Not, [c]) => !self.truthy(c),
            (Operator::And, [l, r]) if is_short(l) => self.truthy(l) && self.truthy(r),
            (Operator::Or, [l, r]) if is_short(l) => self.truthy(l) || self.truthy(r),
            (
                op @ (Operator::Eq
                | Operator::Neq
                | Operator::Gt
                | Operator::Lt
                | Operator::Geq
                | Operator::Leq),
                [l, r],
            ) if is_short(l) => {
                let a = self.value(l);
                let b = self.value(r);
                self.compare(op, (l, a), (r, b))
            }
            _ => self.value(node).truthy(),
        }
    }

    /// The value of a node; anything that cannot be computed is `Missing`.
    pub fn value(&self, node: &'m Node<DefaultNumericTypes>) -> V<'m> {
        // Each node is visited at most once per evaluation, so visits are
        // bounded by the size of the tree and need no charge; once the budget
        // is spent the rest of the tree is skipped.
        if self.exhausted.get() {
            return V::Missing;
        }
        let children = node.children();
        match node.operator() {
            Operator::And
            | Operator::Or
            | Operator::Eq
            | Operator::Neq
            | Operator::Gt
            | Operator::Lt
            | Operator::Geq
            | Operator::Leq
            | Operator::Add
            | Operator::Sub
            | Operator::Mul
            | Operator::Div
            | Operator::Mod
            | Operator::Exp => self.chain(node),
            Operator::RootNode => children.first().map(|c| self.value(c)).unwrap_or(V::Null),
            Operator::Const { value } => from_const(value),
            Operator::VariableIdentifierRead { identifier } => {
                // A header is looked up by comparing it with every header.
                if identifier.starts_with("headers.")
                    && !self.charge(self.message.headers.len() as u64)
                {
                    return V::Missing;
                }
                resolve(self.message, identifier)
            }
            Operator::Not => V::Bool(children.first().is_some_and(|c| !self.truthy(c))),
            Operator::Neg => match children.first().map(|c| self.value(c)) {
                Some(V::Int(i)) => i.checked_neg().map(V::Int).unwrap_or(V::Missing),
                Some(V::Float(f)) => V::Float(-f),
                _ => V::Missing,
            },
            Operator::FunctionIdentifier { identifier } => self.call(identifier, children.first()),
            _ => V::Missing,
        }
    }

    /// Evaluates a binary operator and the chain of binary operators down its
    /// left side (`a - b - c` is `(a - b) - c`) in a loop: a 4 KiB chain is two
    /// thousand levels deep, and recursing once per level would need more stack
    /// than a request thread can be sure to have.
    fn chain(&self, top: &'m Node<DefaultNumericTypes>) -> V<'m> {
        let [left, right] = top.children() else {
            return V::Missing;
        };
        if is_short(left) {
            // The usual case, `a == 1 && b == 2`: recursion stays shallow.
            let a = self.value(left);
            return self.binary(top.operator(), (left, a), right);
        }
        let mut spine = Vec::new();
        let mut node = top;
        while let [left, _] = node.children() {
            if !is_binary(node) {
                break;
            }
            spine.push(node);
            node = left;
        }
        let mut left = node;
        let mut acc = self.value(left);
        for &node in spine.iter().rev() {
            if self.exhausted.get() {
                return V::Missing;
            }
            let [_, right] = node.children() else {
                return V::Missing;
            };
            acc = self.binary(node.operator(), (left, acc), right);
            left = node;
        }
        acc
    }

    /// One binary operation: `l` is the left operand with its value, `r` the
    /// right operand, evaluated only when needed (`&&`, `||` short-circuit).
    fn binary(
        &self,
        op: &Operator<DefaultNumericTypes>,
        (l, a): (&'m Node<DefaultNumericTypes>, V<'m>),
        r: &'m Node<DefaultNumericTypes>,
    ) -> V<'m> {
        match op {
            Operator::And => V::Bool(a.truthy() && self.truthy(r)),
            Operator::Or => V::Bool(a.truthy() || self.truthy(r)),
            Operator::Eq
            | Operator::Neq
            | Operator::Gt
            | Operator::Lt
            | Operator::Geq
            | Operator::Leq => {
                let b = self.value(r);
                V::Bool(self.compare(op, (l, a), (r, b)))
            }
            _ => {
                let b = self.value(r);
                if let (Operator::Add, V::Str(x), V::Str(y)) = (op, &a, &b) {
                    if !self.charge_built(x.len() + y.len()) {
                        return V::Missing;
                    }
                    let mut joined = String::with_capacity(x.len() + y.len());
                    joined.push_str(x);
                    joined.push_str(y);
                    return V::Str(Cow::Owned(joined));
                }
                arithmetic(op, a, b)
            }
        }
    }

    /// Compares two evaluated operands; their nodes tell whether one is
    /// `http_method`.
    fn compare(
        &self,
        op: &Operator<DefaultNumericTypes>,
        (l, a): (&Node<DefaultNumericTypes>, V<'m>),
        (r, b): (&Node<DefaultNumericTypes>, V<'m>),
    ) -> bool {
        if matches!(a, V::Missing) || matches!(b, V::Missing) {
            return false;
        }
        if matches!(op, Operator::Eq | Operator::Neq) {
            let equal = match (&a, &b) {
                (V::Str(x), V::Str(y)) if is_method(l) || is_method(r) => {
                    self.charge_compare(x, y) && x.eq_ignore_ascii_case(y)
                }
                _ => match self.equal(&a, &b) {
                    Some(e) => e,
                    None => return false,
                },
            };
            return if *op == Operator::Eq { equal } else { !equal };
        }
        let ord = match (&a, &b) {
            (V::Str(x), V::Str(y)) => {
                if !self.charge(x.len().min(y.len()) as u64) {
                    return false;
                }
                Some(x.as_ref().cmp(y.as_ref()))
            }
            _ => match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => x.partial_cmp(&y),
                _ => None,
            },
        };
        match (ord, op) {
            (Some(o), Operator::Gt) => o == Ordering::Greater,
            (Some(o), Operator::Lt) => o == Ordering::Less,
            (Some(o), Operator::Geq) => o != Ordering::Less,
            (Some(o), Operator::Leq) => o != Ordering::Greater,
            _ => false,
        }
    }

    /// Charges comparing two strings for equality: strings of different
    /// lengths differ at once, equal lengths cost a byte-by-byte comparison.
    fn charge_compare(&self, x: &str, y: &str) -> bool {
        self.charge(if x.len() == y.len() {
            x.len() as u64
        } else {
            1
        })
    }

    fn args(&self, arg: Option<&'m Node<DefaultNumericTypes>>) -> Vec<V<'m>> {
        let arg = match arg {
            // A parenthesised argument list is a root node around the tuple.
            Some(n) if *n.operator() == Operator::RootNode && n.children().len() == 1 => {
                n.children().first()
            }
            other => other,
        };
        match arg {
            None => Vec::new(),
            Some(n) if *n.operator() == Operator::Tuple => {
                n.children().iter().map(|c| self.value(c)).collect()
            }
            Some(n) => vec![self.value(n)],
        }
    }

    fn call(&self, name: &str, arg: Option<&'m Node<DefaultNumericTypes>>) -> V<'m> {
        let args = self.args(arg);
        if self.exhausted.get() {
            return V::Missing;
        }
        match (name, args.as_slice()) {
            ("len", [V::Str(s)]) => self.scan(s.len(), || V::Int(s.chars().count() as i64)),
            ("len", [V::Json(Json::Array(a))]) => V::Int(a.len() as i64),
            ("len", [V::Json(Json::Object(o))]) => V::Int(o.len() as i64),
            ("lower", [V::Str(s)]) => self.change_case(s, Case::Lower),
            ("upper", [V::Str(s)]) => self.change_case(s, Case::Upper),
            ("starts_with", [V::Str(s), V::Str(p)]) => {
                self.scan(p.len().min(s.len()), || V::Bool(s.starts_with(p.as_ref())))
            }
            ("ends_with", [V::Str(s), V::Str(p)]) => {
                self.scan(p.len().min(s.len()), || V::Bool(s.ends_with(p.as_ref())))
            }
            // A needle longer than the haystack is not in it, whatever their sizes.
            ("contains", [V::Str(s), V::Str(p)]) if p.len() > s.len() => V::Bool(false),
            ("contains", [V::Str(s), V::Str(p)]) => {
                let cost = (s.len() + p.len()) as u64 * SEARCH_BYTE_COST;
                if !self.charge(cost) {
                    return V::Missing;
                }
                V::Bool(s.contains(p.as_ref()))
            }
            ("contains", [V::Json(Json::Array(a)), needle]) => {
                for item in a {
                    if !self.charge(JSON_VALUE_COST) {
                        return V::Missing;
                    }
                    match self.equal(&from_json(item), needle) {
                        Some(true) => return V::Bool(true),
                        Some(false) => {}
                        None => return V::Missing,
                    }
                }
                V::Bool(false)
            }
            _ => V::Missing,
        }
    }

    /// Runs `f`, which reads `bytes` bytes, if the budget allows.
    fn scan(&self, bytes: usize, f: impl FnOnce() -> V<'m>) -> V<'m> {
        if self.charge(bytes as u64) {
            f()
        } else {
            V::Missing
        }
    }

    /// `lower`/`upper`: the result is charged at the input's length before it is
    /// built (case mapping rarely changes the length), and any growth after;
    /// the work also counts what is mapped character by character.
    fn change_case(&self, s: &str, case: Case) -> V<'m> {
        if !self.charge_built(s.len()) {
            return V::Missing;
        }
        // These scans cost less than the copy just charged.
        let slow = s
            .bytes()
            .position(|b| !b.is_ascii())
            .map_or("", |i| &s[i..]);
        let sigmas = match case {
            Case::Lower if !slow.is_empty() => slow.matches('Σ').count(),
            _ => 0,
        };
        let cost = (slow.len() as u64)
            .saturating_mul(CASE_MAPPING_COST)
            .saturating_add((sigmas as u64).saturating_mul(SIGMA_COST));
        if !self.charge(cost) {
            return V::Missing;
        }
        let out = match case {
            Case::Lower => s.to_lowercase(),
            Case::Upper => s.to_uppercase(),
        };
        if out.len() > s.len() && !self.charge_built(out.len() - s.len()) {
            return V::Missing;
        }
        V::Str(Cow::Owned(out))
    }

    /// Equality of two values; `None` when the budget ran out while comparing.
    fn equal(&self, a: &V, b: &V) -> Option<bool> {
        Some(match (a, b) {
            (V::Str(x), V::Str(y)) => self.charge_compare(x, y).then(|| x == y)?,
            (V::Bool(x), V::Bool(y)) => x == y,
            (V::Null, V::Null) => true,
            (V::Json(x), V::Json(y)) => self.json_equal(x, y)?,
            _ => match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            },
        })
    }

    /// `serde_json`'s equality, charging every value it visits: two large
    /// arrays compared a few hundred times would otherwise take seconds.
    /// Recursion follows the depth of the JSON, which its parser bounds.
    fn json_equal(&self, a: &Json, b: &Json) -> Option<bool> {
        if !self.charge(JSON_VALUE_COST) {
            return None;
        }
        Some(match (a, b) {
            (Json::String(x), Json::String(y)) => self.charge_compare(x, y).then(|| x == y)?,
            (Json::Array(x), Json::Array(y)) => {
                if x.len() != y.len() {
                    return Some(false);
                }
                for (i, j) in x.iter().zip(y) {
                    if !self.json_equal(i, j)? {
                        return Some(false);
                    }
                }
                true
            }
            (Json::Object(x), Json::Object(y)) => {
                if x.len() != y.len() {
                    return Some(false);
                }
                for (key, i) in x {
                    if !self.charge(key.len() as u64) {
                        return None;
                    }
                    let Some(j) = y.get(key) else {
                        return Some(false);
                    };
                    if !self.json_equal(i, j)? {
                        return Some(false);
                    }
                }
                true
            }
            _ => a == b,
        })
    }
}

/// Arithmetic on numbers (string concatenation is done, within the budget, by
/// the evaluator).
fn arithmetic<'a>(op: &Operator<DefaultNumericTypes>, a: V<'a>, b: V<'a>) -> V<'a> {
    if let (V::Int(x), V::Int(y)) = (&a, &b) {
        let (x, y) = (*x, *y);
        let r = match op {
            Operator::Add => x.checked_add(y),
            Operator::Sub => x.checked_sub(y),
            Operator::Mul => x.checked_mul(y),
            Operator::Div => x.checked_div(y),
            Operator::Mod => x.checked_rem(y),
            Operator::Exp => return V::Float((x as f64).powf(y as f64)),
            _ => None,
        };
        return r.map(V::Int).unwrap_or(V::Missing);
    }
    let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) else {
        return V::Missing;
    };
    V::Float(match op {
        Operator::Add => x + y,
        Operator::Sub => x - y,
        Operator::Mul => x * y,
        Operator::Div => x / y,
        Operator::Mod => x % y,
        Operator::Exp => x.powf(y),
        _ => return V::Missing,
    })
}
