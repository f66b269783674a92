//! Subscriber filters: evalexpr expressions compiled once when a subscriber is
//! loaded, evaluated against each published message by a small evaluator of
//! our own so that a missing variable makes a comparison false (never an error),
//! `&&`/`||` short-circuit, and `1 == 1.0` holds.

pub mod eval;
pub mod legacy;

use evalexpr::{DefaultNumericTypes, Node, Operator};
use serde::Serialize;

use crate::message::Message;

/// Longest expression accepted, so no input can exhaust the parser's stack.
pub const MAX_FILTER_BYTES: usize = 4096;
/// Deepest parenthesis nesting accepted.
pub const MAX_NESTING: usize = 64;
/// Most `!`, prefix `-` and function names applying to one operand, counted
/// through enclosing parentheses: evalexpr's parser and our evaluator recurse
/// once per prefix, so `!!!!...` filling 4 KiB would exhaust a thread's stack.
pub const MAX_PREFIXES: usize = 64;

pub use eval::{Budget, Outcome};

/// Functions a filter may call.
pub const FUNCTIONS: [&str; 6] = [
    "len",
    "contains",
    "starts_with",
    "ends_with",
    "lower",
    "upper",
];

/// Why an expression does not compile, with the byte offset where known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct FilterError {
    pub message: String,
    pub position: Option<usize>,
}

impl FilterError {
    fn at(message: impl Into<String>, position: Option<usize>) -> Self {
        FilterError {
            message: message.into(),
            position,
        }
    }
}

mod locate;

/// A filter ready to evaluate. Construct with [`CompiledFilter::compile`].
#[derive(Debug, Clone)]
pub struct CompiledFilter {
    /// The evalexpr source actually compiled (legacy sources are translated).
    source: String,
    tree: Option<Node<DefaultNumericTypes>>,
}

impl CompiledFilter {
    /// Compiles a stored expression. `None`, empty, `true` and legacy `True` always match.
    pub fn compile(src: Option<&str>) -> Result<Self, FilterError> {
        let raw = src.unwrap_or("").trim();
        // PostgreSQL cannot store a NUL in text: refuse it here, with a reason,
        // rather than fail when the subscriber is saved.
        if let Some(at) = raw.find('\0') {
            return Err(FilterError::at(
                "the expression contains a NUL character (\\u0000)",
                Some(at),
            ));
        }
        if raw.len() > MAX_FILTER_BYTES {
            return Err(FilterError::at(
                format!(
                    "the expression is {} bytes long; the limit is {MAX_FILTER_BYTES}",
                    raw.len()
                ),
                Some(MAX_FILTER_BYTES),
            ));
        }
        if raw.is_empty() || raw == "true" || raw == "True" {
            return Ok(CompiledFilter {
                source: raw.to_string(),
                tree: None,
            });
        }
        let source = if legacy::is_legacy(raw) {
            // The translation is what gets stored and compiled again on load,
            // so it must fit the same limit.
            legacy::translate_within(raw, MAX_FILTER_BYTES)
                .map_err(|e| FilterError::at(e.message, Some(e.position)))?
        } else {
            raw.to_string()
        };
        prescan(&source)?;
        let tree = evalexpr::build_operator_tree::<DefaultNumericTypes>(&source)
            .map_err(|e| FilterError::at(e.to_string(), locate_parse_error(&source, &e)))?;
        check_tree(&tree, &source)?;
        Ok(CompiledFilter {
            source,
            tree: Some(tree),
        })
    }

    /// The evalexpr form, which is what gets stored when a legacy filter is saved.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn is_always(&self) -> bool {
        self.tree.is_none()
    }

    /// The variables this filter reads; only these are extracted from a message.
    pub fn variables(&self) -> Vec<&str> {
        match &self.tree {
            Some(t) => t.iter_read_variable_identifiers().collect(),
            None => Vec::new(),
        }
    }

    /// Whether the message matches, within [`Budget::PER_EVALUATION`]: a filter
    /// that needs more work than that does not match.
    pub fn matches(&self, message: &Message) -> bool {
        self.evaluate(message, Budget::PER_EVALUATION).matched
    }

    /// Evaluates within `budget` and reports what was spent and whether the
    /// budget ran out (then the message does not match).
    pub fn evaluate(&self, message: &Message, budget: Budget) -> Outcome {
        match &self.tree {
            None => Outcome {
                matched: true,
                exhausted: false,
                spent: Budget { work: 0, built: 0 },
            },
            Some(tree) => eval::Evaluator::with_budget(message, budget).verdict(tree),
        }
    }
}

/// Characters that end an evalexpr word (identifier, number, `true`).
fn is_special(c: char) -> bool {
    c.is_whitespace() || "\"+-*/%^=!<>&|(),;".contains(c)
}

/// Checks nesting, quotes and prefix chains before evalexpr's recursive parser
/// sees the text.
fn prescan(src: &str) -> Result<(), FilterError> {
    let bytes = src.as_bytes();
    let mut open_positions = Vec::new();
    // Prefixes on the path to the current token: `bases` keeps the count at
    // each open parenthesis, since a prefix before `(` applies to all inside.
    let mut bases: Vec<usize> = Vec::new();
    let mut prefixes = 0usize;
    // The previous token was an operand or `)`, so a `-` here subtracts.
    let mut after_value = false;
    let next_significant = |from: usize| {
        src[from..]
            .char_indices()
            .find(|(_, c)| !c.is_whitespace())
            .map(|(_, c)| c)
    };
    let mut i = 0;
    while let Some(c) = src[i..].chars().next() {
        let mut prefix = false;
        match c {
            '"' => {
                let start = i;
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => {
                            return Err(FilterError::at(
                                "string literal is not closed",
                                Some(start),
                            ))
                        }
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
                after_value = true;
            }
            '(' => {
                open_positions.push(i);
                bases.push(prefixes);
                if open_positions.len() > MAX_NESTING {
                    return Err(FilterError::at(
                        format!("parentheses nest deeper than {MAX_NESTING}"),
                        Some(i),
                    ));
                }
                after_value = false;
            }
            ')' => {
                if open_positions.pop().is_none() {
                    return Err(FilterError::at("`)` without a matching `(`", Some(i)));
                }
                prefixes = bases.pop().unwrap_or(0);
                after_value = true;
            }
            '!' if bytes.get(i + 1) != Some(&b'=') => prefix = true,
            '-' if !after_value && bytes.get(i + 1) != Some(&b'=') => prefix = true,
            // `^` binds tighter than `!` and `-`: the chain goes on past it.
            '^' => after_value = false,
            c if c.is_whitespace() => {}
            c if is_special(c) => {
                // A binary operator: later prefixes apply to a new operand.
                prefixes = bases.last().copied().unwrap_or(0);
                after_value = false;
            }
            _ => {
                let start = i;
                let end = src[start..]
                    .char_indices()
                    .find(|(_, c)| is_special(*c))
                    .map_or(src.len(), |(j, _)| start + j);
                // A word followed by an operand is a function name.
                prefix = matches!(next_significant(end), Some(n) if n == '(' || n == '"' || !is_special(n));
                after_value = !prefix;
                i = end;
                if prefix {
                    prefixes += 1;
                    if prefixes > MAX_PREFIXES {
                        return Err(too_many_prefixes(start));
                    }
                }
                continue;
            }
        }
        if prefix {
            prefixes += 1;
            after_value = false;
            if prefixes > MAX_PREFIXES {
                return Err(too_many_prefixes(i));
            }
        }
        i += c.len_utf8();
    }
    if let Some(pos) = open_positions.pop() {
        return Err(FilterError::at("`(` is not closed", Some(pos)));
    }
    Ok(())
}

/// The error for a prefix beyond [`MAX_PREFIXES`], at byte `at`.
fn too_many_prefixes(at: usize) -> FilterError {
    FilterError::at(
        format!("more than {MAX_PREFIXES} `!`, `-` or function calls apply to one operand"),
        Some(at),
    )
}

/// Bytes of prefixes [`locate_parse_error`] parses one after another before it
/// switches to a binary search: trying every prefix of a 4 KiB expression
/// parses megabytes and holds a request thread for almost half a second.
const LOCATE_LINEAR_BYTES: usize = 16 * 1024;

/// evalexpr does not report positions: find the shortest prefix that fails the same way.
fn locate_parse_error(
    src: &str,
    error: &evalexpr::EvalexprError<DefaultNumericTypes>,
) -> Option<usize> {
    let wanted = std::mem::discriminant(error);
    let fails_so = |end: usize| {
        evalexpr::build_operator_tree::<DefaultNumericTypes>(&src[..end])
            .is_err_and(|e| std::mem::discriminant(&e) == wanted)
    };
    let mut ends: Vec<usize> = src
        .char_indices()
        .filter(|(_, c)| c.is_whitespace())
        .map(|(i, _)| i)
        .collect();
    ends.push(src.len());
    let mut parsed = 0usize;
    let mut found = None;
    for (n, &end) in ends.iter().enumerate() {
        parsed += end;
        if parsed > LOCATE_LINEAR_BYTES {
            // An error, once met, stays for every longer prefix: search the
            // rest for the first prefix that fails this way.
            let rest = &ends[n..];
            let first = rest.partition_point(|&end| !fails_so(end));
            found = rest.get(first).copied();
            break;
        }
        if fails_so(end) {
            found = Some(end);
            break;
        }
    }
    let prefix = &src[..found?];
    // Point at the start of the last token of the failing prefix.
    Some(
        prefix
            .trim_end()
            .rfind(char::is_whitespace)
            .map(|i| i + 1)
            .unwrap_or(0),
    )
}

/// Refuses what a filter must not do: assignments, chains, unknown functions.
fn check_tree(root: &Node<DefaultNumericTypes>, src: &str) -> Result<(), FilterError> {
    // The tree keeps no positions: each cause is looked for in the source.
    let at = |message: String, cause: locate::Cause| {
        FilterError::at(message, Some(locate::tree_error(src, &cause).unwrap_or(0)))
    };
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        match node.operator() {
            Operator::Assign
            | Operator::AddAssign
            | Operator::SubAssign
            | Operator::MulAssign
            | Operator::DivAssign
            | Operator::ModAssign
            | Operator::ExpAssign
            | Operator::AndAssign
            | Operator::OrAssign
            | Operator::VariableIdentifierWrite { .. } => {
                return Err(at(
                    "a filter cannot assign (did you mean `==`?)".into(),
                    locate::Cause::Assignment,
                ))
            }
            Operator::Chain => {
                return Err(at(
                    "a filter is one expression; `;` is not allowed".into(),
                    locate::Cause::Chain,
                ))
            }
            Operator::FunctionIdentifier { identifier }
                if !FUNCTIONS.contains(&identifier.as_str()) =>
            {
                return Err(at(
                    format!(
                        "unknown function `{identifier}`; available: {}",
                        FUNCTIONS.join(", ")
                    ),
                    locate::Cause::Function(identifier.clone()),
                ))
            }
            Operator::Add
            | Operator::Sub
            | Operator::Mul
            | Operator::Div
            | Operator::Mod
            | Operator::Exp
            | Operator::Eq
            | Operator::Neq
            | Operator::Gt
            | Operator::Lt
            | Operator::Geq
            | Operator::Leq
            | Operator::And
            | Operator::Or
                if node.children().len() != 2 =>
            {
                return Err(at(
                    "an operator is missing an operand".into(),
                    locate::Cause::MissingOperand,
                ))
            }
            Operator::Not | Operator::Neg if node.children().len() != 1 => {
                return Err(at(
                    "`!` or `-` is missing its operand".into(),
                    locate::Cause::MissingOperand,
                ))
            }
            _ => {}
        }
        stack.extend(node.children());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod worst_case;
