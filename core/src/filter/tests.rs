use super::*;
use crate::message::{HttpMethod, Message};
use serde_json::json;

fn message() -> Message {
    Message {
        id: "msg_1".into(),
        topic: "orders.created".into(),
        author: Some("shop".into()),
        body: json!({"total": 150, "price": 9.5, "user": {"id": 7, "name": "ada"}, "tags": ["a", "b"], "flag": false, "none": null}),
        headers: [
            ("X-Trace".to_string(), "abc".to_string()),
            ("Content-Type".to_string(), "application/json".to_string()),
        ]
        .into(),
        query_params: [("source".to_string(), "web".to_string())].into(),
        path_params: [("id".to_string(), "42".to_string())].into(),
        http_method: HttpMethod::Post,
        request_id: None,
        ordering_key: None,
        trace_id: None,
        published_at_ms: 0,
        extra: Default::default(),
    }
}

fn check(src: &str) -> bool {
    let outcome = CompiledFilter::compile(Some(src))
        .unwrap_or_else(|e| panic!("{src}: {e:?}"))
        .evaluate(&message(), Budget::PER_EVALUATION);
    // Ordinary filters use a small part of the budget.
    assert!(!outcome.exhausted, "{src}: {outcome:?}");
    assert!(
        outcome.spent.work < eval::WORK_LIMIT / 1000,
        "{src}: {outcome:?}"
    );
    outcome.matched
}

#[test]
fn always_matching_forms() {
    for src in [None, Some(""), Some("  "), Some("true"), Some("True")] {
        let f = CompiledFilter::compile(src).unwrap();
        assert!(f.is_always());
        assert!(f.matches(&message()));
    }
}

#[test]
fn native_expressions() {
    let table = [
        ("body.total > 100", true),
        ("body.total > 200", false),
        ("body.user.id == 7", true),
        ("body.user.name == \"ada\"", true),
        ("body.price == 9.5 && body.total >= 150", true),
        ("body.total == 150.0", true),
        ("headers.X-Trace == \"abc\"", false),
        ("headers.x_trace == \"abc\"", true),
        ("headers.content_type == \"application/json\"", true),
        ("query_params.source == \"web\"", true),
        ("path_params.id == \"42\"", true),
        ("http_method == \"POST\"", true),
        ("topic == \"orders.created\"", true),
        ("author == \"shop\"", true),
        ("!(body.total < 100)", true),
        ("body.tags.1 == \"b\"", true),
        ("body.total + 50 == 200", true),
        ("body.flag", false),
        ("body.user", true),
        ("body.none == ()", true),
        ("len(body.tags) == 2", true),
        ("contains(body.tags, \"a\")", true),
        ("starts_with(topic, \"orders.\")", true),
        (
            "lower(body.user.name) == \"ada\" && upper(body.user.name) == \"ADA\"",
            true,
        ),
    ];
    for (src, expected) in table {
        assert_eq!(check(src), expected, "{src}");
    }
}

#[test]
fn missing_variables_make_comparisons_false() {
    let table = [
        ("body.missing == 1", false),
        ("body.missing != 1", false),
        ("body.missing > 1", false),
        (
            "body.total > 100 && body.user.id == 7 || body.missing == 1",
            true,
        ),
        ("body.missing == 1 || body.total == 150", true),
        ("!(body.missing == 1)", true),
        ("body.missing + 1 == 2", false),
        ("body.user.id.deeper == 1", false),
        ("nosuchroot == 1", false),
        ("body.total == \"150\"", false),
        ("body.total != \"150\"", true),
        ("body.total > \"100\"", false),
        ("body.total / 0 == 1", false),
    ];
    for (src, expected) in table {
        assert_eq!(check(src), expected, "{src}");
    }
}

#[test]
fn legacy_expressions_are_translated() {
    let f = CompiledFilter::compile(Some(
        r#"data["body"]["total"] == 150 and data["headers"]["X-Trace"] == "abc" or data["special_key"] == "special value""#,
    ));
    // `X-Trace` is read as `headers.X_Trace`, which matches the `X-Trace` header.
    assert!(f.unwrap().matches(&message()));
    let f = CompiledFilter::compile(Some(
        r#"data["body"]["total"] == 150 and data["query_params"]["source"] == "web" or data["special_key"] == "special value""#,
    ))
    .unwrap();
    assert!(f.matches(&message()));
    assert!(!f.source().contains("data["));
    let f = CompiledFilter::compile(Some(
        r#"data["http_method"] == "POST" and data["body"]["user"] and data["body"]["user"]["id"]"#,
    ))
    .unwrap();
    assert!(f.matches(&message()));
    let f = CompiledFilter::compile(Some(
        r#"data["body"]["user"]["name"] == "a and b" or False"#,
    ))
    .unwrap();
    assert!(!f.matches(&message()));
    assert!(f.source().contains("\"a and b\""));
}

#[test]
fn the_original_examples_work_as_the_original_sdk_publishes() {
    // The original SDK sends `"http_method": "post"`; its documented filter says `"post"`.
    let f = CompiledFilter::compile(Some(
        r#"data["http_method"] == "post" and data["body"]["user"] and data["body"]["user"]["id"]"#,
    ))
    .unwrap();
    assert!(f.matches(&message()));
    let mut put = message();
    put.http_method = HttpMethod::Put;
    assert!(!f.matches(&put));
    assert!(check(r#"http_method != "get""#));
    assert!(!check(r#"http_method != "Post""#));
    // `data["special_key"]` reads a key of the legacy payload beside the request parts.
    let f = CompiledFilter::compile(Some(
        r#"data["body"]["x"] == 1 and data["headers"]["y"] == "z" or data["special_key"] == "special value""#,
    ))
    .unwrap();
    let mut m = message();
    assert!(!f.matches(&m));
    m.extra.insert("special_key".into(), json!("special value"));
    assert!(f.matches(&m));
    m.extra.insert("special_key".into(), json!("other"));
    assert!(!f.matches(&m));
    m.extra
        .insert("nested".into(), json!({"a": [1, {"b": true}]}));
    assert!(
        CompiledFilter::compile(Some(r#"data["nested"]["a"][1]["b"] == True"#))
            .unwrap()
            .matches(&m)
    );
}

#[test]
fn variables_lists_only_what_is_read() {
    let f = CompiledFilter::compile(Some("body.user.id == 7 && headers.x == \"y\"")).unwrap();
    let mut vars = f.variables();
    vars.sort();
    assert_eq!(vars, vec!["body.user.id", "headers.x"]);
}

#[test]
fn hostile_and_broken_input_is_refused_cleanly() {
    let deep = format!("{}1{}", "(".repeat(2000), ")".repeat(2000));
    let long = format!("body.x == \"{}\"", "a".repeat(100_000));
    let many_ands = vec!["body.a == 1"; 300].join(" && ");
    let cases: Vec<(String, &str)> = vec![
        (long, "limit is 4096"),
        (deep, "nest deeper"),
        ("(body.x == 1".into(), "not closed"),
        ("body.x == 1)".into(), "without a matching"),
        ("body.x == \"abc".into(), "string literal is not closed"),
        ("body.x = 1".into(), "cannot assign"),
        ("body.x == 1; body.y == 2".into(), "`;` is not allowed"),
        ("system(\"rm\")".into(), "unknown function"),
        ("body.x == == 1".into(), ""),
        ("body.x 1".into(), ""),
        ("body.total >".into(), ""),
        ("&&".into(), ""),
        ("body.total >> 1".into(), ""),
        ("!".into(), ""),
    ];
    for (src, reason) in &cases {
        let e = CompiledFilter::compile(Some(src)).expect_err(reason);
        assert!(
            e.message.contains(reason),
            "{}: {}",
            &src[..src.len().min(40)],
            e.message
        );
    }
    // A long but legal chain stays under the limit? No: it is over 4096 bytes, so refused.
    assert!(many_ands.len() > MAX_FILTER_BYTES);
    assert!(CompiledFilter::compile(Some(&many_ands)).is_err());
    let legal_chain = vec!["body.a == 1"; 100].join(" && ");
    let compiled = CompiledFilter::compile(Some(&legal_chain));
    assert!(!compiled
        .unwrap_or_else(|e| panic!("{e:?}"))
        .matches(&message()));
}

#[test]
fn errors_carry_positions() {
    let e = CompiledFilter::compile(Some("body.x == 1 && (body.y == 2")).unwrap_err();
    assert_eq!(e.position, Some(15));
    let e = CompiledFilter::compile(Some("body.x == 1 body.y")).unwrap_err();
    assert_eq!(e.position, Some(12), "{e:?}");
    // Errors evalexpr only shows in the tree get a position too.
    for (src, at) in [
        ("body.total >", 11),
        ("body.x = 1", 7),
        ("body.x == 1; body.y", 11),
        ("body.x == 1 && nope(body.y)", 15),
    ] {
        let e = CompiledFilter::compile(Some(src)).unwrap_err();
        assert_eq!(e.position, Some(at), "{src}: {e:?}");
    }
}

fn with_body(body: serde_json::Value) -> Message {
    let mut m = message();
    m.body = body;
    m
}

fn compiled(src: &str) -> CompiledFilter {
    CompiledFilter::compile(Some(src)).unwrap_or_else(|e| panic!("{src}: {e:?}"))
}

#[test]
fn a_quadratic_concatenation_runs_out_of_budget() {
    // 580 concatenations of a 100 KB string would copy about 17 GB.
    let src = format!("body.s{}", "+body.s".repeat(580));
    assert!(src.len() <= MAX_FILTER_BYTES);
    let m = with_body(json!({ "s": "x".repeat(100_000) }));
    let outcome = compiled(&src).evaluate(&m, Budget::PER_EVALUATION);
    assert!(outcome.exhausted, "{outcome:?}");
    assert!(!outcome.matched);
    assert!(outcome.spent.built <= eval::BUILT_LIMIT, "{outcome:?}");
    assert!(outcome.spent.work <= eval::WORK_LIMIT, "{outcome:?}");
    // Nothing turns a spent budget into a match, not even a negation.
    let inner = format!("body.s{}", "+body.s".repeat(570));
    for wrapped in [
        format!("!({inner} == \"x\")"),
        format!("({inner} == \"x\") || false"),
        format!("len({inner}) > 0"),
        format!("body.missing == 1 || !contains({inner}, \"y\")"),
    ] {
        let f = compiled(&wrapped);
        let outcome = f.evaluate(&m, Budget::PER_EVALUATION);
        assert!(outcome.exhausted && !outcome.matched, "{outcome:?}");
        assert!(!f.matches(&m));
    }
    // The same filter against a short string is an ordinary filter.
    let short = with_body(json!({ "s": "ab" }));
    let f = compiled(&format!("len({src}) == 1162"));
    let outcome = f.evaluate(&short, Budget::PER_EVALUATION);
    assert!(outcome.matched && !outcome.exhausted, "{outcome:?}");
}

#[test]
fn every_kind_of_work_is_charged() {
    let big = "x".repeat(10_000);
    let mut other = big.clone();
    other.pop();
    other.push('y');
    let m = with_body(json!({
        "s": big,
        "t": other,
        "wide": "\u{3a3}".repeat(1_000),
        "a": vec![0; 1_000],
        "b": vec![0; 1_000],
    }));
    let small = Budget {
        work: 5_000,
        built: 1 << 20,
    };
    for src in [
        "body.s == body.t",
        "body.s < body.t",
        "len(body.s) > 0",
        "starts_with(body.s, body.t)",
        "contains(body.s, \"y\")",
        "body.s + \"\" != \"\"",
        "lower(body.s) != \"\"",
        "lower(body.wide) != \"\"",
        "body.a == body.b",
        "contains(body.a, 1)",
    ] {
        let f = compiled(src);
        let cheap = f.evaluate(&m, small);
        assert!(cheap.exhausted && !cheap.matched, "{src}: {cheap:?}");
        let full = f.evaluate(&m, Budget::PER_EVALUATION);
        assert!(!full.exhausted, "{src}: {full:?}");
        assert!(full.spent.work > small.work, "{src}: {full:?}");
    }
    // Building is limited on its own, to bound memory.
    let f = compiled("lower(body.s) != \"\"");
    let tight = Budget {
        work: eval::WORK_LIMIT,
        built: 9_999,
    };
    assert!(f.evaluate(&m, tight).exhausted);
    let fits = Budget {
        built: 10_000,
        ..tight
    };
    assert!(f.evaluate(&m, fits).matched);
}

#[test]
fn the_budget_fits_ordinary_work_on_the_largest_messages() {
    // A message may be 1 MiB: reading, searching or lower-casing its longest
    // string once, or scanning a long array, must still work.
    let text = format!("{}needle", "hay ".repeat(250_000));
    let m = with_body(json!({ "text": text, "ids": (0..100_000).collect::<Vec<_>>() }));
    for src in [
        "contains(body.text, \"needle\")",
        "contains(lower(body.text), \"needle\") && ends_with(body.text, \"needle\")",
        "upper(body.text) != body.text",
        "len(body.text) == 1000006",
        "contains(body.ids, 99999)",
        "body.text + body.text != body.text",
    ] {
        let outcome = compiled(src).evaluate(&m, Budget::PER_EVALUATION);
        assert!(outcome.matched && !outcome.exhausted, "{src}: {outcome:?}");
    }
}

#[test]
fn a_nul_is_refused() {
    for (src, at) in [
        ("body.x == \"a\u{0}b\"", 12),
        ("\u{0}", 0),
        ("true\u{0}", 4),
        ("data[\"x\"] == \"a\u{0}\"", 15),
    ] {
        let e = CompiledFilter::compile(Some(src)).expect_err(src);
        assert!(e.message.contains("NUL"), "{src:?}: {e:?}");
        assert_eq!(e.position, Some(at), "{src:?}");
    }
    // Nor can a legacy escape smuggle one into the stored translation.
    for src in [
        r#"data["x"] == "\0""#,
        r#"data["x"] == "\x00""#,
        r#"data["x"] == '\u0000'"#,
    ] {
        let e = CompiledFilter::compile(Some(src)).expect_err(src);
        assert!(e.message.contains("NUL"), "{src:?}: {e:?}");
        assert_eq!(e.position, Some(14), "{src:?}");
    }
}

#[test]
fn deep_trees_are_refused_or_evaluated_without_deep_recursion() {
    let fill = |part: &str, sep: &str| {
        let mut out = part.to_string();
        while out.len() + sep.len() + part.len() <= MAX_FILTER_BYTES {
            out.push_str(sep);
            out.push_str(part);
        }
        out
    };
    // Chains of binary operators fill 4 KiB two thousand levels deep; they
    // are evaluated in a loop.
    for (src, expected) in [
        (fill("1", "-"), true),
        (fill("1", "=="), false),
        (fill("body.total", "&&"), true),
        (fill("body.missing", "||"), false),
        (fill("2", "^"), true),
        (fill("\"a\"", "+"), true),
    ] {
        let outcome = compiled(&src).evaluate(&message(), Budget::PER_EVALUATION);
        assert_eq!(outcome.matched, expected, "{}", &src[..20]);
        assert!(!outcome.exhausted, "{}", &src[..20]);
    }
    // Prefixes recurse in evalexpr's parser as well: they are limited.
    let most = format!("{}true", "!".repeat(MAX_PREFIXES));
    assert!(check(&most));
    for src in [
        format!("{}true", "!".repeat(MAX_PREFIXES + 1)),
        format!("{}true", "!".repeat(MAX_FILTER_BYTES - 4)),
        format!("{}1", "-".repeat(MAX_FILTER_BYTES - 1)),
        format!("{}\"x\"", "len ".repeat(MAX_PREFIXES + 1)),
        format!(
            "{}true{}",
            "!(".repeat(MAX_PREFIXES + 1),
            ")".repeat(MAX_PREFIXES + 1)
        ),
        format!("1 - {}1", "- ".repeat(MAX_PREFIXES + 1)),
    ] {
        let e = CompiledFilter::compile(Some(&src)).expect_err(&src[..10]);
        assert!(e.message.contains("apply to one operand"), "{e:?}");
    }
    // Prefixes of separate operands do not add up.
    let separate = vec!["!!!!!!!!!body.missing"; 100].join(" && ");
    assert!(separate.len() <= MAX_FILTER_BYTES);
    assert!(check(&separate));
    assert!(check(
        "-1 < 0 && 1 - -1 == 2 && body.total - 50 == 100 && 2 ^ -1 == 0.5"
    ));
}

#[test]
fn legacy_translations_must_fit_the_limit() {
    // Chained comparisons repeat operands; nested, the copies multiply.
    let nested = format!("{}data[\"x\"]{}", "1 < (".repeat(60), ") < 1".repeat(60));
    let e = CompiledFilter::compile(Some(&nested)).unwrap_err();
    assert!(e.message.contains("more than 4096 bytes"), "{e:?}");
    let f = compiled(r#"1 < (2 < data["body"]["total"] < 3) < 4"#);
    assert!(f.source().len() <= MAX_FILTER_BYTES);
    // The deepest legacy nesting still compiles once translated.
    let nots = compiled(&format!("{}data[\"body\"][\"total\"]", "not ".repeat(64)));
    assert!(nots.matches(&message()));
    let negations = compiled(&format!("{}data[\"body\"][\"total\"] > 0", "-".repeat(64)));
    assert!(negations.matches(&message()));
}

#[test]
fn a_late_syntax_error_is_located_without_parsing_every_prefix() {
    // Every prefix ending at a space parses; only the last `1` is wrong.
    let mut src = "1".to_string();
    while src.len() + 5 <= MAX_FILTER_BYTES {
        src.push_str(" +1");
    }
    src.push_str(" 1");
    let e = CompiledFilter::compile(Some(&src)).unwrap_err();
    assert_eq!(e.position, Some(src.len() - 1), "{e:?}");
}
