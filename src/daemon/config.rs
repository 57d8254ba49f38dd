//! The daemon's configuration: cachefilesd-like `key value` lines.
//!
//! ```text
//! # where the cache lives: a device, or a directory holding cache.img
//! dir /var/cache/ringcache        # or: device /dev/nvme0n1p3
//! size 10G                        # size of cache.img created under dir
//! tag mycache
//! brun 10%
//! bcull 7%
//! bstop 3%
//! frun 10%
//! fcull 7%
//! fstop 3%
//! socket /run/ringcached.sock
//! socket_mode 0660
//! engine auto                     # auto, uring or psync
//! lru_timeout 10                  # seconds an unused cookie stays bound
//! callback_margin 10              # seconds before expiry a promise stops counting
//! max_connections 1024            # clients connected at once; more are refused
//! metrics_listen 127.0.0.1:9464   # serve GET /metrics over HTTP here (unset: no listener)
//! heap_trim 10                    # seconds between giving free heap pages back (0: never)
//! allow afs.example uid=1000,1001 gid=100
//! allow * uid=0
//! ```
//!
//! Every bad value is an error naming the line and the key. With no
//! `allow` line, the daemon's own user and root may use every volume.
//! `metrics_listen` takes a numeric address and port (`127.0.0.1:9464`,
//! `[::1]:9464`; no host names, nothing is resolved); port 0 picks a free
//! port, which the daemon logs. Its metrics are readable by anyone who
//! can reach the address: bind it to loopback unless the network is
//! trusted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::io::EngineKind;
use crate::store::CullThresholds;
use crate::util::parse_size;

/// Who may use a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRule {
    /// The volume key, or `None` for every volume (`*`).
    pub volume: Option<String>,
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
}

/// The daemon's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The cache device or file.
    pub device: PathBuf,
    /// Create the cache file with this size if it does not exist.
    pub create_bytes: Option<u64>,
    pub tag: String,
    pub cull: CullThresholds,
    pub socket: PathBuf,
    pub socket_mode: u32,
    pub engine: EngineKind,
    pub lru_timeout: Duration,
    /// A callback promise that expires within this margin is treated as
    /// expired (the callback layer's `margin`).
    pub callback_margin: Duration,
    /// Clients connected at once; one more is refused (a Hello reply with
    /// status Busy and id 0, then the connection closes).
    pub max_connections: usize,
    /// Where to serve `GET /metrics` (Prometheus text) over HTTP; `None`:
    /// no metrics listener.
    pub metrics_listen: Option<SocketAddr>,
    /// How often the allocator's free pages are given back to the system
    /// (see `crate::heap`); zero: never.
    pub heap_trim: Duration,
    pub access: Vec<AccessRule>,
}

/// Clients connected at once by default (each costs a thread, two once it
/// reads, and a descriptor).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// How often the daemon gives its allocator's free pages back by default.
pub const DEFAULT_HEAP_TRIM: Duration = Duration::from_secs(10);

/// Directory of the embedded default, relative to the working directory.
pub const DEFAULT_DIR: &str = "ringcache-data";

impl Config {
    /// The embedded default: a 1 GiB file-backed cache under
    /// `./ringcache-data/`, socket `./ringcache-data/ringcached.sock`.
    pub fn embedded() -> Config {
        let dir = PathBuf::from(DEFAULT_DIR);
        Config {
            device: dir.join("cache.img"),
            create_bytes: Some(1 << 30),
            tag: "default".into(),
            cull: CullThresholds::default(),
            socket: dir.join("ringcached.sock"),
            socket_mode: 0o600,
            engine: EngineKind::Auto,
            lru_timeout: Duration::from_secs(10),
            callback_margin: Duration::from_secs(10),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            metrics_listen: None,
            heap_trim: DEFAULT_HEAP_TRIM,
            access: Vec::new(),
        }
    }

    /// Whether a peer with `uid`/`gid` may use volume `key`. `self_uid`
    /// is the daemon's own user (allowed by default).
    pub fn allows(&self, key: &str, uid: u32, gid: u32, self_uid: u32) -> bool {
        if self.access.is_empty() {
            return uid == self_uid || uid == 0;
        }
        self.access.iter().any(|r| {
            r.volume.as_deref().is_none_or(|v| v == key)
                && (r.uids.contains(&uid) || r.gids.contains(&gid))
        })
    }

    /// Parse a configuration file's text. Relative paths are relative to
    /// `base` (the file's directory).
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let mut c = Config::embedded();
        let mut dir: Option<PathBuf> = None;
        let mut device: Option<PathBuf> = None;
        let mut socket: Option<PathBuf> = None;
        let mut size: Option<u64> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let (key, value) = match content.split_once(char::is_whitespace) {
                Some((k, v)) => (k, v.trim()),
                None => (content, ""),
            };
            let err = |msg: String| ConfigError {
                line,
                key: key.to_string(),
                msg,
            };
            if value.is_empty() {
                return Err(err("needs a value".into()));
            }
            let path = |v: &str| {
                let p = PathBuf::from(v);
                if p.is_absolute() { p } else { base.join(p) }
            };
            match key {
                "dir" => dir = Some(path(value)),
                "device" => device = Some(path(value)),
                "size" => size = Some(parse_size(value).map_err(err)?),
                "tag" => {
                    if value.len() > 32 {
                        return Err(err("at most 32 bytes".into()));
                    }
                    c.tag = value.to_string();
                }
                "brun" | "bcull" | "bstop" | "frun" | "fcull" | "fstop" => {
                    let n: u8 = value
                        .trim_end_matches('%')
                        .parse()
                        .ok()
                        .filter(|&n: &u8| n < 100)
                        .ok_or_else(|| err(format!("{value:?} is not a percentage 0..=99")))?;
                    match key {
                        "brun" => c.cull.brun = n,
                        "bcull" => c.cull.bcull = n,
                        "bstop" => c.cull.bstop = n,
                        "frun" => c.cull.frun = n,
                        "fcull" => c.cull.fcull = n,
                        _ => c.cull.fstop = n,
                    }
                }
                "socket" => socket = Some(path(value)),
                "socket_mode" => {
                    c.socket_mode = u32::from_str_radix(value.trim_start_matches("0o"), 8)
                        .ok()
                        .filter(|&m| m <= 0o777)
                        .ok_or_else(|| err(format!("{value:?} is not an octal mode like 0660")))?;
                }
                "engine" => c.engine = value.parse().map_err(err)?,
                "callback_margin" => {
                    let s: u64 = value
                        .trim_end_matches('s')
                        .parse()
                        .map_err(|_| err(format!("{value:?} is not a number of seconds")))?;
                    c.callback_margin = Duration::from_secs(s);
                }
                "max_connections" => {
                    c.max_connections = value
                        .parse()
                        .ok()
                        .filter(|&n: &usize| (1..=1_000_000).contains(&n))
                        .ok_or_else(|| err(format!("{value:?} is not a number 1..=1000000")))?;
                }
                "metrics_listen" => {
                    c.metrics_listen = Some(value.parse().map_err(|_| {
                        err(format!(
                            "{value:?} is not an address and port like 127.0.0.1:9464 or [::1]:9464"
                        ))
                    })?);
                }
                "lru_timeout" => {
                    let s: u64 = value
                        .trim_end_matches('s')
                        .parse()
                        .map_err(|_| err(format!("{value:?} is not a number of seconds")))?;
                    c.lru_timeout = Duration::from_secs(s);
                }
                "heap_trim" => {
                    let s: u64 = value
                        .trim_end_matches('s')
                        .parse()
                        .ok()
                        .filter(|&s| s <= 86_400)
                        .ok_or_else(|| {
                            err(format!(
                                "{value:?} is not a number of seconds 0..=86400 (0: never)"
                            ))
                        })?;
                    c.heap_trim = Duration::from_secs(s);
                }
                "allow" => {
                    let mut parts = value.split_whitespace();
                    let vol = parts.next().unwrap_or("*");
                    let mut rule = AccessRule {
                        volume: (vol != "*").then(|| vol.to_string()),
                        uids: Vec::new(),
                        gids: Vec::new(),
                    };
                    for p in parts {
                        let (k, list) = p.split_once('=').ok_or_else(|| {
                            err(format!("{p:?}: expected uid=N,... or gid=N,..."))
                        })?;
                        let ids: Result<Vec<u32>, _> = list.split(',').map(str::parse).collect();
                        let ids =
                            ids.map_err(|_| err(format!("{list:?} is not a list of numeric ids")))?;
                        match k {
                            "uid" => rule.uids.extend(ids),
                            "gid" => rule.gids.extend(ids),
                            other => {
                                return Err(err(format!(
                                    "unknown selector {other:?} (uid or gid)"
                                )));
                            }
                        }
                    }
                    if rule.uids.is_empty() && rule.gids.is_empty() {
                        return Err(err("names no uid= or gid=".into()));
                    }
                    c.access.push(rule);
                }
                _ => return Err(err("unknown key".into())),
            }
        }
        match (dir, device) {
            (Some(_), Some(_)) => {
                return Err(ConfigError {
                    line: 0,
                    key: "dir/device".into(),
                    msg: "give either dir or device, not both".into(),
                });
            }
            (Some(d), None) => {
                c.device = d.join("cache.img");
                c.create_bytes = Some(size.unwrap_or(1 << 30));
                if socket.is_none() {
                    c.socket = d.join("ringcached.sock");
                }
            }
            (None, Some(dev)) => {
                c.device = dev;
                c.create_bytes = size;
            }
            (None, None) => {
                if let Some(s) = size {
                    c.create_bytes = Some(s);
                }
            }
        }
        if let Some(s) = socket {
            c.socket = s;
        }
        c.cull.validate().map_err(|msg| ConfigError {
            line: 0,
            key: "brun/bcull/bstop/frun/fcull/fstop".into(),
            msg,
        })?;
        Ok(c)
    }
}

/// A configuration error, naming the line (0: the file as a whole) and key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config line {line}: {key}: {msg}")]
pub struct ConfigError {
    pub line: usize,
    pub key: String,
    pub msg: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(t, Path::new("/etc"))
    }

    #[test]
    fn full_file() {
        let c = parse(
            "# comment\ndir cache\nsize 2G\ntag t\nbrun 20%\nbcull 10\nbstop 5%\nsocket /run/rc.sock\nsocket_mode 0660\n\
             engine psync\nlru_timeout 5s\nallow afs uid=1,2 gid=3\nallow * uid=0\n",
        )
        .unwrap();
        assert_eq!(c.device, PathBuf::from("/etc/cache/cache.img"));
        assert_eq!(c.create_bytes, Some(2 << 30));
        assert_eq!((c.cull.brun, c.cull.bcull, c.cull.bstop), (20, 10, 5));
        assert_eq!(c.socket, PathBuf::from("/run/rc.sock"));
        assert_eq!(c.socket_mode, 0o660);
        assert_eq!(c.engine, EngineKind::Psync);
        assert_eq!(c.lru_timeout, Duration::from_secs(5));
        assert!(c.allows("afs", 2, 99, 500));
        assert!(c.allows("afs", 99, 3, 500));
        assert!(c.allows("other", 0, 0, 500));
        assert!(!c.allows("other", 1, 3, 500));
    }

    #[test]
    fn every_bad_value_names_line_and_key() {
        let cases = [
            ("bogus 1", 1, "bogus"),
            ("\nsize 1X", 2, "size"),
            ("brun 100%", 1, "brun"),
            ("bcull x", 1, "bcull"),
            ("socket_mode 999", 1, "socket_mode"),
            ("engine fast", 1, "engine"),
            ("lru_timeout soon", 1, "lru_timeout"),
            ("allow v uid=a", 1, "allow"),
            ("allow v", 1, "allow"),
            ("allow v pid=1", 1, "allow"),
            ("tag", 1, "tag"),
            ("tag 012345678901234567890123456789012", 1, "tag"),
        ];
        for (text, line, key) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!((e.line, e.key.as_str()), (line, key), "{text}: {e}");
        }
        let e = parse("dir a\ndevice b").unwrap_err();
        assert!(e.msg.contains("either"));
        let e = parse("brun 5\nbcull 7\nbstop 3").unwrap_err();
        assert!(e.msg.contains("bcull"), "{e}");
    }

    #[test]
    fn heap_trim_takes_seconds_and_zero_turns_it_off() {
        assert_eq!(parse("").unwrap().heap_trim, DEFAULT_HEAP_TRIM);
        assert_eq!(
            parse("heap_trim 30s").unwrap().heap_trim,
            Duration::from_secs(30)
        );
        assert!(parse("heap_trim 0").unwrap().heap_trim.is_zero());
        assert_eq!(
            parse("heap_trim 86400").unwrap().heap_trim,
            Duration::from_secs(86_400)
        );
        for bad in [
            "heap_trim",
            "heap_trim often",
            "heap_trim -1",
            "heap_trim 86401",
        ] {
            let e = parse(bad).expect_err(bad);
            assert_eq!(e.key, "heap_trim", "{bad}: {e}");
        }
    }

    #[test]
    fn metrics_listen_takes_an_address_and_port() {
        assert_eq!(parse("").unwrap().metrics_listen, None, "off by default");
        for (text, want) in [
            ("metrics_listen 127.0.0.1:9464", "127.0.0.1:9464"),
            (
                "metrics_listen   0.0.0.0:80  # all interfaces",
                "0.0.0.0:80",
            ),
            ("metrics_listen [::1]:9464", "[::1]:9464"),
            ("metrics_listen 127.0.0.1:0", "127.0.0.1:0"),
        ] {
            let c = parse(text).expect(text);
            assert_eq!(c.metrics_listen, Some(want.parse().unwrap()), "{text}");
        }
        for bad in [
            "metrics_listen",
            "metrics_listen localhost:9464",
            "metrics_listen 127.0.0.1",
            "metrics_listen 9464",
            "metrics_listen :9464",
            "metrics_listen 127.0.0.1:65536",
            "metrics_listen 127.0.0.1:x",
            "metrics_listen ::1:9464",
            "metrics_listen http://127.0.0.1:9464/metrics",
            "metrics_listen 127.0.0.1:9464 127.0.0.1:9465",
        ] {
            let e = parse(&format!("tag t\n{bad}")).expect_err(bad);
            assert_eq!(
                (e.line, e.key.as_str()),
                (2, "metrics_listen"),
                "{bad}: {e}"
            );
            if bad != "metrics_listen" {
                assert!(e.msg.contains("like 127.0.0.1:9464"), "{bad}: {e}");
            }
        }
    }

    #[test]
    fn default_access_is_self_and_root() {
        let c = Config::embedded();
        assert!(c.allows("v", 500, 500, 500));
        assert!(c.allows("v", 0, 0, 500));
        assert!(!c.allows("v", 501, 500, 500));
    }
}
