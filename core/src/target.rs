//! The target policy: which webhook URLs the hub may deliver to.
//!
//! A subscriber's target URL is chosen by whoever holds an API key, and the hub
//! then makes requests to it from inside the operator's network. Without a guard
//! that is a server-side request forgery: a target of
//! `http://169.254.169.254/latest/meta-data/` would have the worker fetch cloud
//! credentials and store the answer in attempt records readable through the API.
//!
//! The policy is checked twice. At subscriber create/patch ([`TargetPolicy::check_url`])
//! the scheme, credentials and any literal IP are judged, so obvious mistakes are
//! answered at once. Hostnames are not resolved there: what a name resolves to at
//! create time says nothing about what it resolves to at delivery, so the worker
//! judges the resolved addresses again and connects to exactly those.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use url::{Host, Url};

use crate::config::Settings;

/// Inputs longer than this are cut in error messages, so a huge body is not echoed back.
const MAX_ECHO: usize = 256;

/// Allow and deny lists of networks for delivery targets.
#[derive(Clone, Debug, Default)]
pub struct TargetPolicy {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

/// Why a target URL was refused.
///
/// The variant is the stable part (it picks the API error code); the message is
/// for humans and names the URL (without credentials) and the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not an absolute URL at all: `400 invalid_request`.
    #[error("target URL `{url}` is invalid: {reason}")]
    Invalid { url: String, reason: String },
    /// A well-formed URL the hub will not deliver to (scheme, credentials,
    /// denied address): `400 target_not_allowed`.
    #[error("target URL `{url}` is not allowed: {reason}")]
    NotAllowed { url: String, reason: String },
}

impl TargetError {
    /// The API error code this refusal is answered with.
    pub fn code(&self) -> &'static str {
        match self {
            TargetError::Invalid { .. } => "invalid_request",
            TargetError::NotAllowed { .. } => "target_not_allowed",
        }
    }

    /// The reason alone, without the URL.
    pub fn reason(&self) -> &str {
        match self {
            TargetError::Invalid { reason, .. } | TargetError::NotAllowed { reason, .. } => reason,
        }
    }
}

impl TargetPolicy {
    /// A policy from explicit lists; `allow` is checked before `deny`.
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>) -> Self {
        TargetPolicy { allow, deny }
    }

    /// The policy configured by `SWITCH_TARGET_ALLOW` and `SWITCH_TARGET_DENY`.
    pub fn from_settings(settings: &Settings) -> Self {
        TargetPolicy::new(settings.target_allow.clone(), settings.target_deny.clone())
    }

    /// Whether the hub may connect to `ip`: a match in the allow list allows, then a
    /// match in the deny list refuses, anything else is allowed.
    ///
    /// An IPv6 address that carries an IPv4 address (`::ffff:169.254.169.254`, or the
    /// deprecated compatible form `::169.254.169.254`) reaches that IPv4 host, so it
    /// is judged by its IPv4 form as well as its own: otherwise writing the metadata
    /// address in IPv6 notation would walk past an IPv4 deny entry.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let embedded = embedded_v4(ip).map(IpAddr::V4);
        let matches = |nets: &[IpNet]| {
            nets.iter()
                .any(|n| n.contains(&ip) || embedded.is_some_and(|v4| n.contains(&v4)))
        };
        if matches(&self.allow) {
            return true;
        }
        !matches(&self.deny)
    }

    /// Validates a subscriber's target URL and returns it parsed.
    ///
    /// Refused: anything that is not an absolute URL ([`TargetError::Invalid`]);
    /// schemes other than `http`/`https`, credentials in the URL (they would be
    /// copied into logs, attempt records and dead letters), and literal IP hosts the
    /// policy denies ([`TargetError::NotAllowed`]). The URL parser normalizes the
    /// many spellings of an IPv4 address (`0x7f000001`, `2130706433`, `127.1`), so
    /// they are judged as the address they mean. Host names are accepted here and
    /// judged at delivery, after resolution. `:name` path placeholders are ordinary
    /// path text to the parser and pass.
    pub fn check_url(&self, src: &str) -> Result<Url, TargetError> {
        let url = Url::parse(src).map_err(|e| TargetError::Invalid {
            url: echo(src),
            reason: format!("not an absolute URL ({e})"),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TargetError::NotAllowed {
                url: redacted(&url),
                reason: format!(
                    "scheme `{}` is not allowed; only http and https are",
                    url.scheme()
                ),
            });
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(TargetError::Invalid {
                url: redacted(&url),
                reason: "a host is required".into(),
            });
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(TargetError::NotAllowed {
                url: redacted(&url),
                reason: "credentials (user:password@) are not allowed in a target URL; \
                         send them in a header instead"
                    .into(),
            });
        }
        if let Some(ip) = literal_ip(&url) {
            if !self.allows_ip(ip) {
                return Err(TargetError::NotAllowed {
                    url: redacted(&url),
                    reason: match embedded_v4(ip) {
                        Some(v4) => format!("address {ip} (IPv4 {v4}) is in a denied network"),
                        None => format!("address {ip} is in a denied network"),
                    },
                });
            }
        }
        Ok(url)
    }
}

/// The host of `url` when it is a literal IP address (as normalized by the parser).
///
/// HTTP clients connect to such hosts without any name resolution, so a guard that
/// only sits in the resolver never sees them; callers check these themselves.
pub fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        Host::Domain(_) => None,
    }
}

/// The IPv4 address an IPv6 address stands for, if any: the mapped form
/// `::ffff:a.b.c.d` and the compatible form `::a.b.c.d`. `::` and `::1` are the
/// IPv6 unspecified and loopback addresses, not compatible ones.
fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else {
        return None;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    if v6 == Ipv6Addr::UNSPECIFIED || v6 == Ipv6Addr::LOCALHOST {
        return None;
    }
    v6.to_ipv4()
}

/// The URL for an error message, with any user name and password removed.
fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    // Only fails for URLs that cannot have credentials, which then have none to hide.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    echo(shown.as_str())
}

/// `src` cut to [`MAX_ECHO`] bytes at a character boundary.
fn echo(src: &str) -> String {
    if src.len() <= MAX_ECHO {
        return src.to_string();
    }
    let mut end = MAX_ECHO;
    while !src.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &src[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_cidrs, DEFAULT_TARGET_DENY};

    fn default_policy() -> TargetPolicy {
        TargetPolicy::new(vec![], parse_cidrs(DEFAULT_TARGET_DENY).unwrap())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn target_refuses_bad_urls_with_their_reason() {
        let policy = default_policy();
        // (input, expected code, text the reason must contain)
        let cases: &[(&str, &str, &str)] = &[
            (
                "http://169.254.169.254/latest/meta-data/",
                "target_not_allowed",
                "169.254.169.254",
            ),
            (
                "https://169.254.170.2/v2/credentials",
                "target_not_allowed",
                "169.254.170.2",
            ),
            ("http://[fe80::1]/", "target_not_allowed", "fe80::1"),
            ("http://0.0.0.0/", "target_not_allowed", "0.0.0.0"),
            ("http://0.0.0.0:8080/hook", "target_not_allowed", "0.0.0.0"),
            ("http://0/", "target_not_allowed", "0.0.0.0"),
            (
                "http://[fd00:ec2::254]/latest",
                "target_not_allowed",
                "fd00:ec2::254",
            ),
            (
                "http://[::ffff:169.254.169.254]/",
                "target_not_allowed",
                "169.254.169.254",
            ),
            (
                "http://[::ffff:a9fe:a9fe]/",
                "target_not_allowed",
                "(IPv4 169.254.169.254)",
            ),
            (
                "http://[::169.254.169.254]/",
                "target_not_allowed",
                "(IPv4 169.254.169.254)",
            ),
            (
                "http://0xa9fea9fe/",
                "target_not_allowed",
                "169.254.169.254",
            ),
            (
                "http://2852039166/",
                "target_not_allowed",
                "169.254.169.254",
            ),
            (
                "http://0251.0376.0251.0376/",
                "target_not_allowed",
                "169.254.169.254",
            ),
            (
                "http://169.254.43518/",
                "target_not_allowed",
                "169.254.169.254",
            ),
            ("ftp://x/", "target_not_allowed", "scheme `ftp`"),
            ("file:///etc/passwd", "target_not_allowed", "scheme `file`"),
            (
                "gopher://127.0.0.1:6379/_INFO",
                "target_not_allowed",
                "scheme `gopher`",
            ),
            (
                "javascript:alert(1)",
                "target_not_allowed",
                "scheme `javascript`",
            ),
            (
                "http://user:pass@127.0.0.1/",
                "target_not_allowed",
                "credentials",
            ),
            (
                "https://token@example.com/hook",
                "target_not_allowed",
                "credentials",
            ),
            (
                "http://:pass@example.com/",
                "target_not_allowed",
                "credentials",
            ),
            ("example.com/hook", "invalid_request", "not an absolute URL"),
            ("/hook/:id", "invalid_request", "not an absolute URL"),
            ("", "invalid_request", "not an absolute URL"),
            ("http://", "invalid_request", "not an absolute URL"),
            (
                "http://exa mple.com/",
                "invalid_request",
                "not an absolute URL",
            ),
            (
                "http://256.1.1.1/",
                "invalid_request",
                "not an absolute URL",
            ),
            ("http://[::1/", "invalid_request", "not an absolute URL"),
        ];
        for (src, code, reason) in cases {
            let err = match policy.check_url(src) {
                Ok(url) => panic!("`{src}` was accepted as {url}"),
                Err(e) => e,
            };
            assert_eq!(err.code(), *code, "`{src}`: {err}");
            assert!(err.reason().contains(reason), "`{src}`: {err}");
        }
    }

    #[test]
    fn target_accepts_good_urls() {
        let policy = default_policy();
        let cases: &[(&str, &str)] = &[
            ("http://127.0.0.1/", "http://127.0.0.1/"),
            ("http://127.0.0.1:9000/hook", "http://127.0.0.1:9000/hook"),
            ("http://0x7f000001/", "http://127.0.0.1/"),
            ("http://2130706433:81/x", "http://127.0.0.1:81/x"),
            ("http://127.1/", "http://127.0.0.1/"),
            ("http://[::1]:8080/", "http://[::1]:8080/"),
            ("http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/"),
            ("http://localhost/", "http://localhost/"),
            ("http://localhost:3000/hooks", "http://localhost:3000/hooks"),
            ("https://example.com/:id", "https://example.com/:id"),
            ("http://h:9000/hook/:id", "http://h:9000/hook/:id"),
            (
                "https://example.com/t/:tenant/e/:event?x=1",
                "https://example.com/t/:tenant/e/:event?x=1",
            ),
            ("HTTPS://Example.COM/Hook", "https://example.com/Hook"),
            ("http://10.0.0.5/", "http://10.0.0.5/"),
            ("http://[2001:db8::1]/", "http://[2001:db8::1]/"),
            // Names are judged after resolution, at delivery.
            (
                "http://169.254.169.254.nip.io/",
                "http://169.254.169.254.nip.io/",
            ),
            (
                "http://metadata.google.internal/",
                "http://metadata.google.internal/",
            ),
        ];
        for (src, normalized) in cases {
            match policy.check_url(src) {
                Ok(url) => assert_eq!(url.as_str(), *normalized, "`{src}`"),
                Err(e) => panic!("`{src}` was refused: {e}"),
            }
        }
    }

    #[test]
    fn target_allow_list_overrides_deny_list() {
        let policy = TargetPolicy::new(
            parse_cidrs("169.254.10.0/24").unwrap(),
            parse_cidrs(DEFAULT_TARGET_DENY).unwrap(),
        );
        assert!(policy.allows_ip(ip("169.254.10.5")));
        assert!(policy.allows_ip(ip("::ffff:169.254.10.5")));
        assert!(!policy.allows_ip(ip("169.254.169.254")));
        assert!(!policy.allows_ip(ip("169.254.11.5")));
        assert!(policy.check_url("http://169.254.10.5/hook").is_ok());
        assert!(policy
            .check_url("http://[::ffff:169.254.10.5]/hook")
            .is_ok());
        let err = policy.check_url("http://169.254.169.254/").unwrap_err();
        assert_eq!(err.code(), "target_not_allowed");
    }

    #[test]
    fn target_ips_judged_by_default_lists() {
        let policy = default_policy();
        for denied in [
            "169.254.169.254",
            "169.254.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "fe80::1",
            "febf::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "::ffff:0.0.0.0",
            "::169.254.169.254",
        ] {
            assert!(!policy.allows_ip(ip(denied)), "{denied} allowed");
        }
        for allowed in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.255.0.1",
            "1.0.0.0",
            "::1",
            "::ffff:127.0.0.1",
            "fd00:ec2::253",
            "fec0::1",
            "2001:db8::1",
        ] {
            assert!(policy.allows_ip(ip(allowed)), "{allowed} refused");
        }
    }

    #[test]
    fn target_ipv6_deny_entries_cover_mapped_forms() {
        let policy = TargetPolicy::new(vec![], parse_cidrs("::ffff:0:0/96").unwrap());
        assert!(!policy.allows_ip(ip("::ffff:10.0.0.1")));
        assert!(policy.allows_ip(ip("10.0.0.1")));
    }

    #[test]
    fn target_empty_policy_allows_everything() {
        let policy = TargetPolicy::default();
        assert!(policy.allows_ip(ip("169.254.169.254")));
        assert!(policy.check_url("http://169.254.169.254/").is_ok());
        assert_eq!(
            policy.check_url("ftp://x/").unwrap_err().code(),
            "target_not_allowed"
        );
    }

    #[test]
    fn target_from_settings_uses_both_lists() {
        let mut settings = crate::config::Settings::from_lookup(&|_| None).unwrap();
        settings.target_allow = parse_cidrs("169.254.10.0/24").unwrap();
        let policy = TargetPolicy::from_settings(&settings);
        assert!(policy.allows_ip(ip("169.254.10.1")));
        assert!(!policy.allows_ip(ip("169.254.169.254")));
    }

    #[test]
    fn target_errors_hide_credentials_and_cut_long_input() {
        let err = default_policy()
            .check_url("http://admin:hunter2@127.0.0.1/")
            .unwrap_err();
        let shown = err.to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("admin"), "{shown}");
        assert!(shown.contains("http://127.0.0.1/"), "{shown}");

        let long = format!("not a url {}", "é".repeat(1000));
        let shown = default_policy().check_url(&long).unwrap_err().to_string();
        assert!(shown.len() < 400, "{}", shown.len());
    }
}
