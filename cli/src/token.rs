//! Tokens minted from `SWITCH_JWT_SECRET` when no token is given.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;

use crate::api::Error;

/// Lifetime of a minted token.
pub const LIFETIME_SECS: u64 = 3600;

/// An HS256 admin + publish token for author `cli`, valid for an hour.
pub fn mint(secret: &str) -> Result<String, Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = json!({
        "author": "cli",
        "scope": "admin publish",
        "iat": now,
        "exp": now + LIFETIME_SECS,
    });
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| Error::other(format!("minting a token from SWITCH_JWT_SECRET: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
    use serde_json::Value;

    #[test]
    fn minted_token_carries_the_claims() {
        let t = mint("s3cret").unwrap();
        let data = decode::<Value>(
            &t,
            &DecodingKey::from_secret(b"s3cret"),
            &Validation::new(Algorithm::HS256),
        )
        .unwrap();
        assert_eq!(data.claims["author"], "cli");
        assert_eq!(data.claims["scope"], "admin publish");
        let exp = data.claims["exp"].as_u64().unwrap();
        let iat = data.claims["iat"].as_u64().unwrap();
        assert_eq!(exp - iat, LIFETIME_SECS);
    }
}
