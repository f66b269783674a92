//! The filter evaluator: walks an evalexpr operator tree against a message.
//!
//! Semantics, chosen so a filter never turns into an error for the publisher:
//! - a variable the message does not have is *missing*; any comparison reading
//!   it is false, and arithmetic on it stays missing;
//! - `&&`, `||` short-circuit; a non-boolean in a boolean position is judged by
//!   truthiness (non-zero, non-empty), as the original Python filters were;
//! - integers and floats compare by value (`1 == 1.0`); a number and a string are
//!   never equal, and ordering between them is false.

use std::borrow::Cow;
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

/// `http_method` compares without regard to case: the original SDKs send
/// `post`, and filters written for them say `data["http_method"] == "post"`.
fn is_method(node: &Node<DefaultNumericTypes>) -> bool {
    matches!(node.operator(), Operator::VariableIdentifierRead { identifier } if identifier == "http_method")
}

/// Evaluates trees against one message.
pub struct Evaluator<'m> {
    message: &'m Message,
}

impl<'m> Evaluator<'m> {
    pub fn new(message: &'m Message) -> Self {
        Evaluator { message }
    }

    /// The boolean verdict of a node.
    pub fn truthy(&self, node: &'m Node<DefaultNumericTypes>) -> bool {
        match node.operator() {
            Operator::RootNode => node.children().first().is_some_and(|c| self.truthy(c)),
            Operator::And => node.children().iter().all(|c| self.truthy(c)),
            Operator::Or => node.children().iter().any(|c| self.truthy(c)),
            Operator::Not => node.children().first().is_some_and(|c| !self.truthy(c)),
            Operator::Eq
            | Operator::Neq
            | Operator::Gt
            | Operator::Lt
            | Operator::Geq
            | Operator::Leq => self.compare(node),
            _ => self.value(node).truthy(),
        }
    }

    fn compare(&self, node: &'m Node<DefaultNumericTypes>) -> bool {
        let [l, r] = node.children() else {
            return false;
        };
        let (a, b) = (self.value(l), self.value(r));
        if a == V::Missing || b == V::Missing {
            return false;
        }
        let op = node.operator();
        if matches!(op, Operator::Eq | Operator::Neq) {
            let equal = match (&a, &b) {
                (V::Str(x), V::Str(y)) if is_method(l) || is_method(r) => x.eq_ignore_ascii_case(y),
                _ => equal(&a, &b),
            };
            return if *op == Operator::Eq { equal } else { !equal };
        }
        let ord = match (&a, &b) {
            (V::Str(x), V::Str(y)) => Some(x.as_ref().cmp(y.as_ref())),
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

    /// The value of a node; anything that cannot be computed is `Missing`.
    pub fn value(&self, node: &'m Node<DefaultNumericTypes>) -> V<'m> {
        let children = node.children();
        match node.operator() {
            Operator::RootNode => children.first().map(|c| self.value(c)).unwrap_or(V::Null),
            Operator::Const { value } => from_const(value),
            Operator::VariableIdentifierRead { identifier } => resolve(self.message, identifier),
            Operator::And
            | Operator::Or
            | Operator::Not
            | Operator::Eq
            | Operator::Neq
            | Operator::Gt
            | Operator::Lt
            | Operator::Geq
            | Operator::Leq => V::Bool(self.truthy(node)),
            Operator::Neg => match children.first().map(|c| self.value(c)) {
                Some(V::Int(i)) => i.checked_neg().map(V::Int).unwrap_or(V::Missing),
                Some(V::Float(f)) => V::Float(-f),
                _ => V::Missing,
            },
            Operator::Add
            | Operator::Sub
            | Operator::Mul
            | Operator::Div
            | Operator::Mod
            | Operator::Exp => {
                let [l, r] = children else { return V::Missing };
                arithmetic(node.operator(), self.value(l), self.value(r))
            }
            Operator::Tuple => V::Missing,
            Operator::FunctionIdentifier { identifier } => self.call(identifier, children.first()),
            _ => V::Missing,
        }
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
        match (name, args.as_slice()) {
            ("len", [V::Str(s)]) => V::Int(s.chars().count() as i64),
            ("len", [V::Json(Json::Array(a))]) => V::Int(a.len() as i64),
            ("len", [V::Json(Json::Object(o))]) => V::Int(o.len() as i64),
            ("lower", [V::Str(s)]) => V::Str(Cow::Owned(s.to_lowercase())),
            ("upper", [V::Str(s)]) => V::Str(Cow::Owned(s.to_uppercase())),
            ("starts_with", [V::Str(s), V::Str(p)]) => V::Bool(s.starts_with(p.as_ref())),
            ("ends_with", [V::Str(s), V::Str(p)]) => V::Bool(s.ends_with(p.as_ref())),
            ("contains", [V::Str(s), V::Str(p)]) => V::Bool(s.contains(p.as_ref())),
            ("contains", [V::Json(Json::Array(a)), needle]) => {
                V::Bool(a.iter().any(|item| equal(&from_json(item), needle)))
            }
            _ => V::Missing,
        }
    }
}

fn equal(a: &V, b: &V) -> bool {
    match (a, b) {
        (V::Str(x), V::Str(y)) => x == y,
        (V::Bool(x), V::Bool(y)) => x == y,
        (V::Null, V::Null) => true,
        (V::Json(x), V::Json(y)) => x == y,
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}

fn arithmetic<'a>(op: &Operator<DefaultNumericTypes>, a: V<'a>, b: V<'a>) -> V<'a> {
    if let (Operator::Add, V::Str(x), V::Str(y)) = (op, &a, &b) {
        return V::Str(Cow::Owned(format!("{x}{y}")));
    }
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
