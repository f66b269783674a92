//! Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256
//! over "{webhook-id}.{webhook-timestamp}.{body}">`, keyed by the
//! base64-decoded part of a `whsec_` secret.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far a delivery's timestamp may be from now, as the Standard Webhooks
/// libraries allow.
pub const TOLERANCE_SECS: i64 = 300;

/// The signing key of a `whsec_…` secret.
pub fn decode_secret(secret: &str) -> Option<Vec<u8>> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    STANDARD.decode(b64).ok().filter(|k| !k.is_empty())
}

fn mac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `v1,<base64>` signature of one delivery.
#[cfg(test)]
pub fn sign(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let tag = mac(key, id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", STANDARD.encode(tag))
}

/// Whether one of the space-separated signatures of `header` is a valid
/// `v1` signature of the delivery and its timestamp is within the tolerance
/// of `now` (Unix seconds).
pub fn verify(key: &[u8], id: &str, timestamp: &str, body: &[u8], header: &str, now: i64) -> bool {
    let Ok(ts) = timestamp.trim().parse::<i64>() else {
        return false;
    };
    if (now - ts).abs() > TOLERANCE_SECS {
        return false;
    }
    let expected = mac(key, id, timestamp, body);
    header.split_whitespace().any(|part| {
        let Some(("v1", sig)) = part.split_once(',') else {
            return false;
        };
        STANDARD
            .decode(sig)
            .is_ok_and(|bytes| expected.clone().verify_slice(&bytes).is_ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the Standard Webhooks specification.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: &str = "1614265330";
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn matches_the_specification_example() {
        let key = decode_secret(SECRET).unwrap();
        assert_eq!(sign(&key, ID, TS, BODY), SIGNATURE);
        assert!(verify(&key, ID, TS, BODY, SIGNATURE, 1614265330));
    }

    #[test]
    fn any_of_several_signatures_counts() {
        let key = decode_secret(SECRET).unwrap();
        let header = format!("v1,AAAA v2,xyz {SIGNATURE}");
        assert!(verify(&key, ID, TS, BODY, &header, 1614265330));
    }

    #[test]
    fn refuses_tampering_and_stale_timestamps() {
        let key = decode_secret(SECRET).unwrap();
        let now = 1614265330;
        assert!(!verify(&key, ID, TS, br#"{"test": 1}"#, SIGNATURE, now));
        assert!(!verify(&key, "msg_other", TS, BODY, SIGNATURE, now));
        assert!(!verify(&key, ID, TS, BODY, "v1,not-base64!", now));
        assert!(!verify(&key, ID, TS, BODY, "", now));
        assert!(!verify(
            &key,
            ID,
            TS,
            BODY,
            SIGNATURE,
            now + TOLERANCE_SECS + 1
        ));
        assert!(!verify(&key, ID, "soon", BODY, SIGNATURE, now));
        let other = decode_secret("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        assert!(!verify(&other, ID, TS, BODY, SIGNATURE, now));
    }

    #[test]
    fn secrets_must_be_base64() {
        assert!(decode_secret("whsec_!!!").is_none());
        assert!(decode_secret("whsec_").is_none());
    }
}
