//! A browser without JavaScript for the dashboard tests: one session cookie,
//! redirects not followed, forms posted by hand; and readers of its pages.

use crate::helpers::*;

/// An answer as a browser sees it (redirects not followed).
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    pub content_type: String,
    pub csp: Option<String>,
    pub body: String,
}

/// A browser without JavaScript: one session cookie, forms posted by hand.
pub struct Browser {
    pub base: String,
    pub http: reqwest::Client,
    pub cookie: Option<String>,
}

impl Browser {
    pub fn new(app: &TestApp) -> Browser {
        Browser {
            base: app.base.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    /// The same session, through another server.
    pub fn via(&self, app: &TestApp) -> Browser {
        Browser {
            cookie: self.cookie.clone(),
            ..Browser::new(app)
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let req = match &self.cookie {
            Some(c) => req.header("Cookie", format!("switch_session={c}")),
            None => req,
        };
        let resp = req.send().await.expect("request sent");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        Answer {
            status: resp.status().as_u16(),
            location: header("location"),
            content_type: header("content-type").unwrap_or_default(),
            csp: header("content-security-policy"),
            set_cookies: resp
                .headers()
                .get_all("set-cookie")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect(),
            body: resp.text().await.unwrap_or_default(),
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body),
        )
        .await
    }

    /// Signs in; keeps the session cookie when one is set.
    pub async fn sign_in(&mut self, token: &str) -> Answer {
        let a = self.post("/ui/login", &[("token", token)]).await;
        if let Some(v) = session_cookie(&a) {
            self.cookie = Some(v);
        }
        a
    }

    /// The CSRF token of the session, as its pages carry it.
    pub async fn csrf(&self) -> String {
        let page = self.get("/ui/subscribers/new").await;
        assert_eq!(page.status, 200, "{}", page.body);
        csrf_of(&page.body)
    }
}

pub fn session_cookie(a: &Answer) -> Option<String> {
    a.set_cookies.iter().find_map(|c| {
        c.strip_prefix("switch_session=")
            .map(|rest| rest.split(';').next().unwrap_or("").to_string())
            .filter(|v| !v.is_empty())
    })
}

pub fn csrf_of(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .expect("a form with a CSRF token");
    let rest = &html[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// The numbers `N` of every `href="{prefix}N"` in the table with this id.
pub fn linked_ids(html: &str, table: &str, prefix: &str) -> Vec<String> {
    let start = html
        .find(&format!(r#"<table id="{table}""#))
        .unwrap_or_else(|| panic!("no table {table}"));
    let end = start + html[start..].find("</table>").unwrap();
    let mut out = Vec::new();
    let mut rest = &html[start..end];
    let mark = format!(r#"href="{prefix}"#);
    while let Some(at) = rest.find(&mark) {
        rest = &rest[at + mark.len()..];
        let id = &rest[..rest.find('"').unwrap()];
        if out.last().map(String::as_str) != Some(id) {
            out.push(id.to_string());
        }
    }
    out
}

/// The `href` of the pager link `rel` (`prev` or `next`), unescaped.
pub fn pager_link(html: &str, rel: &str) -> Option<String> {
    let at = html.find(&format!(r#"rel="{rel}""#))?;
    let start = html[..at].rfind("href=\"")? + 6;
    let end = start + html[start..].find('"')?;
    Some(html[start..end].replace("&amp;", "&"))
}

/// Inserts `n` subscribers in one statement, as an operator seeding by SQL would.
pub fn bulk_subscribers(db: &TestDb, backend: Backend, n: usize, prefix: &str) {
    let columns = "INSERT INTO subscribers (topic, target_url, secret, description)";
    let values = format!(
        "SELECT '{prefix}.' || i, 'http://127.0.0.1:9/hook/' || i, \
         'whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3', 'bulk subscriber ' || i"
    );
    db.sql(&match backend {
        Backend::Sqlite => format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
             {columns} {values} FROM n"
        ),
        Backend::Postgres => format!("{columns} {values} FROM generate_series(1, {n}) AS i"),
    });
}
