//! Settings read from the environment (and a `.env` file), validated at start.

use std::time::Duration;

use crate::duration::{parse_duration, parse_schedule};

/// Which database a URL points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(String),
    Postgres(String),
}

impl DatabaseUrl {
    pub fn parse(src: &str) -> Result<Self, String> {
        if let Some(path) = src.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("sqlite URL needs a path, e.g. sqlite://switch.db".into());
            }
            Ok(DatabaseUrl::Sqlite(path.to_string()))
        } else if let Some(path) = src.strip_prefix("sqlite:") {
            Ok(DatabaseUrl::Sqlite(path.to_string()))
        } else if src.starts_with("postgres://") || src.starts_with("postgresql://") {
            Ok(DatabaseUrl::Postgres(src.to_string()))
        } else {
            Err(format!("`{src}` is neither sqlite://PATH nor postgres://…"))
        }
    }
}

/// Everything the binaries read from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: DatabaseUrl,
    pub redis_url: String,
    pub namespace: String,
    pub jwt_secret: Option<String>,
    /// A file of PEM public keys for EdDSA, ES256 and RS256 tokens.
    pub jwt_public_keys: Option<String>,
    pub server_addr: String,
    pub worker_concurrency: usize,
    pub retry_schedule: Vec<Duration>,
    pub delivery_timeout: Duration,
    pub max_body_bytes: usize,
    pub refresh_interval: Duration,
    pub worker_metrics_addr: String,
    pub log_json: bool,
    /// Deliveries of one worker in flight to one subscriber (its `max_in_flight` overrides).
    pub subscriber_concurrency: usize,
    /// Consecutive failed attempts that open a subscriber's circuit.
    pub circuit_failures: u32,
    /// First wait before a probe of an open circuit (doubles up to 10 min).
    pub circuit_cooldown: Duration,
    /// A subscriber failing without a success for this long is disabled (`None`: never).
    pub auto_disable_after: Option<Duration>,
    /// Target networks refused (checked after `target_allow`).
    pub target_deny: Vec<ipnet::IpNet>,
    /// Target networks always allowed, checked first.
    pub target_allow: Vec<ipnet::IpNet>,
    /// How long messages, attempts and replayed dead letters are kept (`None`: for ever).
    pub message_retention: Option<Duration>,
    /// Streams the queue is split into (each under its own hash tag).
    pub queue_partitions: usize,
    /// Replicas every publish waits for (`WAIT`) before it is answered.
    pub redis_wait_replicas: usize,
    /// Where spans are exported over OTLP/HTTP (`<endpoint>/v1/traces`); `None`: no export.
    pub otlp_endpoint: Option<url::Url>,
}

/// Cloud metadata and link-local addresses: never a webhook target by default.
pub const DEFAULT_TARGET_DENY: &str = "169.254.0.0/16,fe80::/10,0.0.0.0/8,fd00:ec2::254/128";

/// A comma-separated CIDR list (a bare address is a /32 or /128); empty is none.
pub fn parse_cidrs(src: &str) -> Result<Vec<ipnet::IpNet>, String> {
    src.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("`{s}` is not a CIDR block such as 10.0.0.0/8 or fd00::/8"))
        })
        .collect()
}

/// An OTLP/HTTP collector's base URL: `http` or `https`, a host, no query or
/// fragment (spans go to its `/v1/traces`).
fn otlp_endpoint(s: &str) -> Result<url::Url, String> {
    let bad = |why: &str| {
        format!("`{s}` is not an OTLP/HTTP endpoint such as http://127.0.0.1:4318: {why}")
    };
    let url = url::Url::parse(s.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it names no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it may have no query or fragment"));
    }
    Ok(url)
}

/// A configuration error that names the variable at fault.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: String,
    pub message: String,
}

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn first(lookup: Lookup, names: &[&str]) -> Option<(String, String)> {
    names.iter().find_map(|n| {
        lookup(n)
            .filter(|v| !v.is_empty())
            .map(|v| (n.to_string(), v))
    })
}

fn parse_with<T>(
    lookup: Lookup,
    names: &[&str],
    default: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    let (var, value) =
        first(lookup, names).unwrap_or_else(|| (names[0].to_string(), default.to_string()));
    parse(&value).map_err(|message| ConfigError { var, message })
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be more than 0".into()),
        d => Ok(d),
    }
}

fn positive_int(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{s}` is not a positive integer")),
    }
}

/// A listen address: `IP:PORT`, `HOSTNAME:PORT` (resolved when binding) or
/// `:PORT` (every interface).
fn listen_addr(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(s.to_string());
    }
    let bad = || format!("`{s}` is not HOST:PORT");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    if host.is_empty() {
        return Ok(format!("0.0.0.0:{port}"));
    }
    let hostname = host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if hostname {
        Ok(s.to_string())
    } else {
        Err(bad())
    }
}

impl Settings {
    /// Reads the process environment, after loading `.env` from the working directory.
    pub fn from_env() -> Result<Self, ConfigError> {
        let _ = dotenvy::dotenv();
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests can pass a map.
    pub fn from_lookup(lookup: Lookup) -> Result<Self, ConfigError> {
        let database_url = match first(lookup, &["SWITCH_DATABASE_URL"]) {
            Some((var, v)) => {
                DatabaseUrl::parse(&v).map_err(|message| ConfigError { var, message })?
            }
            None => match first(lookup, &["SWITCH_DB_NAME"]) {
                Some((_, name)) => DatabaseUrl::Sqlite(name),
                None => DatabaseUrl::Sqlite("switch.db".into()),
            },
        };
        let redis_url = parse_with(
            lookup,
            &["SWITCH_REDIS_URL"],
            "redis://127.0.0.1:6379",
            |s| {
                if s.starts_with("redis://")
                    || s.starts_with("rediss://")
                    || s.starts_with("unix://")
                {
                    Ok(s.to_string())
                } else if s.starts_with(crate::queue::CLUSTER_SCHEME) {
                    crate::queue::cluster_nodes(s)
                        .map(|_| s.to_string())
                        .ok_or_else(|| format!("`{s}` names no host:port"))
                } else {
                    Err(format!(
                        "`{s}` is neither a redis:// URL nor redis+cluster://host:port[,host:port…]"
                    ))
                }
            },
        )?;
        let cluster = parse_with(lookup, &["SWITCH_REDIS_CLUSTER"], "false", |s| {
            match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err(format!("`{s}` is not true or false")),
            }
        })?;
        // SWITCH_REDIS_CLUSTER=true with a redis://host:port[,host:port] URL.
        let redis_url = match redis_url.strip_prefix("redis://") {
            Some(rest) if cluster => format!("{}{rest}", crate::queue::CLUSTER_SCHEME),
            _ => redis_url,
        };
        let queue_partitions =
            parse_with(
                lookup,
                &["SWITCH_QUEUE_PARTITIONS"],
                "1",
                |s| match positive_int(s)? {
                    n if n <= crate::queue::MAX_PARTITIONS => Ok(n),
                    _ => Err(format!(
                        "at most {} partitions",
                        crate::queue::MAX_PARTITIONS
                    )),
                },
            )?;
        let redis_wait_replicas = parse_with(lookup, &["SWITCH_REDIS_WAIT_REPLICAS"], "0", |s| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("`{s}` is not a number of replicas"))
        })?;
        let namespace = parse_with(
            lookup,
            &["SWITCH_QUEUE_NAMESPACE", "SWITCH_PRODUCTION_QUEUE"],
            "switch",
            |s| {
                if s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-:.".contains(c))
                    && s.len() <= 100
                {
                    Ok(s.to_string())
                } else {
                    Err(format!("`{s}` may only hold letters, digits, `_ - : .`"))
                }
            },
        )?;
        let jwt_secret = first(lookup, &["SWITCH_JWT_SECRET"]).map(|(_, v)| v);
        let jwt_public_keys = first(lookup, &["SWITCH_JWT_PUBLIC_KEYS"]).map(|(_, v)| v);
        let server_addr = match first(lookup, &["SWITCH_SERVER_ADDR"]) {
            Some((var, v)) => listen_addr(&v).map_err(|message| ConfigError { var, message })?,
            None => match first(lookup, &["SWITCH_SERVER_PORT"]) {
                Some((var, v)) => {
                    let port: u16 =
                        v.trim()
                            .trim_start_matches(':')
                            .parse()
                            .map_err(|_| ConfigError {
                                var,
                                message: format!("`{v}` is not a port"),
                            })?;
                    format!("0.0.0.0:{port}")
                }
                None => "0.0.0.0:8080".into(),
            },
        };
        let worker_concurrency = parse_with(
            lookup,
            &[
                "SWITCH_WORKER_CONCURRENCY",
                "SWITCH_CONSUMER_CONCURRENCY_LEVEL",
            ],
            "64",
            positive_int,
        )?;
        // Set but empty (or `none`) is a schedule without retries: one attempt.
        let retry_schedule = parse_schedule(
            &lookup("SWITCH_RETRY_SCHEDULE").unwrap_or_else(|| "5s,30s,2m,10m,30m,1h,3h,6h".into()),
        )
        .map_err(|message| ConfigError {
            var: "SWITCH_RETRY_SCHEDULE".into(),
            message,
        })?;
        let delivery_timeout = parse_with(
            lookup,
            &["SWITCH_DELIVERY_TIMEOUT"],
            "15s",
            positive_duration,
        )?;
        let max_body_bytes =
            parse_with(lookup, &["SWITCH_MAX_BODY_BYTES"], "1048576", positive_int)?;
        let refresh_interval = parse_with(
            lookup,
            &["SWITCH_REFRESH_INTERVAL"],
            "5s",
            positive_duration,
        )?;
        let worker_metrics_addr = parse_with(
            lookup,
            &["SWITCH_WORKER_METRICS_ADDR"],
            "0.0.0.0:9090",
            listen_addr,
        )?;
        let log_json = parse_with(lookup, &["SWITCH_LOG_FORMAT"], "text", |s| match s {
            "json" => Ok(true),
            "text" | "pretty" | "plain" => Ok(false),
            other => Err(format!("`{other}` is not json or text")),
        })?;
        let subscriber_concurrency = parse_with(
            lookup,
            &["SWITCH_SUBSCRIBER_CONCURRENCY"],
            "8",
            positive_int,
        )?;
        let circuit_failures = parse_with(lookup, &["SWITCH_CIRCUIT_FAILURES"], "10", |s| {
            positive_int(s).map(|n| n.min(u32::MAX as usize) as u32)
        })?;
        let circuit_cooldown = parse_with(
            lookup,
            &["SWITCH_CIRCUIT_COOLDOWN"],
            "30s",
            positive_duration,
        )?;
        let auto_disable_after = parse_with(lookup, &["SWITCH_AUTO_DISABLE_AFTER"], "5d", |s| {
            if s.trim().eq_ignore_ascii_case("none") {
                return Ok(None);
            }
            parse_duration(s).and_then(|d| {
                if d.is_zero() {
                    Err("must be more than 0 (or `none`)".into())
                } else {
                    Ok(Some(d))
                }
            })
        })?;
        let target_deny = parse_with(
            lookup,
            &["SWITCH_TARGET_DENY"],
            DEFAULT_TARGET_DENY,
            parse_cidrs,
        )?;
        let target_allow = parse_with(lookup, &["SWITCH_TARGET_ALLOW"], "", parse_cidrs)?;
        let message_retention = parse_with(lookup, &["SWITCH_MESSAGE_RETENTION"], "7d", |s| {
            if s.trim().eq_ignore_ascii_case("none") {
                Ok(None)
            } else {
                positive_duration(s).map(Some)
            }
        })?;
        let otlp_endpoint = match first(lookup, &["SWITCH_OTLP_ENDPOINT"]) {
            Some((var, v)) => {
                Some(otlp_endpoint(&v).map_err(|message| ConfigError { var, message })?)
            }
            None => None,
        };
        Ok(Settings {
            otlp_endpoint,
            queue_partitions,
            redis_wait_replicas,
            message_retention,
            subscriber_concurrency,
            circuit_failures,
            circuit_cooldown,
            auto_disable_after,
            target_deny,
            target_allow,
            database_url,
            redis_url,
            namespace,
            jwt_secret,
            jwt_public_keys,
            server_addr,
            worker_concurrency,
            retry_schedule,
            delivery_timeout,
            max_body_bytes,
            refresh_interval,
            worker_metrics_addr,
            log_json,
        })
    }

    /// The number of attempts a job gets: one more than the retry delays.
    pub fn max_attempts(&self) -> u32 {
        self.retry_schedule.len() as u32 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(&move |k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.database_url, DatabaseUrl::Sqlite("switch.db".into()));
        assert_eq!(s.server_addr, "0.0.0.0:8080");
        assert_eq!(s.worker_concurrency, 64);
        assert_eq!(s.max_attempts(), 9);
        assert_eq!(s.namespace, "switch");
        assert_eq!(s.subscriber_concurrency, 8);
        assert_eq!(s.circuit_failures, 10);
        assert_eq!(s.circuit_cooldown, Duration::from_secs(30));
        assert_eq!(s.auto_disable_after, Some(Duration::from_secs(5 * 86_400)));
        assert_eq!(s.target_deny.len(), 4);
        assert!(s.target_allow.is_empty());
        let off = settings(&[("SWITCH_AUTO_DISABLE_AFTER", "none")]).unwrap();
        assert_eq!(off.auto_disable_after, None);
        assert_eq!(s.message_retention, Some(Duration::from_secs(7 * 86_400)));
        let keep = settings(&[("SWITCH_MESSAGE_RETENTION", "none")]).unwrap();
        assert_eq!(keep.message_retention, None);
        assert_eq!(s.queue_partitions, 1);
        assert_eq!(s.redis_wait_replicas, 0);
        assert_eq!(s.otlp_endpoint, None);
        let traced = settings(&[("SWITCH_OTLP_ENDPOINT", "http://127.0.0.1:4318")]).unwrap();
        assert_eq!(
            traced.otlp_endpoint.map(String::from).as_deref(),
            Some("http://127.0.0.1:4318/")
        );
    }

    #[test]
    fn a_cluster_is_named_by_its_scheme_or_by_a_flag() {
        let s = settings(&[(
            "SWITCH_REDIS_URL",
            "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
        )])
        .unwrap();
        assert_eq!(s.redis_url, "redis+cluster://127.0.0.1:7000,127.0.0.1:7001");
        let s = settings(&[
            ("SWITCH_REDIS_URL", "redis://127.0.0.1:7000"),
            ("SWITCH_REDIS_CLUSTER", "true"),
            ("SWITCH_QUEUE_PARTITIONS", "6"),
            ("SWITCH_REDIS_WAIT_REPLICAS", "1"),
        ])
        .unwrap();
        assert_eq!(s.redis_url, "redis+cluster://127.0.0.1:7000");
        assert_eq!((s.queue_partitions, s.redis_wait_replicas), (6, 1));
    }

    #[test]
    fn legacy_aliases() {
        let s = settings(&[
            ("SWITCH_DB_NAME", "old.db"),
            ("SWITCH_SERVER_PORT", "9000"),
            ("SWITCH_CONSUMER_CONCURRENCY_LEVEL", "3"),
            ("SWITCH_PRODUCTION_QUEUE", "legacyq"),
        ])
        .unwrap();
        assert_eq!(s.database_url, DatabaseUrl::Sqlite("old.db".into()));
        assert_eq!(s.server_addr, "0.0.0.0:9000");
        assert_eq!(s.worker_concurrency, 3);
        assert_eq!(s.namespace, "legacyq");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases = [
            ("SWITCH_DATABASE_URL", "mysql://x"),
            ("SWITCH_REDIS_URL", "http://x"),
            ("SWITCH_WORKER_CONCURRENCY", "0"),
            ("SWITCH_RETRY_SCHEDULE", "5s,soon"),
            ("SWITCH_DELIVERY_TIMEOUT", "abc"),
            ("SWITCH_MAX_BODY_BYTES", "-3"),
            ("SWITCH_REFRESH_INTERVAL", "0s"),
            ("SWITCH_SERVER_ADDR", "nowhere"),
            ("SWITCH_SERVER_ADDR", "localhost:http"),
            ("SWITCH_SERVER_ADDR", "bad host:80"),
            ("SWITCH_WORKER_METRICS_ADDR", "9090:"),
            ("SWITCH_SERVER_PORT", "http"),
            ("SWITCH_QUEUE_NAMESPACE", "a b"),
            ("SWITCH_LOG_FORMAT", "xml"),
            ("SWITCH_SUBSCRIBER_CONCURRENCY", "0"),
            ("SWITCH_CIRCUIT_FAILURES", "x"),
            ("SWITCH_CIRCUIT_COOLDOWN", "0s"),
            ("SWITCH_AUTO_DISABLE_AFTER", "soon"),
            ("SWITCH_TARGET_DENY", "10.0.0.0/33"),
            ("SWITCH_TARGET_ALLOW", "example.com"),
            ("SWITCH_MESSAGE_RETENTION", "forever"),
            ("SWITCH_QUEUE_PARTITIONS", "0"),
            ("SWITCH_QUEUE_PARTITIONS", "5000"),
            ("SWITCH_REDIS_WAIT_REPLICAS", "one"),
            ("SWITCH_REDIS_CLUSTER", "maybe"),
            ("SWITCH_REDIS_URL", "redis+cluster://"),
            ("SWITCH_OTLP_ENDPOINT", "127.0.0.1:4318"),
            ("SWITCH_OTLP_ENDPOINT", "grpc://collector:4317"),
            ("SWITCH_OTLP_ENDPOINT", "http://collector:4318?x=1"),
            ("SWITCH_OTLP_ENDPOINT", "not a url"),
        ];
        for (var, value) in cases {
            let err = settings(&[(var, value)]).expect_err(var);
            assert_eq!(err.var, var, "{value}");
            assert!(err.to_string().starts_with(var));
        }
    }

    #[test]
    fn an_empty_retry_schedule_means_one_attempt() {
        for v in ["", "none", " "] {
            let s = settings(&[("SWITCH_RETRY_SCHEDULE", v)]).unwrap();
            assert_eq!(s.max_attempts(), 1, "{v:?}");
        }
        let s = settings(&[("SWITCH_RETRY_SCHEDULE", "1s,250ms")]).unwrap();
        assert_eq!(s.max_attempts(), 3);
    }

    #[test]
    fn listen_addresses_may_name_a_host() {
        for (value, want) in [
            ("127.0.0.1:9000", "127.0.0.1:9000"),
            ("[::1]:9000", "[::1]:9000"),
            ("localhost:9000", "localhost:9000"),
            (":9000", "0.0.0.0:9000"),
        ] {
            let s = settings(&[("SWITCH_SERVER_ADDR", value)]).unwrap();
            assert_eq!(s.server_addr, want);
        }
        let s = settings(&[("SWITCH_WORKER_METRICS_ADDR", "localhost:9191")]).unwrap();
        assert_eq!(s.worker_metrics_addr, "localhost:9191");
    }
}
