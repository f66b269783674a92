//! Standard Webhooks signatures and subscriber secrets (`whsec_<base64>`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

pub const SECRET_PREFIX: &str = "whsec_";

/// A new secret: `whsec_` and the base64 of 24 random bytes.
pub fn generate_secret() -> String {
    let mut key = [0u8; 24];
    rand::rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The key bytes of a secret; a secret without the prefix or not base64 is used as raw bytes.
pub fn secret_key(secret: &str) -> Vec<u8> {
    match secret.strip_prefix(SECRET_PREFIX) {
        Some(b64) => STANDARD
            .decode(b64)
            .unwrap_or_else(|_| b64.as_bytes().to_vec()),
        None => secret.as_bytes().to_vec(),
    }
}

/// True when `secret` is a well-formed `whsec_` secret.
pub fn is_valid_secret(secret: &str) -> bool {
    secret
        .strip_prefix(SECRET_PREFIX)
        .and_then(|b| STANDARD.decode(b).ok())
        .is_some_and(|k| (24..=64).contains(&k.len()))
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&secret_key(secret)).expect("HMAC takes keys of any length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector published with the Standard Webhooks specification.
    #[test]
    fn standard_webhooks_vector() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let sig = sign(
            secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn generated_secrets_are_valid() {
        let s = generate_secret();
        assert!(s.starts_with("whsec_"));
        assert!(is_valid_secret(&s));
        assert_eq!(secret_key(&s).len(), 24);
        assert_ne!(s, generate_secret());
        assert!(!is_valid_secret("whsec_!!"));
        assert!(!is_valid_secret("plain"));
    }
}
