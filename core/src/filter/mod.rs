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
            legacy::translate(raw).map_err(|e| FilterError::at(e.message, Some(e.position)))?
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

    pub fn matches(&self, message: &Message) -> bool {
        match &self.tree {
            None => true,
            Some(tree) => eval::Evaluator::new(message).truthy(tree),
        }
    }
}

/// Checks nesting and quotes before evalexpr's recursive parser sees the text.
fn prescan(src: &str) -> Result<(), FilterError> {
    let mut depth = 0usize;
    let mut open_positions = Vec::new();
    let mut in_string: Option<usize> = None;
    let mut escaped = false;
    for (i, c) in src.char_indices() {
        if let Some(_start) = in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = None;
            }
            continue;
        }
        match c {
            '"' => in_string = Some(i),
            '(' => {
                depth += 1;
                open_positions.push(i);
                if depth > MAX_NESTING {
                    return Err(FilterError::at(
                        format!("parentheses nest deeper than {MAX_NESTING}"),
                        Some(i),
                    ));
                }
            }
            ')' => {
                if depth == 0 {
                    return Err(FilterError::at("`)` without a matching `(`", Some(i)));
                }
                depth -= 1;
                open_positions.pop();
            }
            _ => {}
        }
    }
    if let Some(start) = in_string {
        return Err(FilterError::at("string literal is not closed", Some(start)));
    }
    if let Some(pos) = open_positions.pop() {
        return Err(FilterError::at("`(` is not closed", Some(pos)));
    }
    Ok(())
}

/// evalexpr does not report positions: find the shortest prefix that fails the same way.
fn locate_parse_error(
    src: &str,
    error: &evalexpr::EvalexprError<DefaultNumericTypes>,
) -> Option<usize> {
    let wanted = std::mem::discriminant(error);
    let mut ends: Vec<usize> = src
        .char_indices()
        .filter(|(_, c)| c.is_whitespace())
        .map(|(i, _)| i)
        .collect();
    ends.push(src.len());
    for end in ends {
        let prefix = &src[..end];
        if let Err(e) = evalexpr::build_operator_tree::<DefaultNumericTypes>(prefix) {
            if std::mem::discriminant(&e) == wanted {
                // Point at the start of the last token of the failing prefix.
                let start = prefix
                    .trim_end()
                    .rfind(char::is_whitespace)
                    .map(|i| i + 1)
                    .unwrap_or(0);
                return Some(start);
            }
        }
    }
    None
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
