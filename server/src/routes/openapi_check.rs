//! Keeps `openapi.json` in step with the routes the server registers.
//!
//! The registered routes are read from the `config` functions of the route
//! modules' sources, where every route is declared as
//! `.route("/path", web::<method>().to(handler))`.

use std::collections::BTreeSet;

use serde_json::Value;

const DOCUMENT: &str = include_str!("../../openapi.json");

/// Every route module, by name, with its source.
const MODULES: [(&str, &str); 9] = [
    ("health", include_str!("health.rs")),
    ("publish", include_str!("publish.rs")),
    ("subscribers", include_str!("subscribers.rs")),
    ("filters", include_str!("filters.rs")),
    ("deliveries", include_str!("deliveries.rs")),
    ("dead_letters", include_str!("dead_letters.rs")),
    ("messages", include_str!("messages.rs")),
    ("stream", include_str!("stream.rs")),
    ("keys", include_str!("keys.rs")),
];

const MOD_RS: &str = include_str!("mod.rs");
const STARTUP_RS: &str = include_str!("../startup.rs");

const HTTP_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

type Route = (String, String);

/// The source with whole-line `//` comments blanked out.
fn without_line_comments(src: &str) -> String {
    src.lines()
        .map(|l| {
            if l.trim_start().starts_with("//") {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The body of `pub fn config(...) { ... }`, braces included.
fn config_body<'a>(module: &str, src: &'a str) -> &'a str {
    let start = src
        .find("pub fn config(")
        .unwrap_or_else(|| panic!("routes/{module}.rs has no `pub fn config(`"));
    let open = start
        + src[start..]
            .find('{')
            .unwrap_or_else(|| panic!("routes/{module}.rs: config has no body"));
    let mut depth = 0usize;
    for (i, c) in src[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &src[open..=open + i];
                }
            }
            _ => {}
        }
    }
    panic!("routes/{module}.rs: unbalanced braces in config");
}

/// The `(method, path)` pairs declared with `.route("<path>", web::<method>()...)`.
fn declared_routes(module: &str, src: &str) -> Vec<Route> {
    const MARK: &str = ".route(";
    let mut routes = Vec::new();
    let mut rest = src;
    while let Some(at) = rest.find(MARK) {
        rest = &rest[at + MARK.len()..];
        let context = || rest.chars().take(80).collect::<String>();
        let after_quote = rest.trim_start().strip_prefix('"').unwrap_or_else(|| {
            panic!(
                "routes/{module}.rs: a route path is not a string literal: {}",
                context()
            )
        });
        let end = after_quote
            .find('"')
            .unwrap_or_else(|| panic!("routes/{module}.rs: unterminated path: {}", context()));
        let path = &after_quote[..end];
        let method_src = after_quote[end + 1..]
            .trim_start()
            .strip_prefix(',')
            .map(str::trim_start)
            .and_then(|s| s.strip_prefix("web::"))
            .unwrap_or_else(|| {
                panic!("routes/{module}.rs: expected `, web::<method>()` after {path:?}")
            });
        let method: String = method_src
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert!(
            method_src[method.len()..].starts_with("()"),
            "routes/{module}.rs: expected `web::{method}()` for {path:?}"
        );
        assert!(
            HTTP_METHODS.contains(&method.as_str()),
            "routes/{module}.rs: `web::{method}()` for {path:?} is not an HTTP method guard"
        );
        routes.push((method, path.to_string()));
    }
    routes
}

fn registered_routes() -> BTreeSet<Route> {
    let mut all = BTreeSet::new();
    for (module, src) in MODULES {
        let src = without_line_comments(src);
        let routes = declared_routes(module, config_body(module, &src));
        assert!(
            !routes.is_empty(),
            "routes/{module}.rs: config declares no routes"
        );
        for route in routes {
            assert!(all.insert(route.clone()), "{route:?} is registered twice");
        }
    }
    all
}

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("openapi.json is not valid JSON")
}

fn documented_routes(doc: &Value) -> BTreeSet<Route> {
    let paths = doc["paths"]
        .as_object()
        .expect("openapi.json has no `paths` object");
    let mut all = BTreeSet::new();
    for (path, item) in paths {
        let item = item
            .as_object()
            .unwrap_or_else(|| panic!("path item {path} is not an object"));
        for method in item.keys().filter(|k| HTTP_METHODS.contains(&k.as_str())) {
            all.insert((method.clone(), path.clone()));
        }
    }
    all
}

fn describe(routes: &BTreeSet<Route>) -> String {
    routes
        .iter()
        .map(|(m, p)| format!("{} {p}", m.to_uppercase()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn every_route_module_is_checked() {
    let checked: BTreeSet<&str> = MODULES.iter().map(|(name, _)| *name).collect();

    let mod_rs = without_line_comments(MOD_RS);
    let declared: BTreeSet<&str> = mod_rs
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .filter_map(|l| l.strip_suffix(';'))
        .collect();
    assert_eq!(declared, checked, "routes/mod.rs declares route modules that the OpenAPI check does not read (or the reverse)");

    const CONFIGURE: &str = "routes::";
    let startup = without_line_comments(STARTUP_RS);
    let mut configured = BTreeSet::new();
    let mut rest = startup.as_str();
    while let Some(at) = rest.find(CONFIGURE) {
        rest = &rest[at + CONFIGURE.len()..];
        if let Some((name, tail)) = rest.split_once("::") {
            if tail.starts_with("config")
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                configured.insert(name.to_string());
            }
        }
    }
    let checked: BTreeSet<String> = checked.into_iter().map(str::to_string).collect();
    assert!(
        !configured.is_empty(),
        "startup.rs configures no route modules"
    );
    assert!(
        configured.is_subset(&checked),
        "startup.rs configures route modules the OpenAPI check does not read: {:?}",
        configured.difference(&checked).collect::<Vec<_>>()
    );
}

#[test]
fn openapi_document_lists_exactly_the_registered_routes() {
    let registered = registered_routes();
    let documented = documented_routes(&document());
    let undocumented: BTreeSet<Route> = registered.difference(&documented).cloned().collect();
    let unregistered: BTreeSet<Route> = documented.difference(&registered).cloned().collect();
    assert!(
        undocumented.is_empty() && unregistered.is_empty(),
        "openapi.json is out of step with the routes.\n  registered but not documented: [{}]\n  documented but not registered: [{}]",
        describe(&undocumented),
        describe(&unregistered)
    );
}

#[test]
fn openapi_document_is_well_formed() {
    let doc = document();
    let version = doc["openapi"].as_str().expect("`openapi` must be a string");
    assert!(
        version.starts_with("3."),
        "expected OpenAPI 3.x, found {version}"
    );
    let title = doc["info"]["title"]
        .as_str()
        .expect("`info.title` must be a string");
    assert!(!title.trim().is_empty(), "`info.title` is empty");
    assert!(
        doc["info"]["version"].is_string(),
        "`info.version` must be a string"
    );

    let mut operation_ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("`paths` must be an object") {
        assert!(path.starts_with('/'), "path {path} must start with `/`");
        for (method, operation) in item
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| HTTP_METHODS.contains(&k.as_str()))
        {
            let what = format!("{} {path}", method.to_uppercase());
            let id = operation["operationId"]
                .as_str()
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| panic!("{what} has no operationId"));
            assert!(
                operation_ids.insert(id.to_string()),
                "operationId {id} is used twice"
            );
            let responses = operation["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{what} has no responses"));
            assert!(!responses.is_empty(), "{what} has no responses");
        }
    }
}

#[test]
fn the_route_reader_understands_both_declaration_forms() {
    let src = r#"pub fn config(cfg: &mut web::ServiceConfig) {
        cfg.route("/a/{id}", web::get().to(a))
            .route( "/b",  web::post().to(b));
    }"#;
    assert_eq!(
        declared_routes("example", config_body("example", src)),
        vec![
            ("get".to_string(), "/a/{id}".to_string()),
            ("post".to_string(), "/b".to_string())
        ]
    );
}
