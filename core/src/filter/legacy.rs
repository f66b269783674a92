//! Translation of legacy Python-style filter expressions into evalexpr syntax.
//!
//! Filters used to be Python expressions evaluated against a `data` dict with
//! the keys `body`, `headers`, `query_params`, `path_params` and
//! `http_method`, for example:
//!
//! ```text
//! data["http_method"] == "post" and data["body"]["x"] and data["body"]["x"]["y"]
//! ```
//!
//! Filters are now evalexpr expressions over dotted variable names:
//!
//! ```text
//! http_method == "post" && body.x && body.x.y
//! ```
//!
//! The translation is done by a tokenizer and a small precedence-aware parser
//! (`or` < `and` < `not` < comparison < `+ -` < `* / %` < unary `-` <
//! primary). The output is rebuilt from the syntax tree with parentheses
//! where evalexpr's precedence requires them (plus a few added for
//! readability, e.g. `(!a) == b`), so Python's loosely binding
//! `not` (`not a == b` means `not (a == b)`) and chained comparisons
//! (`a < b < c`) keep their meaning.
//!
//! Semantic notes for callers:
//! * `and` / `or` become boolean `&&` / `||`; only the truthiness of a filter
//!   matters, and bare operands such as `body.x` are left as they are for the
//!   evaluator to interpret by truthiness.
//! * `None` becomes evalexpr's empty value `()`, `is` / `is not` become
//!   `==` / `!=`.
//! * Arithmetic is passed through unchanged; evalexpr divides integers with
//!   truncation and its `%` follows the sign of the dividend, unlike Python.
//! * `data["a"]["b"][0]` becomes the identifier `a.b.0`. Keys must consist of
//!   ASCII letters, digits, `_` and `:` so that the result is a single
//!   evalexpr identifier; other keys (e.g. `X-Request-Id`) are rejected.
//! * String literals accept single, double and triple quotes, the `r` and `u`
//!   prefixes, Python escape sequences and implicit concatenation; they are
//!   re-emitted as double-quoted evalexpr strings escaping only `"` and `\`.
//! * Unsupported constructs (`in`, function calls, attribute access, other
//!   variables, bitwise operators, `**`, `//`, ...) produce a [`LegacyError`]
//!   pointing at the offending byte offset.

use std::fmt;

/// Maximum nesting of parentheses, `not` and unary operators.
const MAX_DEPTH: usize = 64;

/// An error produced while translating a legacy expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyError {
    /// Human-readable description of the problem.
    pub message: String,
    /// Byte offset in the source where the problem was found.
    pub position: usize,
}

impl LegacyError {
    fn new(message: impl Into<String>, position: usize) -> Self {
        LegacyError {
            message: message.into(),
            position,
        }
    }
}

impl fmt::Display for LegacyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "legacy filter expression: {} (at byte {})",
            self.message, self.position
        )
    }
}

impl std::error::Error for LegacyError {}

/// True when the source looks like a legacy expression (uses `data[`, or word
/// operators `and`/`or`/`not` outside string literals, or `True`/`False`/`None`).
pub fn is_legacy(src: &str) -> bool {
    let mut chars = src.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c == '"' || c == '\'' {
            // Skip a string literal (either quote style, backslash escapes).
            let mut escaped = false;
            for (_, d) in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if d == '\\' {
                    escaped = true;
                } else if d == c {
                    break;
                }
            }
            continue;
        }
        if is_word_char(c) {
            let mut end = start + c.len_utf8();
            while let Some(&(i, d)) = chars.peek() {
                if !is_word_char(d) {
                    break;
                }
                end = i + d.len_utf8();
                chars.next();
            }
            match &src[start..end] {
                "and" | "or" | "not" | "True" | "False" | "None" => return true,
                "data" => {
                    while let Some(&(_, d)) = chars.peek() {
                        if !d.is_whitespace() {
                            break;
                        }
                        chars.next();
                    }
                    if matches!(chars.peek(), Some(&(_, '['))) {
                        return true;
                    }
                }
                _ => {}
            }
        }
    }
    false
}

/// Characters that belong to one "word" when scanning for legacy keywords.
/// Dots and colons are included so that an evalexpr identifier such as
/// `body.not` or `headers.and` is seen as a single word.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '.' || c == ':'
}

/// Longest output [`translate`] produces. Chained comparisons repeat their
/// middle operands (`a < b < c` is `(a < b) && (b < c)`), and chains nested in
/// chains repeat them again, so the output of a short source can grow
/// exponentially: without a bound, `1 < (1 < (... ) < 1) < 1` nested 60 deep
/// would never finish.
pub const MAX_OUTPUT_BYTES: usize = 1 << 20;

/// Translate a legacy expression to evalexpr source, of at most
/// [`MAX_OUTPUT_BYTES`].
pub fn translate(src: &str) -> Result<String, LegacyError> {
    translate_within(src, MAX_OUTPUT_BYTES)
}

/// Translate a legacy expression to evalexpr source of at most `max_len` bytes;
/// a longer translation is an error, found without building more than that.
pub fn translate_within(src: &str, max_len: usize) -> Result<String, LegacyError> {
    let tokens = tokenize(src)?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        depth: 0,
        end: src.len(),
    };
    let expr = parser.parse()?;
    let mut out = Out {
        text: String::new(),
        limit: max_len,
    };
    emit(&expr, &mut out);
    if out.full() {
        return Err(LegacyError::new(
            format!("the expression translates to more than {max_len} bytes of evalexpr"),
            0,
        ));
    }
    Ok(out.text)
}

// ---------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Str(String),
    Int(i64),
    Float(f64),
    Name(String),
    /// One of `== != < <= > >= + - * / %`.
    Op(&'static str),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Dot,
}

#[derive(Debug, Clone, PartialEq)]
struct Token {
    tok: Tok,
    pos: usize,
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Str(_) => "string literal".to_string(),
        Tok::Int(_) | Tok::Float(_) => "number".to_string(),
        Tok::Name(n) => format!("`{n}`"),
        Tok::Op(op) => format!("`{op}`"),
        Tok::LParen => "`(`".to_string(),
        Tok::RParen => "`)`".to_string(),
        Tok::LBracket => "`[`".to_string(),
        Tok::RBracket => "`]`".to_string(),
        Tok::Dot => "`.`".to_string(),
    }
}

fn char_at(src: &str, i: usize) -> Option<char> {
    src.get(i..).and_then(|s| s.chars().next())
}

fn tokenize(src: &str) -> Result<Vec<Token>, LegacyError> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(c) = char_at(src, i) {
        let start = i;
        let next = char_at(src, i + c.len_utf8());

        if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        }
        if c == '#' {
            // Python comment: skip to the end of the line.
            i = src[i..].find('\n').map_or(src.len(), |off| i + off);
            continue;
        }
        if c == '\\' && matches!(next, Some('\n' | '\r')) {
            // Explicit line continuation.
            i += 1;
            continue;
        }
        if c == '"' || c == '\'' {
            let (s, end) = lex_string(src, start, i, false)?;
            tokens.push(Token {
                tok: Tok::Str(s),
                pos: start,
            });
            i = end;
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && next.is_some_and(|n| n.is_ascii_digit())) {
            let (tok, end) = lex_number(src, start)?;
            tokens.push(Token { tok, pos: start });
            i = end;
            continue;
        }
        if c == '_' || c.is_alphabetic() {
            let mut end = i;
            while let Some(d) = char_at(src, end) {
                if d == '_' || d.is_alphanumeric() {
                    end += d.len_utf8();
                } else {
                    break;
                }
            }
            let name = &src[start..end];
            if matches!(char_at(src, end), Some('"' | '\'')) && is_string_prefix(name) {
                let lower = name.to_ascii_lowercase();
                if lower.contains('b') || lower.contains('f') {
                    return Err(LegacyError::new(
                        "bytes and f-string literals are not supported",
                        start,
                    ));
                }
                let raw = lower.contains('r');
                let (s, str_end) = lex_string(src, start, end, raw)?;
                tokens.push(Token {
                    tok: Tok::Str(s),
                    pos: start,
                });
                i = str_end;
                continue;
            }
            tokens.push(Token {
                tok: Tok::Name(name.to_string()),
                pos: start,
            });
            i = end;
            continue;
        }

        let two = src.get(i..i + 2).unwrap_or("");
        let (tok, len) = match two {
            "==" => (Tok::Op("=="), 2),
            "!=" => (Tok::Op("!="), 2),
            "<=" => (Tok::Op("<="), 2),
            ">=" => (Tok::Op(">="), 2),
            "**" => {
                return Err(LegacyError::new(
                    "the `**` operator is not supported",
                    start,
                ))
            }
            "//" => {
                return Err(LegacyError::new(
                    "the `//` operator is not supported",
                    start,
                ))
            }
            "<<" | ">>" => {
                return Err(LegacyError::new(
                    format!("the bitwise `{two}` operator is not supported"),
                    start,
                ))
            }
            "&&" => return Err(LegacyError::new("`&&` is not valid here; use `and`", start)),
            "||" => return Err(LegacyError::new("`||` is not valid here; use `or`", start)),
            _ => match c {
                '<' => (Tok::Op("<"), 1),
                '>' => (Tok::Op(">"), 1),
                '+' => (Tok::Op("+"), 1),
                '-' => (Tok::Op("-"), 1),
                '*' => (Tok::Op("*"), 1),
                '/' => (Tok::Op("/"), 1),
                '%' => (Tok::Op("%"), 1),
                '(' => (Tok::LParen, 1),
                ')' => (Tok::RParen, 1),
                '[' => (Tok::LBracket, 1),
                ']' => (Tok::RBracket, 1),
                '.' => (Tok::Dot, 1),
                '=' => {
                    return Err(LegacyError::new(
                        "assignment is not supported (did you mean `==`?)",
                        start,
                    ))
                }
                '!' => return Err(LegacyError::new("`!` is not valid here; use `not`", start)),
                '&' | '|' | '^' | '~' => {
                    return Err(LegacyError::new(
                        format!("the bitwise `{c}` operator is not supported"),
                        start,
                    ))
                }
                _ => {
                    return Err(LegacyError::new(
                        format!("unexpected character {c:?}"),
                        start,
                    ))
                }
            },
        };
        tokens.push(Token { tok, pos: start });
        i += len;
    }
    Ok(tokens)
}

/// Python string prefixes (`r`, `u`, `b`, `f` and their combinations).
fn is_string_prefix(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "r" | "u" | "b" | "f" | "br" | "rb" | "fr" | "rf"
    )
}

/// Lex a string literal whose opening quote is at `quote_at`; `token_start`
/// is where the whole literal (including any prefix) begins. Returns the
/// decoded content and the byte offset just past the closing quote.
fn lex_string(
    src: &str,
    token_start: usize,
    quote_at: usize,
    raw: bool,
) -> Result<(String, usize), LegacyError> {
    let quote = src.as_bytes()[quote_at] as char;
    let triple_delim = if quote == '"' { "\"\"\"" } else { "'''" };
    let triple = src[quote_at..].starts_with(triple_delim);
    let mut i = quote_at + if triple { 3 } else { 1 };
    let mut out = String::new();
    loop {
        let Some(c) = char_at(src, i) else {
            return Err(LegacyError::new("unterminated string literal", token_start));
        };
        if triple {
            if src[i..].starts_with(triple_delim) {
                return Ok((out, i + 3));
            }
        } else if c == quote {
            return Ok((out, i + 1));
        }
        if c == '\\' {
            let Some(n) = char_at(src, i + 1) else {
                return Err(LegacyError::new("unterminated string literal", token_start));
            };
            if raw {
                // In raw strings a backslash only prevents the next character
                // from terminating the literal; both are kept.
                out.push('\\');
                out.push(n);
                i += 1 + n.len_utf8();
            } else {
                i = lex_escape(src, i, n, &mut out)?;
            }
            continue;
        }
        out.push(c);
        i += c.len_utf8();
    }
}

/// Decode the escape sequence starting with the backslash at `at`, whose
/// following character is `n`. Returns the offset just past the sequence.
fn lex_escape(src: &str, at: usize, n: char, out: &mut String) -> Result<usize, LegacyError> {
    let after = at + 1 + n.len_utf8();
    let simple = match n {
        '\n' => return Ok(after),
        '\r' => {
            // Line continuation with a CRLF line ending.
            return Ok(if char_at(src, after) == Some('\n') {
                after + 1
            } else {
                after
            });
        }
        '\\' => Some('\\'),
        '\'' => Some('\''),
        '"' => Some('"'),
        'a' => Some('\u{07}'),
        'b' => Some('\u{08}'),
        'f' => Some('\u{0c}'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        'v' => Some('\u{0b}'),
        _ => None,
    };
    if let Some(ch) = simple {
        out.push(ch);
        return Ok(after);
    }
    match n {
        '0'..='7' => {
            let mut value = 0u32;
            let mut end = at + 1;
            while end < at + 4 {
                match char_at(src, end) {
                    Some(d @ '0'..='7') => {
                        value = value * 8 + (d as u32 - '0' as u32);
                        end += 1;
                    }
                    _ => break,
                }
            }
            // At most 0o777, always a valid scalar value.
            push_escaped(char::from_u32(value).unwrap_or('\u{fffd}'), at, out)?;
            Ok(end)
        }
        'x' | 'u' | 'U' => {
            let count = match n {
                'x' => 2,
                'u' => 4,
                _ => 8,
            };
            let digits = src.get(after..after + count).unwrap_or("");
            if digits.len() != count || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(LegacyError::new(
                    format!("invalid `\\{n}` escape: expected {count} hex digits"),
                    at,
                ));
            }
            let value = u32::from_str_radix(digits, 16)
                .map_err(|_| LegacyError::new(format!("invalid `\\{n}` escape"), at))?;
            let ch = char::from_u32(value).ok_or_else(|| {
                LegacyError::new(
                    format!("escape `\\{n}{digits}` is not a valid Unicode scalar value"),
                    at,
                )
            })?;
            push_escaped(ch, at, out)?;
            Ok(after + count)
        }
        'N' => Err(LegacyError::new(
            "named Unicode escapes (`\\N{...}`) are not supported",
            at,
        )),
        _ => {
            // Python keeps unrecognised escapes verbatim.
            out.push('\\');
            out.push(n);
            Ok(after)
        }
    }
}

/// Appends a character written as an escape; a NUL is refused because the
/// translation is stored in PostgreSQL, whose text cannot hold one.
fn push_escaped(ch: char, at: usize, out: &mut String) -> Result<(), LegacyError> {
    if ch == '\0' {
        return Err(LegacyError::new(
            "a NUL character cannot be used in a filter",
            at,
        ));
    }
    out.push(ch);
    Ok(())
}

fn lex_number(src: &str, start: usize) -> Result<(Tok, usize), LegacyError> {
    let bytes = src.as_bytes();
    let len = bytes.len();
    let mut i = start;
    let invalid = || LegacyError::new("invalid number literal", start);

    if bytes[i] == b'0' && i + 1 < len && matches!(bytes[i + 1] | 0x20, b'x' | b'o' | b'b') {
        let radix = match bytes[i + 1] | 0x20 {
            b'x' => 16,
            b'o' => 8,
            _ => 2,
        };
        i += 2;
        let digits_start = i;
        while i < len && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        let digits: String = src[digits_start..i].chars().filter(|&c| c != '_').collect();
        if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            return Err(invalid());
        }
        if char_at(src, i).is_some_and(|c| c.is_alphanumeric()) {
            return Err(invalid());
        }
        let value = i64::from_str_radix(&digits, radix)
            .map_err(|_| LegacyError::new("integer literal out of range", start))?;
        return Ok((Tok::Int(value), i));
    }

    let mut is_float = false;
    while i < len && (bytes[i].is_ascii_digit() || bytes[i] == b'_') {
        i += 1;
    }
    if i < len && bytes[i] == b'.' {
        is_float = true;
        i += 1;
        while i < len && (bytes[i].is_ascii_digit() || bytes[i] == b'_') {
            i += 1;
        }
    }
    if i < len && (bytes[i] | 0x20) == b'e' {
        let mut j = i + 1;
        if j < len && (bytes[j] == b'+' || bytes[j] == b'-') {
            j += 1;
        }
        if j < len && bytes[j].is_ascii_digit() {
            is_float = true;
            i = j;
            while i < len && (bytes[i].is_ascii_digit() || bytes[i] == b'_') {
                i += 1;
            }
        }
    }
    if char_at(src, i).is_some_and(|c| c.is_alphanumeric() || c == '_') {
        return Err(invalid());
    }
    let text: String = src[start..i].chars().filter(|&c| c != '_').collect();
    if is_float {
        let value: f64 = text.parse().map_err(|_| invalid())?;
        if !value.is_finite() {
            return Err(LegacyError::new("float literal out of range", start));
        }
        Ok((Tok::Float(value), i))
    } else {
        let value: i64 = text
            .parse()
            .map_err(|_| LegacyError::new("integer literal out of range", start))?;
        Ok((Tok::Int(value), i))
    }
}

// ---------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------

/// Syntax tree of a legacy expression. Chains of operators of the same
/// precedence are kept flat so that tree depth only grows with explicit
/// nesting, which is bounded by [`MAX_DEPTH`].
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Empty,
    Neg(Box<Expr>),
    Not(Box<Expr>),
    /// `first op rest[0].1 op rest[1].1 ...` with `+`/`-`.
    Sum(Box<Expr>, Vec<(&'static str, Expr)>),
    /// `first op rest[0].1 op rest[1].1 ...` with `*`, `/`, `%`.
    Product(Box<Expr>, Vec<(&'static str, Expr)>),
    /// A comparison; more than one element in the rest is a Python chain.
    Cmp(Box<Expr>, Vec<(&'static str, Expr)>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn peek_tok(&self) -> Option<&Tok> {
        self.peek().map(|t| &t.tok)
    }

    fn peek_tok_at(&self, offset: usize) -> Option<&Tok> {
        self.tokens.get(self.pos + offset).map(|t| &t.tok)
    }

    fn is_name(&self, offset: usize, name: &str) -> bool {
        matches!(self.peek_tok_at(offset), Some(Tok::Name(n)) if n == name)
    }

    fn bump(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        if token.is_some() {
            self.pos += 1;
        }
        token
    }

    fn here(&self) -> usize {
        self.peek().map_or(self.end, |t| t.pos)
    }

    fn unexpected(&self) -> LegacyError {
        match self.peek() {
            None => LegacyError::new("unexpected end of expression", self.end),
            Some(t) => LegacyError::new(format!("unexpected {}", describe(&t.tok)), t.pos),
        }
    }

    fn enter(&mut self, position: usize) -> Result<(), LegacyError> {
        if self.depth >= MAX_DEPTH {
            return Err(LegacyError::new(
                format!("expression is nested too deeply (more than {MAX_DEPTH} levels)"),
                position,
            ));
        }
        self.depth += 1;
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn parse(&mut self) -> Result<Expr, LegacyError> {
        if self.tokens.is_empty() {
            return Err(LegacyError::new("empty expression", 0));
        }
        let expr = self.parse_or()?;
        if self.peek().is_some() {
            return Err(self.unexpected());
        }
        Ok(expr)
    }

    fn parse_or(&mut self) -> Result<Expr, LegacyError> {
        let mut items = Vec::new();
        push_flat_or(&mut items, self.parse_and()?);
        while self.is_name(0, "or") {
            self.bump();
            push_flat_or(&mut items, self.parse_and()?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Expr::Or(items)
        })
    }

    fn parse_and(&mut self) -> Result<Expr, LegacyError> {
        let mut items = Vec::new();
        push_flat_and(&mut items, self.parse_not()?);
        while self.is_name(0, "and") {
            self.bump();
            push_flat_and(&mut items, self.parse_not()?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Expr::And(items)
        })
    }

    fn parse_not(&mut self) -> Result<Expr, LegacyError> {
        if self.is_name(0, "not") {
            let token = self.bump().expect("peeked");
            if self.is_name(0, "in") {
                return Err(LegacyError::new("unexpected `not in`", token.pos));
            }
            self.enter(token.pos)?;
            let inner = self.parse_not()?;
            self.leave();
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.parse_comparison()
    }

    fn parse_comparison(&mut self) -> Result<Expr, LegacyError> {
        let first = self.parse_sum()?;
        let mut rest = Vec::new();
        loop {
            let op = match self.peek_tok() {
                Some(Tok::Op(op @ ("==" | "!=" | "<" | "<=" | ">" | ">="))) => {
                    let op = *op;
                    self.bump();
                    op
                }
                Some(Tok::Name(n)) if n == "is" => {
                    self.bump();
                    if self.is_name(0, "not") {
                        self.bump();
                        "!="
                    } else {
                        "=="
                    }
                }
                Some(Tok::Name(n)) if n == "in" => {
                    return Err(LegacyError::new(
                        "the `in` operator is not supported",
                        self.here(),
                    ));
                }
                Some(Tok::Name(n)) if n == "not" && self.is_name(1, "in") => {
                    return Err(LegacyError::new(
                        "the `not in` operator is not supported",
                        self.here(),
                    ));
                }
                _ => break,
            };
            rest.push((op, self.parse_sum()?));
        }
        Ok(if rest.is_empty() {
            first
        } else {
            Expr::Cmp(Box::new(first), rest)
        })
    }

    fn parse_sum(&mut self) -> Result<Expr, LegacyError> {
        let first = self.parse_product()?;
        let mut rest = Vec::new();
        while let Some(Tok::Op(op @ ("+" | "-"))) = self.peek_tok() {
            let op = *op;
            self.bump();
            rest.push((op, self.parse_product()?));
        }
        Ok(if rest.is_empty() {
            first
        } else {
            Expr::Sum(Box::new(first), rest)
        })
    }

    fn parse_product(&mut self) -> Result<Expr, LegacyError> {
        let first = self.parse_unary()?;
        let mut rest = Vec::new();
        while let Some(Tok::Op(op @ ("*" | "/" | "%"))) = self.peek_tok() {
            let op = *op;
            self.bump();
            rest.push((op, self.parse_unary()?));
        }
        Ok(if rest.is_empty() {
            first
        } else {
            Expr::Product(Box::new(first), rest)
        })
    }

    fn parse_unary(&mut self) -> Result<Expr, LegacyError> {
        if let Some(Tok::Op(op @ ("-" | "+"))) = self.peek_tok() {
            let negate = *op == "-";
            let token = self.bump().expect("peeked");
            self.enter(token.pos)?;
            let inner = self.parse_unary()?;
            self.leave();
            // Unary plus is the identity on numbers.
            return Ok(if negate {
                Expr::Neg(Box::new(inner))
            } else {
                inner
            });
        }
        self.parse_primary()
    }

    fn parse_primary(&mut self) -> Result<Expr, LegacyError> {
        let Some(token) = self.bump() else {
            return Err(LegacyError::new("unexpected end of expression", self.end));
        };
        let expr = match token.tok {
            Tok::LParen => {
                self.enter(token.pos)?;
                let inner = self.parse_or()?;
                if !matches!(self.peek_tok(), Some(Tok::RParen)) {
                    return Err(match self.peek() {
                        None => LegacyError::new(
                            format!("unclosed `(` (opened at byte {})", token.pos),
                            self.end,
                        ),
                        Some(t) => LegacyError::new(
                            format!("expected `)` but found {}", describe(&t.tok)),
                            t.pos,
                        ),
                    });
                }
                self.bump();
                self.leave();
                inner
            }
            Tok::Str(s) => Expr::Str(self.concat_strings(s)),
            Tok::Int(n) => Expr::Int(n),
            Tok::Float(f) => Expr::Float(f),
            Tok::Name(name) => match name.as_str() {
                "data" => self.parse_data_ref(token.pos)?,
                "True" => Expr::Bool(true),
                "False" => Expr::Bool(false),
                "None" => Expr::Empty,
                "not" => {
                    return Err(LegacyError::new(
                        "`not` cannot be used as an operand here; wrap it in parentheses",
                        token.pos,
                    ))
                }
                "and" | "or" | "is" | "in" => {
                    return Err(LegacyError::new(
                        format!("unexpected keyword `{name}`"),
                        token.pos,
                    ))
                }
                _ if matches!(self.peek_tok(), Some(Tok::LParen)) => {
                    return Err(LegacyError::new(
                        format!("function calls are not supported (`{name}(...)`)"),
                        token.pos,
                    ))
                }
                _ => {
                    return Err(LegacyError::new(
                        format!(
                            "unsupported name `{name}`; only `data[...]`, `True`, `False` and `None` are allowed"
                        ),
                        token.pos,
                    ))
                }
            },
            other => {
                return Err(LegacyError::new(
                    format!("unexpected {}", describe(&other)),
                    token.pos,
                ))
            }
        };
        match self.peek() {
            Some(Token { tok: Tok::Dot, pos }) => Err(LegacyError::new(
                "attribute access and method calls are not supported",
                *pos,
            )),
            Some(Token {
                tok: Tok::LBracket,
                pos,
            }) => Err(LegacyError::new(
                "subscripts are only supported on `data`",
                *pos,
            )),
            Some(Token {
                tok: Tok::LParen,
                pos,
            }) => Err(LegacyError::new("calls are not supported", *pos)),
            _ => Ok(expr),
        }
    }

    /// Python concatenates adjacent string literals.
    fn concat_strings(&mut self, mut s: String) -> String {
        while let Some(Tok::Str(next)) = self.peek_tok() {
            s.push_str(next);
            self.bump();
        }
        s
    }

    /// Parse the subscripts following `data` into a dotted identifier.
    fn parse_data_ref(&mut self, data_pos: usize) -> Result<Expr, LegacyError> {
        let mut segments: Vec<String> = Vec::new();
        let mut first_key_pos = data_pos;
        while let Some(Tok::LBracket) = self.peek_tok() {
            self.bump();
            let key_pos = self.here();
            let key = match self.bump() {
                Some(Token {
                    tok: Tok::Str(s), ..
                }) => self.concat_strings(s),
                Some(Token {
                    tok: Tok::Int(n), ..
                }) => n.to_string(),
                Some(Token {
                    tok: Tok::Op("-"), ..
                }) if matches!(self.peek_tok(), Some(Tok::Int(_))) => {
                    return Err(LegacyError::new(
                        "negative subscripts are not supported",
                        key_pos,
                    ))
                }
                None => return Err(LegacyError::new("unexpected end of expression", self.end)),
                Some(_) => {
                    return Err(LegacyError::new(
                        "unsupported subscript: only string or integer literals are allowed",
                        key_pos,
                    ))
                }
            };
            // Header names keep their dashes as `_`: the evaluator matches
            // `headers.x_trace` against `X-Trace` (case-insensitively).
            let key = if segments.len() == 1 && segments[0] == "headers" {
                key.replace('-', "_")
            } else {
                key
            };
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            {
                return Err(LegacyError::new(
                    format!(
                        "key {key:?} cannot be used in a filter variable name (only ASCII letters, digits, `_` and `:` are allowed)"
                    ),
                    key_pos,
                ));
            }
            if segments.is_empty() {
                first_key_pos = key_pos;
                if key.starts_with(|c: char| c.is_ascii_digit()) {
                    return Err(LegacyError::new(
                        format!("top-level key {key:?} cannot start with a digit"),
                        key_pos,
                    ));
                }
            }
            match self.bump() {
                Some(Token {
                    tok: Tok::RBracket, ..
                }) => {}
                Some(t) => {
                    return Err(LegacyError::new(
                        format!("expected `]` but found {}", describe(&t.tok)),
                        t.pos,
                    ))
                }
                None => return Err(LegacyError::new("unexpected end of expression", self.end)),
            }
            segments.push(key);
        }
        if segments.is_empty() {
            return Err(LegacyError::new(
                "`data` must be subscripted with a string key, e.g. `data[\"body\"]`",
                data_pos,
            ));
        }
        let ident = segments.join(".");
        // The identifier must not read as a literal or as a legacy keyword.
        if ident.parse::<f64>().is_ok()
            || matches!(
                ident.as_str(),
                "true" | "false" | "True" | "False" | "None" | "and" | "or" | "not" | "is" | "in"
            )
        {
            return Err(LegacyError::new(
                format!("key {ident:?} cannot be used as a top-level variable name"),
                first_key_pos,
            ));
        }
        Ok(Expr::Ident(ident))
    }
}

fn push_flat_or(items: &mut Vec<Expr>, expr: Expr) {
    match expr {
        Expr::Or(inner) => items.extend(inner),
        other => items.push(other),
    }
}

fn push_flat_and(items: &mut Vec<Expr>, expr: Expr) {
    match expr {
        Expr::And(inner) => items.extend(inner),
        other => items.push(other),
    }
}

// ---------------------------------------------------------------------------
// Emitter
// ---------------------------------------------------------------------------

const PREC_OR: u8 = 1;
const PREC_AND: u8 = 2;
const PREC_CMP: u8 = 3;
const PREC_SUM: u8 = 4;
const PREC_PRODUCT: u8 = 5;
const PREC_UNARY: u8 = 6;
const PREC_ATOM: u8 = 7;

/// Precedence of the emitted evalexpr form of `expr`.
fn prec(expr: &Expr) -> u8 {
    match expr {
        Expr::Or(_) => PREC_OR,
        Expr::And(_) => PREC_AND,
        Expr::Cmp(_, rest) if rest.len() > 1 => PREC_AND,
        Expr::Cmp(..) => PREC_CMP,
        Expr::Sum(..) => PREC_SUM,
        Expr::Product(..) => PREC_PRODUCT,
        Expr::Neg(_) | Expr::Not(_) => PREC_UNARY,
        _ => PREC_ATOM,
    }
}

/// Emitted text, with the length past which emission stops.
struct Out {
    text: String,
    limit: usize,
}

impl Out {
    fn push(&mut self, c: char) {
        self.text.push(c);
    }

    fn push_str(&mut self, s: &str) {
        self.text.push_str(s);
    }

    /// Past the limit: every `emit` returns at once, so the work done is
    /// bounded by the limit however often operands repeat.
    fn full(&self) -> bool {
        self.text.len() > self.limit
    }
}

/// Emit `expr`, parenthesised if it binds looser than `min`.
fn emit_child(expr: &Expr, min: u8, out: &mut Out) {
    if prec(expr) < min {
        out.push('(');
        emit(expr, out);
        out.push(')');
    } else {
        emit(expr, out);
    }
}

/// Emit an operand of a comparison or arithmetic operator. A negation is
/// parenthesised there for readability (`(!a) == b`), although evalexpr's
/// `!` already binds tighter.
fn emit_operand(expr: &Expr, min: u8, out: &mut Out) {
    if matches!(expr, Expr::Not(_)) {
        out.push('(');
        emit(expr, out);
        out.push(')');
    } else {
        emit_child(expr, min, out);
    }
}

fn emit(expr: &Expr, out: &mut Out) {
    if out.full() {
        return;
    }
    match expr {
        Expr::Ident(name) => out.push_str(name),
        Expr::Str(s) => push_string_literal(s, &mut out.text),
        Expr::Int(n) => out.push_str(&n.to_string()),
        // `{:?}` always yields a form evalexpr reads back as a float
        // (`1.0`, `0.5`, `1e20`, `1e-7`).
        Expr::Float(f) => out.push_str(&format!("{f:?}")),
        Expr::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Expr::Empty => out.push_str("()"),
        Expr::Neg(inner) => {
            out.push('-');
            emit_operand(inner, PREC_ATOM, out);
        }
        Expr::Not(inner) => {
            out.push('!');
            emit_child(inner, PREC_ATOM, out);
        }
        Expr::Or(items) => emit_joined(items, " || ", PREC_AND, out),
        Expr::And(items) => emit_joined(items, " && ", PREC_AND, out),
        Expr::Cmp(first, rest) if rest.len() == 1 => {
            emit_operand(first, PREC_SUM, out);
            out.push(' ');
            out.push_str(rest[0].0);
            out.push(' ');
            emit_operand(&rest[0].1, PREC_SUM, out);
        }
        Expr::Cmp(first, rest) => {
            // Python chain `a < b < c` means `(a < b) and (b < c)`.
            let mut left: &Expr = first;
            for (i, (op, right)) in rest.iter().enumerate() {
                if i > 0 {
                    out.push_str(" && ");
                }
                out.push('(');
                emit_operand(left, PREC_SUM, out);
                out.push(' ');
                out.push_str(op);
                out.push(' ');
                emit_operand(right, PREC_SUM, out);
                out.push(')');
                left = right;
            }
        }
        Expr::Sum(first, rest) => emit_chain(first, rest, PREC_SUM, out),
        Expr::Product(first, rest) => emit_chain(first, rest, PREC_PRODUCT, out),
    }
}

fn emit_joined(items: &[Expr], sep: &str, min: u8, out: &mut Out) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        emit_child(item, min, out);
    }
}

/// Emit a left-associative chain: the first operand may share the chain's
/// precedence, later operands must bind tighter.
fn emit_chain(first: &Expr, rest: &[(&'static str, Expr)], level: u8, out: &mut Out) {
    emit_operand(first, level, out);
    for (op, operand) in rest {
        out.push(' ');
        out.push_str(op);
        out.push(' ');
        emit_operand(operand, level + 1, out);
    }
}

/// Write `s` as an evalexpr string literal (only `"` and `\` are escaped;
/// evalexpr has no other escape sequences).
fn push_string_literal(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn tr(src: &str) -> String {
        match translate(src) {
            Ok(out) => out,
            Err(e) => panic!("translate({src:?}) failed: {e}"),
        }
    }

    fn err(src: &str) -> LegacyError {
        match translate(src) {
            Ok(out) => panic!("translate({src:?}) unexpectedly succeeded: {out:?}"),
            Err(e) => e,
        }
    }

    fn assert_err_at(src: &str, position: usize, needle: &str) {
        let e = err(src);
        assert_eq!(e.position, position, "position for {src:?}: {e}");
        assert!(
            e.message.contains(needle),
            "message for {src:?} should contain {needle:?}: {e}"
        );
    }

    /// Decode the evalexpr string literals of `src`, in order.
    fn evalexpr_strings(src: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut chars = src.chars();
        while let Some(c) = chars.next() {
            if c == '"' {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\')) => s.push(e),
                            other => panic!("bad escape {other:?} in {src:?}"),
                        },
                        Some(ch) => s.push(ch),
                        None => panic!("unterminated string in {src:?}"),
                    }
                }
                out.push(s);
            }
        }
        out
    }

    /// Raw evalexpr string literal texts of `src`, in order.
    fn evalexpr_literal_texts(src: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut chars = src.char_indices().peekable();
        while let Some((start, c)) = chars.next() {
            if c == '"' {
                let mut escaped = false;
                for (i, d) in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if d == '\\' {
                        escaped = true;
                    } else if d == '"' {
                        out.push(src[start..=i].to_string());
                        break;
                    }
                }
            }
        }
        out
    }

    /// Parentheses outside string literals are balanced and never close
    /// more than they opened.
    fn parens_balanced(src: &str) -> bool {
        let mut depth: i64 = 0;
        let mut in_string = false;
        let mut escaped = false;
        for c in src.chars() {
            if in_string {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    in_string = false;
                }
                continue;
            }
            match c {
                '"' => in_string = true,
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth < 0 {
                        return false;
                    }
                }
                _ => {}
            }
        }
        depth == 0 && !in_string
    }

    #[test]
    fn original_examples() {
        assert_eq!(
            tr(
                r#"data["body"]["x"] == 1 and data["headers"]["y"] == "z" or data["special_key"] == "special value""#
            ),
            r#"body.x == 1 && headers.y == "z" || special_key == "special value""#
        );
        assert_eq!(
            tr(r#"data["http_method"] == "post" and data["body"]["x"] and data["body"]["x"]["y"]"#),
            r#"http_method == "post" && body.x && body.x.y"#
        );
    }

    #[test]
    fn top_level_keys() {
        assert_eq!(
            tr(r#"data["query_params"]["q"] == "a""#),
            r#"query_params.q == "a""#
        );
        assert_eq!(
            tr(r#"data["path_params"]["id"] != 3"#),
            "path_params.id != 3"
        );
        assert_eq!(tr(r#"data["body"]"#), "body");
        assert_eq!(tr(r#"data [ "body" ] [ "a_b:c" ]"#), "body.a_b:c");
    }

    #[test]
    fn string_literal_content_survives() {
        let src = r#"data["body"]["msg"] == "x and y or not data[\"k\"] True False None \\ end""#;
        let out = tr(src);
        assert_eq!(
            out,
            r#"body.msg == "x and y or not data[\"k\"] True False None \\ end""#
        );
        assert_eq!(
            evalexpr_strings(&out),
            vec![r#"x and y or not data["k"] True False None \ end"#.to_string()]
        );
        assert_eq!(
            tr(r#"data['body']['m'] == 'it\'s "quoted" and \\ more'"#),
            r#"body.m == "it's \"quoted\" and \\ more""#
        );
    }

    #[test]
    fn string_escapes_and_prefixes() {
        assert_eq!(
            evalexpr_strings(&tr(r#""a\tb\x41\u00e9\U0001F600\101\1\q""#)),
            vec!["a\tbA\u{e9}\u{1F600}A\u{1}\\q".to_string()]
        );
        // PostgreSQL text cannot hold a NUL, however it is written.
        for nul in [
            r#""a\0""#,
            r#""a\x00""#,
            r#""a\u0000""#,
            r#""a\U00000000""#,
            r#""a\000""#,
        ] {
            assert_err_at(nul, 2, "NUL");
        }
        assert_eq!(tr(r#"r"\d+\"""#), r#""\\d+\\\"""#);
        assert_eq!(tr(r#"u'x'"#), r#""x""#);
        assert_eq!(tr(r#""a" 'b' "c""#), r#""abc""#);
        assert_eq!(tr(r#"'''it's "x"'''"#), r#""it's \"x\"""#);
        assert_eq!(tr("\"a\\\nb\""), "\"ab\"");
        assert_eq!(
            evalexpr_strings(&tr(r#""line\nbreak""#)),
            vec!["line\nbreak"]
        );
    }

    #[test]
    fn not_precedence() {
        assert_eq!(tr(r#"not data["body"]["x"] == 1"#), "!(body.x == 1)");
        assert_eq!(tr(r#"not data["body"]["x"]"#), "!body.x");
        assert_eq!(
            tr(r#"not data["body"]["x"] and data["body"]["y"]"#),
            "!body.x && body.y"
        );
        assert_eq!(
            tr(r#"not (data["body"]["x"] or data["body"]["y"])"#),
            "!(body.x || body.y)"
        );
        assert_eq!(tr(r#"not not data["body"]["x"]"#), "!(!body.x)");
        assert_eq!(
            tr(r#"(not data["body"]["x"]) == True"#),
            "(!body.x) == true"
        );
        assert_eq!(tr("not -1"), "!(-1)");
        assert_eq!(tr(r#"not data["body"]["a"] + 1 > 2"#), "!(body.a + 1 > 2)");
    }

    #[test]
    fn and_or_precedence() {
        assert_eq!(tr(r#"data["a"] or data["b"] and data["c"]"#), "a || b && c");
        assert_eq!(
            tr(r#"(data["a"] or data["b"]) and data["c"]"#),
            "(a || b) && c"
        );
        assert_eq!(
            tr(r#"data["a"] or (data["b"] or data["c"])"#),
            "a || b || c"
        );
    }

    #[test]
    fn chained_comparisons() {
        assert_eq!(
            tr(r#"1 < data["body"]["n"] <= 10"#),
            "(1 < body.n) && (body.n <= 10)"
        );
        assert_eq!(
            tr(r#"0 <= data["body"]["a"] < data["body"]["b"] + 1 < 100"#),
            "(0 <= body.a) && (body.a < body.b + 1) && (body.b + 1 < 100)"
        );
        assert_eq!(
            tr(r#"data["x"] or 1 < data["y"] < 3"#),
            "x || (1 < y) && (y < 3)"
        );
        assert_eq!(tr(r#"not 1 < data["y"] < 3"#), "!((1 < y) && (y < 3))");
        assert_eq!(tr(r#"(1 < data["y"]) == True"#), "(1 < y) == true");
    }

    #[test]
    fn integer_subscripts() {
        assert_eq!(
            tr(r#"data["body"]["items"][0]["id"] == 5"#),
            "body.items.0.id == 5"
        );
        assert_eq!(tr(r#"data["body"][12]"#), "body.12");
    }

    #[test]
    fn single_quoted_keys() {
        assert_eq!(tr("data['headers']['y'] == 'z'"), r#"headers.y == "z""#);
        assert_eq!(tr(r#"data['body']["mixed"]"#), "body.mixed");
    }

    #[test]
    fn numbers() {
        assert_eq!(tr("1.5"), "1.5");
        assert_eq!(tr(".5"), "0.5");
        assert_eq!(tr("5."), "5.0");
        assert_eq!(tr("1e3"), "1000.0");
        assert_eq!(tr("1e-7"), "1e-7");
        assert_eq!(tr("2.5E-3"), "0.0025");
        assert_eq!(tr("1_000"), "1000");
        assert_eq!(tr("0x1F + 0o17 + 0b101"), "31 + 15 + 5");
        assert_eq!(tr("-3"), "-3");
        assert_eq!(tr("--3"), "-(-3)");
        assert_eq!(tr("+3"), "3");
    }

    #[test]
    fn arithmetic_precedence() {
        assert_eq!(
            tr(r#"data["body"]["a"] - (data["body"]["b"] - 1) > 2 * (3 + 4)"#),
            "body.a - (body.b - 1) > 2 * (3 + 4)"
        );
        assert_eq!(tr("(1 + 2) + 3"), "1 + 2 + 3");
        assert_eq!(tr("1 - (2 + 3)"), "1 - (2 + 3)");
        assert_eq!(tr("(1 + 2) * 3 % 4"), "(1 + 2) * 3 % 4");
        assert_eq!(tr("8 / (4 / 2)"), "8 / (4 / 2)");
        assert_eq!(tr(r#"-data["body"]["a"] < -1"#), "-body.a < -1");
        assert_eq!(tr("1 - -1"), "1 - -1");
        assert_eq!(tr("-(1 + 2)"), "-(1 + 2)");
        assert_eq!(tr("(1 == 1) + 1"), "(1 == 1) + 1");
    }

    #[test]
    fn constants_and_identity() {
        assert_eq!(tr(r#"data["body"]["x"] is None"#), "body.x == ()");
        assert_eq!(tr(r#"data["body"]["x"] is not None"#), "body.x != ()");
        assert_eq!(tr(r#"data["body"]["ok"] == True"#), "body.ok == true");
        assert_eq!(tr("False"), "false");
        assert_eq!(tr("None"), "()");
    }

    #[test]
    fn comments_and_whitespace() {
        assert_eq!(
            tr("data[\"a\"] == 1  # trailing comment\n  and data[\"b\"]"),
            "a == 1 && b"
        );
        assert_eq!(tr("data[\"a\"] \\\n and data[\"b\"]"), "a && b");
    }

    #[test]
    fn unsupported_constructs_report_positions() {
        assert_err_at("", 0, "empty");
        assert_err_at("   ", 0, "empty");
        assert_err_at(r#"len(data["body"]) > 1"#, 0, "function calls");
        assert_err_at(r#"data["body"]["x-y"] == 1"#, 13, "\"x-y\"");
        assert_eq!(
            tr(r#"data["headers"]["X-Trace-Id"] == "a""#),
            r#"headers.X_Trace_Id == "a""#
        );
        assert_err_at(r#"data["body"][""]"#, 13, "\"\"");
        assert_err_at(r#"data["a b"]"#, 5, "cannot be used");
        assert_err_at(r#"data == 1"#, 0, "must be subscripted");
        assert_err_at(r#"data[x]"#, 5, "unsupported subscript");
        assert_err_at(r#"data["body"][1 + 1]"#, 15, "expected `]`");
        assert_err_at(r#"data["body"][-1]"#, 13, "negative");
        assert_err_at(r#"data["body""#, 11, "end of expression");
        assert_err_at(r#""a" in data["body"]["tags"]"#, 4, "`in`");
        assert_err_at(r#""a" not in data["body"]["tags"]"#, 4, "`not in`");
        assert_err_at(r#"data["x"] == 1 & 2"#, 15, "bitwise");
        assert_err_at(r#"data["x"] ** 2"#, 10, "`**`");
        assert_err_at(r#"data["x"] // 2"#, 10, "`//`");
        assert_err_at(r#"data["x"] = 1"#, 10, "==");
        assert_err_at(r#"data["x"] == 1 && True"#, 15, "use `and`");
        assert_err_at(r#"data["x"] == 'unterminated"#, 13, "unterminated");
        assert_err_at(r#"data["body"].get("x")"#, 12, "attribute");
        assert_err_at(r#"(data["x"] == 1"#, 15, "unclosed");
        assert_err_at(r#"data["x"] == 1)"#, 14, "unexpected `)`");
        assert_err_at(r#"data["x"] == 1abc"#, 13, "invalid number");
        assert_err_at(r#"data["x"] == foo"#, 13, "unsupported name `foo`");
        assert_err_at(r#"data["x"] == not True"#, 13, "`not`");
        assert_err_at(r#"data["x"] and or"#, 14, "keyword `or`");
        assert_err_at(r#"f"{x}""#, 0, "f-string");
        assert_err_at(r#""\N{DASH}""#, 1, "named Unicode");
        assert_err_at(r#""\x4""#, 1, "hex digits");
        assert_err_at(r#""\ud800""#, 1, "scalar");
        assert_err_at("99999999999999999999", 0, "out of range");
        assert_err_at("1e400", 0, "out of range");
        assert_err_at("\"x\"[0]", 3, "subscripts");
        assert_err_at("data[\"x\"] == 1 ,", 15, "unexpected character ','");
        assert_err_at(r#"data["x"] if True else False"#, 10, "`if`");
        // Byte offsets, not character offsets.
        assert_err_at("\"\u{e9}\u{e9}\" == data[\"a-b\"]", 15, "\"a-b\"");
    }

    #[test]
    fn keys_that_cannot_be_identifiers() {
        assert_err_at(r#"data["1x"]"#, 5, "digit");
        assert_err_at(r#"data[0]"#, 5, "digit");
        assert_err_at(r#"data["true"]"#, 5, "top-level");
        assert_err_at(r#"data["inf"]"#, 5, "top-level");
        assert_err_at(r#"data["NaN"]"#, 5, "top-level");
        assert_err_at(r#"data["and"]"#, 5, "top-level");
        assert_err_at(r#"data["x.y"]"#, 5, "cannot be used");
        assert_eq!(tr(r#"data["body"]["true"]"#), "body.true");
        assert_eq!(tr(r#"data["inf"]["x"]"#), "inf.x");
    }

    #[test]
    fn deep_nesting_is_rejected() {
        let ok = format!("{}data[\"x\"]{}", "(".repeat(64), ")".repeat(64));
        assert_eq!(tr(&ok), "x");
        let deep = format!("{}data[\"x\"]{}", "(".repeat(65), ")".repeat(65));
        assert_err_at(&deep, 64, "nested too deeply");

        let nots_ok = format!("{}data[\"x\"]", "not ".repeat(64));
        assert!(translate(&nots_ok).is_ok());
        let nots = format!("{}data[\"x\"]", "not ".repeat(65));
        assert_err_at(&nots, 64 * 4, "nested too deeply");

        let negs = format!("{}1", "-".repeat(65));
        assert_err_at(&negs, 64, "nested too deeply");

        // Far beyond the limit: must fail cleanly, not overflow the stack.
        let huge = "(".repeat(100_000);
        assert_err_at(&huge, 64, "nested too deeply");
    }

    #[test]
    fn repeated_operands_cannot_blow_up() {
        // Each level repeats its middle operand: 2^60 copies without a limit.
        let nested = format!("{}data[\"x\"]{}", "1 < (".repeat(60), ") < 1".repeat(60));
        let started = std::time::Instant::now();
        assert_err_at(&nested, 0, "more than 1048576 bytes");
        let e = translate_within(&nested, 4096).unwrap_err();
        assert!(e.message.contains("more than 4096 bytes"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // A few levels fit, and keep their meaning.
        assert_eq!(
            tr(r#"1 < (2 < data["x"] < 3) < 4"#),
            "(1 < ((2 < x) && (x < 3))) && (((2 < x) && (x < 3)) < 4)"
        );
        assert!(translate_within(r#"1 < (2 < data["x"] < 3) < 4"#, 20).is_err());
    }

    #[test]
    fn long_flat_chains_do_not_recurse() {
        let src = vec![r#"data["body"]["x"] == 1"#; 2000].join(" or ");
        let out = tr(&src);
        assert_eq!(out.matches(" || ").count(), 1999);
        let sum = vec!["1"; 5000].join(" + ");
        assert_eq!(tr(&sum), sum);
    }

    #[test]
    fn is_legacy_detection() {
        assert!(is_legacy(r#"data["x"] == 1"#));
        assert!(is_legacy(r#"data ['x'] == 1"#));
        assert!(is_legacy(r#"body.x == 1 and headers.y"#));
        assert!(is_legacy(r#"body.x or body.y"#));
        assert!(is_legacy(r#"not body.x"#));
        assert!(is_legacy(r#"body.x == True"#));
        assert!(is_legacy(r#"body.x == None"#));
        assert!(is_legacy(r#"(body.x)and(body.y)"#));
        assert!(is_legacy(r#"body.x == "a \" and " and b"#));

        assert!(!is_legacy(r#"body.x == 1 && true"#));
        assert!(!is_legacy(
            r#"body.x == "cats and dogs" || body.y == 'data[' "#
        ));
        assert!(!is_legacy(r#"body.msg == "None or True, not data[0]""#));
        assert!(!is_legacy(r#"body.and == 1 && headers.not"#));
        assert!(!is_legacy(r#"data == 1"#));
        assert!(!is_legacy(r#"body.data == 1"#));
        assert!(!is_legacy(r#"android || organic || notes"#));
        assert!(!is_legacy(""));
    }

    #[test]
    fn error_display() {
        let e = err("data");
        assert_eq!(e.position, 0);
        let shown = e.to_string();
        assert!(shown.contains("at byte 0"), "{shown}");
        let boxed: Box<dyn std::error::Error> = Box::new(e);
        assert!(!boxed.to_string().is_empty());
    }

    #[test]
    fn translations_are_not_legacy() {
        for src in [
            r#"data["body"]["x"] == 1 and data["headers"]["y"] == "z" or data["special_key"] == "special value""#,
            r#"not data["body"]["x"] is None"#,
            r#"data["body"]["s"] == "and or not True data[""#,
        ] {
            assert!(is_legacy(src));
            assert!(!is_legacy(&tr(src)), "{src}");
        }
    }

    // -----------------------------------------------------------------------
    // Property tests
    // -----------------------------------------------------------------------

    /// A generated legacy expression: its source, Python precedence level
    /// (1 = or ... 8 = atom) and the contents of the string literals in it.
    #[derive(Debug, Clone)]
    struct Gen {
        src: String,
        level: u8,
        strings: Vec<String>,
    }

    const L_OR: u8 = 1;
    const L_AND: u8 = 2;
    const L_NOT: u8 = 3;
    const L_CMP: u8 = 4;
    const L_SUM: u8 = 5;
    const L_PRODUCT: u8 = 6;
    const L_UNARY: u8 = 7;
    const L_ATOM: u8 = 8;

    fn wrap(g: Gen, min: u8) -> Gen {
        if g.level >= min {
            g
        } else {
            Gen {
                src: format!("({})", g.src),
                level: L_ATOM,
                strings: g.strings,
            }
        }
    }

    /// Encode `content` as a Python string literal; `mode` picks the quote
    /// style and which characters are written as escapes.
    fn python_literal(content: &str, mode: u8) -> String {
        let quote = if mode & 1 == 0 { '"' } else { '\'' };
        let mut out = String::new();
        out.push(quote);
        for (i, c) in content.chars().enumerate() {
            let fancy = mode & 2 != 0 && (i + mode as usize).is_multiple_of(3);
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c if c == quote => {
                    out.push('\\');
                    out.push(c);
                }
                c if fancy && (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
                c if fancy && (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c if fancy => out.push_str(&format!("\\U{:08x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push(quote);
        out
    }

    fn evalexpr_literal(content: &str) -> String {
        let mut out = String::new();
        push_string_literal(content, &mut out);
        out
    }

    fn content_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ -~]{0,12}",
            "[a\"'\\\\ \n\t\u{e9}\u{1F600}]{0,8}",
            Just(" and ".to_string()),
            Just("data[\"x\"] or not True".to_string()),
        ]
    }

    fn data_ref_strategy() -> impl Strategy<Value = Gen> {
        let top = prop::sample::select(vec![
            "body",
            "headers",
            "query_params",
            "path_params",
            "http_method",
            "special_key",
        ]);
        let seg = prop_oneof![
            prop::sample::select(vec!["x", "y", "user", "id", "a_b", "Key:1", "not", "True"])
                .prop_map(|k| k.to_string()),
            (0u32..20).prop_map(|n| n.to_string()),
        ];
        (
            top,
            any::<bool>(),
            prop::collection::vec((seg, any::<bool>()), 0..3),
        )
            .prop_map(|(top, dq, segs)| {
                let q = |double: bool| if double { '"' } else { '\'' };
                let mut src = format!("data[{0}{top}{0}]", q(dq));
                for (s, double) in segs {
                    if s.bytes().all(|b| b.is_ascii_digit()) {
                        src.push_str(&format!("[{s}]"));
                    } else {
                        src.push_str(&format!("[{0}{s}{0}]", q(double)));
                    }
                }
                Gen {
                    src,
                    level: L_ATOM,
                    strings: Vec::new(),
                }
            })
    }

    fn leaf_strategy() -> impl Strategy<Value = Gen> {
        let atom = |s: &str| Gen {
            src: s.to_string(),
            level: L_ATOM,
            strings: Vec::new(),
        };
        prop_oneof![
            3 => data_ref_strategy(),
            2 => (content_strategy(), any::<u8>()).prop_map(|(content, mode)| Gen {
                src: python_literal(&content, mode),
                level: L_ATOM,
                strings: vec![content],
            }),
            1 => (0i64..100_000).prop_map(move |n| atom(&n.to_string())),
            1 => prop::sample::select(vec!["1.5", ".25", "3e2", "1e-5", "0x10", "1_000"])
                .prop_map(atom),
            1 => prop::sample::select(vec!["True", "False", "None"]).prop_map(atom),
        ]
    }

    fn expr_strategy() -> impl Strategy<Value = Gen> {
        leaf_strategy().prop_recursive(5, 48, 3, |inner| {
            let binary = (
                inner.clone(),
                prop::sample::select(vec![
                    ("or", L_OR),
                    ("and", L_AND),
                    ("==", L_CMP),
                    ("!=", L_CMP),
                    ("<", L_CMP),
                    ("<=", L_CMP),
                    (">", L_CMP),
                    (">=", L_CMP),
                    ("is", L_CMP),
                    ("is not", L_CMP),
                    ("+", L_SUM),
                    ("-", L_SUM),
                    ("*", L_PRODUCT),
                    ("/", L_PRODUCT),
                    ("%", L_PRODUCT),
                ]),
                inner.clone(),
            )
                .prop_map(|(a, (op, level), b)| {
                    // Operands of a comparison may themselves be comparisons
                    // (forming a Python chain); other operators need tighter
                    // operands, except on the left of a left-associative one.
                    let a = wrap(a, level);
                    let b = wrap(b, if level == L_CMP { L_CMP } else { level + 1 });
                    let mut strings = a.strings;
                    strings.extend(b.strings);
                    Gen {
                        src: format!("{} {op} {}", a.src, b.src),
                        level,
                        strings,
                    }
                });
            let unary =
                (inner.clone(), prop::sample::select(vec!["not ", "-"])).prop_map(|(a, op)| {
                    let (min, level) = if op == "-" {
                        (L_UNARY, L_UNARY)
                    } else {
                        (L_NOT, L_NOT)
                    };
                    let a = wrap(a, min);
                    Gen {
                        src: format!("{op}{}", a.src),
                        level,
                        strings: a.strings,
                    }
                });
            let group = inner.clone().prop_map(|a| Gen {
                src: format!("( {} )", a.src),
                level: L_ATOM,
                strings: a.strings,
            });
            prop_oneof![4 => binary, 2 => unary, 1 => group]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn prop_translation_is_well_formed(g in expr_strategy()) {
            let out = translate(&g.src);
            prop_assert!(out.is_ok(), "{:?} -> {:?}", g.src, out);
            let out = out.unwrap();
            prop_assert_eq!(translate(&g.src).unwrap(), out.clone(), "non-deterministic");
            prop_assert!(parens_balanced(&out), "unbalanced: {:?} -> {:?}", g.src, out);
            prop_assert!(!is_legacy(&out), "output still looks legacy: {:?}", out);

            // Every generated string survives exactly (chained comparisons
            // may duplicate an operand, so compare as sets).
            let found: BTreeSet<String> = evalexpr_strings(&out).into_iter().collect();
            let expected: BTreeSet<String> = g.strings.iter().cloned().collect();
            prop_assert_eq!(found, expected, "strings changed: {:?} -> {:?}", g.src, out);

            // An emitted literal is itself a valid legacy literal that
            // translates to itself.
            for lit in evalexpr_literal_texts(&out) {
                prop_assert_eq!(translate(&lit).unwrap(), lit);
            }
        }

        #[test]
        fn prop_string_literals_round_trip(content in "\\PC{0,16}|[\"'\\\\\n]{0,8}", mode in any::<u8>()) {
            let src = python_literal(&content, mode);
            let out = translate(&src).unwrap();
            prop_assert_eq!(&out, &evalexpr_literal(&content));
            prop_assert_eq!(evalexpr_strings(&out), vec![content.clone()]);
            prop_assert_eq!(translate(&out).unwrap(), out);
        }

        #[test]
        fn prop_never_panics(src in "[ -~\u{e9}]{0,40}") {
            if let Err(e) = translate(&src) {
                prop_assert!(e.position <= src.len());
                prop_assert!(src.is_char_boundary(e.position));
            }
        }

        #[test]
        fn prop_token_soup_never_panics(parts in prop::collection::vec(prop::sample::select(vec![
            "data", "[", "]", "\"body\"", "'x'", "0", "1.5", "(", ")", "and", "or", "not",
            "is", "in", "None", "True", "==", "<", "-", "+", "*", "%", " ",
        ]), 0..30)) {
            let src = parts.join(" ");
            match translate(&src) {
                Ok(out) => prop_assert!(parens_balanced(&out)),
                Err(e) => prop_assert!(e.position <= src.len()),
            }
        }
    }
}
