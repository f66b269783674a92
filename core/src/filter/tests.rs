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
        published_at_ms: 0,
        extra: Default::default(),
    }
}

fn check(src: &str) -> bool {
    CompiledFilter::compile(Some(src))
        .unwrap_or_else(|e| panic!("{src}: {e:?}"))
        .matches(&message())
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
