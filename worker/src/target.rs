//! The delivery client's guard against requests into the operator's own network.
//!
//! Checking a target's address and then letting the HTTP client resolve the name
//! again would leave a window: a name that answers a public address to the check
//! and `169.254.169.254` to the connect (DNS rebinding) walks past it. So the check
//! lives in the client's resolver: [`PolicyResolver`] looks the name up once, drops
//! every address the [`TargetPolicy`] refuses, and hands reqwest the rest, which are
//! the only addresses reqwest connects to. The address checked is the address used.
//!
//! Literal IP hosts never reach a resolver, so [`blocked_literal`] is checked for
//! them before sending.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use switch_core::target::{literal_ip, TargetPolicy};

/// Name resolution, behind a trait so tests can answer any name with any address
/// without a DNS server.
pub trait Lookup: Send + Sync + 'static {
    /// All addresses of `host` (a name, never a literal IP).
    fn lookup(&self, host: &str) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>>;
}

/// The operating system's resolver (`getaddrinfo`, via tokio's blocking pool).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        let host = host.to_string();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// A fixed table of names, for tests and local setups.
#[derive(Clone, Debug, Default)]
pub struct StaticLookup(pub HashMap<String, Vec<IpAddr>>);

impl Lookup for StaticLookup {
    fn lookup(&self, host: &str) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        let found = self.0.get(&host.to_ascii_lowercase()).cloned();
        let host = host.to_string();
        Box::pin(async move {
            found.ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("failed to lookup address information: no such name `{host}`"),
                )
            })
        })
    }
}

/// Every address of a target's host is refused by the target policy.
///
/// Carried in the source chain of the `reqwest::Error`, where [`is_blocked`] and
/// [`find_blocked`] look for it: a blocked delivery is not a network failure and must
/// not be retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub host: String,
    pub addrs: Vec<IpAddr>,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "target host `{}` resolves only to denied addresses (",
            self.host
        )?;
        for (i, a) in self.addrs.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{a}")?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for Blocked {}

/// A reqwest resolver that only returns addresses the policy allows.
pub struct PolicyResolver {
    policy: TargetPolicy,
    lookup: Arc<dyn Lookup>,
}

impl PolicyResolver {
    pub fn new(policy: TargetPolicy, lookup: Arc<dyn Lookup>) -> Self {
        PolicyResolver { policy, lookup }
    }
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        let pending = self.lookup.lookup(&host);
        let policy = self.policy.clone();
        Box::pin(async move {
            let found = pending.await?;
            let (allowed, denied): (Vec<IpAddr>, Vec<IpAddr>) =
                found.into_iter().partition(|ip| policy.allows_ip(*ip));
            if allowed.is_empty() {
                if denied.is_empty() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("no addresses found for `{host}`"),
                    )
                    .into());
                }
                return Err(Blocked {
                    host,
                    addrs: denied,
                }
                .into());
            }
            if !denied.is_empty() {
                tracing::debug!(%host, ?denied, "skipping denied target addresses");
            }
            // Port 0: reqwest puts in the URL's port (or the scheme's default).
            let addrs: Addrs = Box::new(allowed.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// The delivery HTTP client: no redirects (a 3xx is the subscriber's answer, and
/// following it would reach a target nobody checked), a connection pool sized to the
/// per-subscriber concurrency, and name resolution through [`PolicyResolver`].
///
/// Fails only if the TLS backend cannot be set up, which happens at startup.
pub fn client(
    concurrency: usize,
    policy: TargetPolicy,
    lookup: Arc<dyn Lookup>,
) -> Result<reqwest::Client, reqwest::Error> {
    builder(concurrency, policy, lookup).build()
}

fn builder(
    concurrency: usize,
    policy: TargetPolicy,
    lookup: Arc<dyn Lookup>,
) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(concurrency)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .user_agent(concat!("Switch-Webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(PolicyResolver::new(policy, lookup))
}

/// Why `url` must not be sent, when its host is a literal IP address the policy
/// denies. reqwest connects to literal addresses without asking the resolver, so
/// this is the check for them.
pub fn blocked_literal(policy: &TargetPolicy, url: &url::Url) -> Option<String> {
    let ip = literal_ip(url)?;
    if policy.allows_ip(ip) {
        None
    } else {
        Some(format!("target address {ip} is in a denied network"))
    }
}

/// The [`Blocked`] refusal inside a reqwest error, if the request failed because of it.
pub fn find_blocked(e: &reqwest::Error) -> Option<&Blocked> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(b) = s.downcast_ref::<Blocked>() {
            return Some(b);
        }
        source = s.source();
    }
    None
}

/// Whether a request failed because the policy refused every address of its host.
pub fn is_blocked(e: &reqwest::Error) -> bool {
    find_blocked(e).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use switch_core::config::{parse_cidrs, DEFAULT_TARGET_DENY};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn default_policy() -> TargetPolicy {
        TargetPolicy::new(vec![], parse_cidrs(DEFAULT_TARGET_DENY).unwrap())
    }

    /// Answers from a table and counts how often it was asked.
    struct Stub {
        table: StaticLookup,
        calls: AtomicUsize,
    }

    impl Stub {
        fn new(entries: &[(&str, &[&str])]) -> Arc<Self> {
            let map = entries
                .iter()
                .map(|(h, addrs)| (h.to_string(), addrs.iter().map(|a| ip(a)).collect()))
                .collect();
            Arc::new(Stub {
                table: StaticLookup(map),
                calls: AtomicUsize::new(0),
            })
        }
    }

    impl Lookup for Stub {
        fn lookup(&self, host: &str) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.table.lookup(host)
        }
    }

    /// The client under test; proxies from the environment are turned off so a
    /// developer's `HTTP_PROXY` cannot send `hook.test` elsewhere.
    fn test_client(policy: TargetPolicy, lookup: Arc<dyn Lookup>) -> reqwest::Client {
        builder(4, policy, lookup)
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    /// A minimal HTTP/1.1 server on 127.0.0.1: counts connections, records each
    /// request's Host header, answers 200 with an empty body.
    struct Responder {
        port: u16,
        accepted: Arc<AtomicUsize>,
        hosts: Arc<Mutex<Vec<String>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Responder {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn responder() -> Responder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let hosts = Arc::new(Mutex::new(Vec::new()));
        let (a, h) = (accepted.clone(), hosts.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let h = h.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head);
                    if let Some(host) = text.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("host").then(|| v.trim().to_string())
                    }) {
                        h.lock().unwrap().push(host);
                    }
                    let _ = sock
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Responder {
            port,
            accepted,
            hosts,
            task,
        }
    }

    #[tokio::test]
    async fn target_denied_answer_is_blocked_without_connecting() {
        let stub = Stub::new(&[("hook.test", &["169.254.169.254"])]);
        let client = test_client(default_policy(), stub.clone());
        let err = client
            .post("http://hook.test:8080/x")
            .body("{}")
            .send()
            .await
            .unwrap_err();
        assert!(is_blocked(&err), "{err:?}");
        assert_eq!(
            find_blocked(&err),
            Some(&Blocked {
                host: "hook.test".into(),
                addrs: vec![ip("169.254.169.254")],
            })
        );
        assert!(!err.is_timeout());
        assert_eq!(stub.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn target_mixed_answer_connects_only_to_allowed_address() {
        let server = responder().await;
        let stub = Stub::new(&[("hook.test", &["169.254.169.254", "127.0.0.1"])]);
        let client = test_client(default_policy(), stub);
        let resp = client
            .post(format!("http://hook.test:{}/x", server.port))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(
            *server.hosts.lock().unwrap(),
            vec![format!("hook.test:{}", server.port)]
        );
    }

    #[tokio::test]
    async fn target_denied_loopback_is_never_connected() {
        let server = responder().await;
        let stub = Stub::new(&[("hook.test", &["127.0.0.1"])]);
        let policy = TargetPolicy::new(vec![], parse_cidrs("127.0.0.0/8").unwrap());
        let client = test_client(policy, stub);
        let err = client
            .get(format!("http://hook.test:{}/x", server.port))
            .send()
            .await
            .unwrap_err();
        assert!(is_blocked(&err), "{err:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(server.accepted.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn target_allow_list_lets_a_denied_network_through() {
        let server = responder().await;
        let stub = Stub::new(&[("hook.test", &["127.0.0.1"])]);
        let policy = TargetPolicy::new(
            parse_cidrs("127.0.0.1/32").unwrap(),
            parse_cidrs("127.0.0.0/8").unwrap(),
        );
        let client = test_client(policy, stub);
        let resp = client
            .get(format!("http://hook.test:{}/x", server.port))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn target_lookup_failure_is_not_blocked() {
        let stub = Stub::new(&[("empty.test", &[])]);
        let client = test_client(default_policy(), stub);
        for url in ["http://unknown.test:1/", "http://empty.test:1/"] {
            let err = client.get(url).send().await.unwrap_err();
            assert!(!is_blocked(&err), "{url}: {err:?}");
            assert!(err.is_connect(), "{url}: {err:?}");
        }
    }

    #[tokio::test]
    async fn target_literal_ip_bypasses_the_resolver() {
        // Why `blocked_literal` exists: the resolver is never asked about a literal
        // address, so a policy denying 127.0.0.0/8 does not stop this request.
        let server = responder().await;
        let stub = Stub::new(&[]);
        let policy = TargetPolicy::new(vec![], parse_cidrs("127.0.0.0/8").unwrap());
        let client = test_client(policy.clone(), stub.clone());
        let url = url::Url::parse(&format!("http://127.0.0.1:{}/x", server.port)).unwrap();
        assert!(blocked_literal(&policy, &url).is_some());
        let resp = client.get(url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(stub.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn target_resolver_returns_only_allowed_addresses() {
        let stub = Stub::new(&[(
            "hook.test",
            &["169.254.169.254", "127.0.0.1", "fe80::1", "::1"],
        )]);
        let resolver = PolicyResolver::new(default_policy(), stub);
        let addrs: Vec<SocketAddr> = resolver
            .resolve("hook.test".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert_eq!(
            addrs,
            vec![
                SocketAddr::new(ip("127.0.0.1"), 0),
                SocketAddr::new(ip("::1"), 0)
            ]
        );
    }

    #[tokio::test]
    async fn target_system_lookup_resolves_localhost() {
        let addrs = SystemLookup.lookup("localhost").await.unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.is_loopback()), "{addrs:?}");
    }

    #[test]
    fn target_blocked_literal_checks_ip_hosts_only() {
        let policy = default_policy();
        let url = |s: &str| url::Url::parse(s).unwrap();
        for refused in [
            "http://169.254.169.254/",
            "http://169.254.169.254:80/latest/meta-data/",
            "http://[::ffff:169.254.169.254]/",
            "http://[fe80::1]:8080/",
            "http://0xa9fea9fe/",
            "http://0.0.0.0:9000/",
        ] {
            let reason = blocked_literal(&policy, &url(refused));
            assert!(reason.is_some(), "{refused} passed");
        }
        for passed in [
            "http://127.0.0.1:1/",
            "http://[::1]:1/",
            "https://example.com/",
            "http://hook.test/",
        ] {
            assert_eq!(blocked_literal(&policy, &url(passed)), None, "{passed}");
        }
        assert_eq!(
            blocked_literal(&policy, &url("http://169.254.169.254/")).unwrap(),
            "target address 169.254.169.254 is in a denied network"
        );
    }

    #[test]
    fn target_client_builds() {
        assert!(client(8, default_policy(), Arc::new(SystemLookup)).is_ok());
    }
}
