//! The document against the routes the server registers, and its form.
use std::collections::BTreeSet;

use actix_web::http::header::ALLOW;
use actix_web::http::Method;
use actix_web::{test as app_test, web, App, HttpRequest, HttpResponse};
use serde_json::Value;

use super::*;

/// The path patterns of every resource in `rmap`, read from its debug
/// form (`patterns: Single("/path")`): actix has no public way to list them.
fn patterns(rmap: &str) -> BTreeSet<String> {
    const MARK: &str = "patterns: Single(\"";
    let mut found = BTreeSet::new();
    let mut rest = rmap;
    while let Some(at) = rest.find(MARK) {
        rest = &rest[at + MARK.len()..];
        let end = rest.find('"').expect("a pattern ends with a quote");
        found.insert(rest[..end].to_string());
    }
    assert!(
        !rmap.contains("List(["),
        "a resource with several patterns; read them too"
    );
    found
}

fn concrete(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|s| if s.starts_with('{') { "1" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

const MAP: &str = "/__resource_map";
/// What the test app answers when no route takes a request.
const UNROUTED: u16 = 599;

/// The API's app as the server builds it, without state (handlers fail,
/// but only after routing, which is all these tests look at), with
/// `$default` for requests no route takes.
macro_rules! api_app {
    ($default:expr) => {
        app_test::init_service(
            App::new()
                .configure(crate::routes::configure)
                .route(
                    MAP,
                    web::get().to(|req: HttpRequest| async move {
                        HttpResponse::Ok().body(format!("{:?}", req.resource_map()))
                    }),
                )
                .default_service(web::to($default)),
        )
        .await
    };
}

async fn unrouted() -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(UNROUTED).unwrap()).finish()
}

/// The registered pattern that took `path` with these path parameters.
fn taken_by<'a>(
    registered: &'a BTreeSet<String>,
    path: &str,
    params: &BTreeSet<String>,
) -> &'a str {
    let wanted: Vec<&str> = path.split('/').collect();
    registered
        .iter()
        .find(|p| {
            let segments: Vec<&str> = p.split('/').collect();
            let names: BTreeSet<String> = segments
                .iter()
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .map(str::to_string)
                .collect();
            segments.len() == wanted.len()
                && &names == params
                && segments
                    .iter()
                    .zip(&wanted)
                    .all(|(s, w)| s.starts_with('{') || s == w)
        })
        .unwrap_or_else(|| panic!("no pattern takes {path} with {params:?}"))
}

/// Asks the app, for every path pattern it registers and every method,
/// which route (if any) takes the request, and holds that to the document.
#[actix_web::test]
async fn the_document_describes_every_route_the_server_serves() {
    let app = api_app!(unrouted);
    let map =
        app_test::call_and_read_body(&app, app_test::TestRequest::get().uri(MAP).to_request())
            .await;
    let registered: BTreeSet<String> = patterns(std::str::from_utf8(&map).unwrap())
        .into_iter()
        .filter(|p| p != MAP && !p.is_empty())
        .collect();
    assert!(registered.len() > 10, "{registered:?}");

    let documented: BTreeSet<(String, String)> = operations()
        .into_iter()
        .flat_map(|(path, methods)| {
            methods
                .into_iter()
                .map(move |m| (m.to_string(), path.clone()))
        })
        .collect();
    let mut served = BTreeSet::new();
    for pattern in &registered {
        let path = concrete(pattern);
        for method in METHODS {
            let req = app_test::TestRequest::default()
                .method(Method::from_bytes(method.as_bytes()).unwrap())
                .uri(&path)
                .to_request();
            let res = app_test::call_service(&app, req).await;
            if res.status().as_u16() == UNROUTED || res.status() == 405 {
                continue;
            }
            let params: BTreeSet<String> = res
                .request()
                .match_info()
                .iter()
                .map(|(k, _)| k.to_string())
                .collect();
            served.insert((
                method.to_string(),
                taken_by(&registered, &path, &params).to_string(),
            ));
        }
    }
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "the OpenAPI document and the routes differ.\n  served, not documented: {undocumented:?}\n  documented, not served: {unserved:?}"
    );
}

/// Another method on a path of the API is `405` with the `Allow` the
/// document gives; a path that is not the API's is `404`.
#[actix_web::test]
async fn another_method_on_a_known_path_is_405_with_allow() {
    let app = api_app!(crate::routes::unrouted);
    for (path, methods) in operations() {
        for method in METHODS.iter().filter(|m| !methods.contains(m)) {
            let req = app_test::TestRequest::default()
                .method(Method::from_bytes(method.as_bytes()).unwrap())
                .uri(&concrete(&path))
                .to_request();
            let res = app_test::call_service(&app, req).await;
            assert_eq!(res.status(), 405, "{method} {path}");
            assert_eq!(
                res.headers().get(ALLOW).and_then(|v| v.to_str().ok()),
                Some(methods.join(", ").as_str()),
                "{method} {path}"
            );
        }
    }
    let res =
        app_test::call_service(&app, app_test::TestRequest::get().uri("/nope").to_request()).await;
    assert_eq!(res.status(), 404);
}

#[test]
fn a_concrete_path_wins_over_a_template() {
    let table = RouteTable::get();
    assert_eq!(table.allowed("/messages/replay"), vec!["POST"]);
    assert_eq!(table.allowed("/messages/msg_1"), vec!["GET"]);
    assert_eq!(
        table.allowed("/subscribers/7"),
        vec!["GET", "PATCH", "DELETE"]
    );
    assert_eq!(table.allowed("/refresh"), vec!["GET", "POST"]);
    assert!(table.allowed("/subscribers/7/nope").is_empty());
    assert!(table.allowed("/subscribers/").is_empty());
}

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// Resolves a local `$ref` (`#/components/schemas/Name`).
fn resolve<'a>(doc: &'a Value, r: &str) -> Option<&'a Value> {
    r.strip_prefix("#/")?
        .split('/')
        .try_fold(doc, |node, key| node.get(key))
}

#[test]
fn the_document_is_well_formed_openapi_3_1() {
    let doc: Value = serde_json::from_str(json()).expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "Switch");
    assert!(doc["info"]["version"].is_string());
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in &all {
        assert!(resolve(&doc, r).is_some(), "{r} does not resolve");
    }

    let tags: BTreeSet<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    let public = ["/ping", "/health", "/metrics", "/openapi.json", "/docs"];
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let what = format!("{method} {path}");
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: no operationId"));
            assert!(ids.insert(id.to_string()), "{what}: operationId {id} twice");
            assert!(op["summary"].is_string(), "{what}: no summary");
            let op_tags = op["tags"]
                .as_array()
                .unwrap_or_else(|| panic!("{what}: no tags"));
            assert!(
                op_tags.iter().all(|t| tags.contains(t.as_str().unwrap())),
                "{what}: a tag not declared"
            );
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2') || s == "101"),
                "{what}: no success"
            );
            match op.get("security") {
                None => assert!(public.contains(&path.as_str()), "{what}: no security"),
                Some(Value::Array(reqs)) => {
                    assert!(!public.contains(&path.as_str()), "{what} is public");
                    assert!(responses.contains_key("401"), "{what}: no 401");
                    for req in reqs {
                        for name in req.as_object().unwrap().keys() {
                            assert!(schemes.contains_key(name), "{what}: no scheme {name}");
                        }
                    }
                }
                Some(other) => panic!("{what}: security is {other}"),
            }
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["in"] == "path" {
                    assert_eq!(p["required"], true, "{what}");
                    assert!(path.contains(&format!("{{{}}}", p["name"].as_str().unwrap())));
                }
            }
        }
    }
}

/// Error answers are the envelope the document describes.
#[test]
fn the_error_schema_lists_every_code() {
    let doc: Value = serde_json::from_str(json()).unwrap();
    let detail = resolve(&doc, "#/components/schemas/ErrorDetail").unwrap();
    let codes = resolve(&doc, detail["properties"]["code"]["$ref"].as_str().unwrap()).unwrap();
    let codes: BTreeSet<&str> = codes["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for code in [
        "unauthorized",
        "forbidden",
        "invalid_request",
        "target_not_allowed",
        "payload_too_large",
        "not_found",
        "conflict",
        "unavailable",
        "internal",
    ] {
        assert!(codes.contains(code), "{code}");
    }
}
