//! Posted forms and query strings, read the same way: `application/x-www-form-urlencoded` pairs.

use super::error::UiError;
use crate::error::ApiError;

/// The fields of a form (or of a query string), in order.
#[derive(Debug, Default, Clone)]
pub struct Form(Vec<(String, String)>);

impl Form {
    /// Reads a posted body. No field may hold NUL, which PostgreSQL cannot store.
    pub fn parse(body: &[u8]) -> Result<Form, UiError> {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if pairs
            .iter()
            .any(|(k, v)| k.contains('\0') || v.contains('\0'))
        {
            return Err(UiError::Api(ApiError::invalid(
                "text fields cannot contain the NUL character",
            )));
        }
        Ok(Form(pairs))
    }

    /// Reads a query string; a NUL makes the field absent.
    pub fn query(query: &str) -> Form {
        Form(
            url::form_urlencoded::parse(query.as_bytes())
                .filter(|(k, v)| !k.contains('\0') && !v.contains('\0'))
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `key`, as sent.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key` trimmed, or `None` when absent or blank.
    pub fn text(&self, key: &str) -> Option<String> {
        self.get(key)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }

    /// The value of `key` as an integer; `None` when absent or blank.
    pub fn int(&self, key: &str) -> Result<Option<i64>, UiError> {
        match self.text(key) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                UiError::Api(ApiError::invalid(format!("`{key}` must be a whole number")))
            }),
        }
    }
}

/// A query string built from the pairs whose value is set.
pub fn query_string(pairs: &[(&str, Option<String>)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    q.finish()
}

/// `path`, with the query string of `pairs` when any is set.
pub fn link(path: &str, pairs: &[(&str, Option<String>)]) -> String {
    let q = query_string(pairs);
    if q.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{q}")
    }
}
