//! Positions for errors found in a compiled tree: evalexpr's nodes keep no
//! source offsets, so the cause is looked for in the text.

/// What made the tree unacceptable.
pub enum Cause {
    Assignment,
    Chain,
    Function(String),
    MissingOperand,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    /// A value: identifier, number, string, `true`.
    Operand,
    /// A binary operator (`-` and `!` may also be prefixes).
    Op {
        prefix: bool,
    },
    Open,
    Close,
    Comma,
    Other,
}

/// Tokens outside string literals, with their byte offsets.
fn tokens(src: &str) -> Vec<(usize, &str, Tok)> {
    const OPS: [&str; 19] = [
        "==", "!=", "<=", ">=", "&&", "||", "+=", "-=", "*=", "/=", "%=", "^=", "<", ">", "+", "-",
        "*", "/", "%",
    ];
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'"' {
            let start = i;
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(bytes.len());
            out.push((start, &src[start..i], Tok::Operand));
            continue;
        }
        let rest = &src[i..];
        if let Some(op) = OPS.iter().find(|op| rest.starts_with(**op)) {
            out.push((i, *op, Tok::Op { prefix: *op == "-" }));
            i += op.len();
            continue;
        }
        let single = match c {
            b'!' => Some(Tok::Op { prefix: true }),
            b'^' => Some(Tok::Op { prefix: false }),
            b'(' => Some(Tok::Open),
            b')' => Some(Tok::Close),
            b',' => Some(Tok::Comma),
            b'=' | b';' => Some(Tok::Other),
            _ => None,
        };
        if let Some(t) = single {
            out.push((i, &src[i..i + 1], t));
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() {
            let b = bytes[i];
            if b.is_ascii_whitespace() || b"\"!^(),=;<>+-*/%&|".contains(&b) {
                break;
            }
            i += 1;
        }
        if i == start {
            // A lone `&` or `|`: not an operator evalexpr knows.
            i += 1;
        }
        out.push((start, &src[start..i], Tok::Operand));
    }
    out
}

/// The byte offset of `cause` in `src`, if it can be found.
pub fn tree_error(src: &str, cause: &Cause) -> Option<usize> {
    let toks = tokens(src);
    match cause {
        Cause::Assignment => toks
            .iter()
            .find(|(_, t, _)| {
                *t == "="
                    || (t.len() == 2 && t.ends_with('=') && !["==", "!=", "<=", ">="].contains(t))
            })
            .map(|(p, _, _)| *p),
        Cause::Chain => toks.iter().find(|(_, t, _)| *t == ";").map(|(p, _, _)| *p),
        Cause::Function(name) => toks
            .iter()
            .find(|(_, t, k)| *k == Tok::Operand && t == name)
            .map(|(p, _, _)| *p),
        Cause::MissingOperand => {
            for (i, (pos, _, kind)) in toks.iter().enumerate() {
                let Tok::Op { prefix } = *kind else { continue };
                let before = i.checked_sub(1).map(|j| toks[j].2);
                let after = toks.get(i + 1).map(|t| t.2);
                let has_left = matches!(before, Some(Tok::Operand | Tok::Close));
                let has_right = matches!(
                    after,
                    Some(Tok::Operand | Tok::Open | Tok::Op { prefix: true })
                );
                if !has_right || (!has_left && !prefix) {
                    return Some(*pos);
                }
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_cause() {
        let at = |src: &str, c: Cause| tree_error(src, &c);
        assert_eq!(at("body.total >", Cause::MissingOperand), Some(11));
        assert_eq!(at("body.a == 1 && ", Cause::MissingOperand), Some(12));
        assert_eq!(at("== 1", Cause::MissingOperand), Some(0));
        assert_eq!(at("body.a == -1 && !body.b", Cause::MissingOperand), None);
        assert_eq!(at("!", Cause::MissingOperand), Some(0));
        assert_eq!(at("body.x = 1", Cause::Assignment), Some(7));
        assert_eq!(at("body.x == \"=\" || y += 1", Cause::Assignment), Some(19));
        assert_eq!(at("a == 1; b", Cause::Chain), Some(6));
        assert_eq!(
            at("len(body.x) > 1 && nope(2)", Cause::Function("nope".into())),
            Some(19)
        );
    }
}
