//! Upstream host names, resolved off the cores.
//!
//! ```text
//! core i ── Resolver::resolve(host) ──┬─ cached and fresh: at once
//!                                     └─ else ─► channel ─► resolver thread (tokio, hickory:
//!                                        ◄── oneshot ◄──    /etc/hosts, /etc/resolv.conf or
//!                                                          `edge.resolver`) ─► DNS
//! ```
//!
//! A core never calls `getaddrinfo` or waits on a socket it does not poll:
//! a name that takes seconds to resolve stalls only the connections that
//! need it (their dial times out as a 504), never the core. One thread
//! serves every core; each core keeps its own cache (no locks on the hot
//! path) for as long as the records' TTL says (hickory's `valid_until`),
//! and asks again after that.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

/// Addresses of a name and until when they hold.
type Answer = Result<(Vec<IpAddr>, Instant), String>;

struct Query {
    host: String,
    reply: oneshot::Sender<Answer>,
}

/// The resolver thread's address: cheap to clone, one per process.
#[derive(Clone, Debug)]
pub struct ResolverThread {
    tx: mpsc::UnboundedSender<Query>,
}

/// Starts the resolver thread: the system's configuration (hosts file and
/// `/etc/resolv.conf`), or only `nameserver` (UDP and TCP) when given.
pub fn spawn(nameserver: Option<SocketAddr>) -> std::io::Result<ResolverThread> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Query>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("resolver".into())
        .spawn(move || {
            rt.block_on(async move {
                let resolver = build(nameserver);
                while let Some(q) = rx.recv().await {
                    let resolver = resolver.clone();
                    tokio::spawn(async move {
                        let answer = match &resolver {
                            Err(e) => Err(e.clone()),
                            Ok(r) => r
                                .lookup_ip(q.host.as_str())
                                .await
                                .map(|l| (l.iter().collect(), l.valid_until()))
                                .map_err(|e| e.to_string()),
                        };
                        let _ = q.reply.send(answer);
                    });
                }
            })
        })?;
    Ok(ResolverThread { tx })
}

type Hickory = hickory_resolver::Resolver<hickory_resolver::net::runtime::TokioRuntimeProvider>;

fn build(nameserver: Option<SocketAddr>) -> Result<Hickory, String> {
    use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    let builder = match nameserver {
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            ns.connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                .into_iter()
                .map(|mut c| {
                    c.port = addr.port();
                    c
                })
                .collect();
            hickory_resolver::Resolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            )
        }
        None => hickory_resolver::Resolver::builder_tokio().map_err(|e| {
            tracing::warn!(
                "resolver: no system configuration ({e}): upstream names will not resolve"
            );
            format!("no resolver configuration: {e}")
        })?,
    };
    builder.build().map_err(|e| e.to_string())
}

/// One core's resolver: a cache in front of the resolver thread.
#[derive(Debug)]
pub struct Resolver {
    thread: ResolverThread,
    cache: RefCell<HashMap<String, (Vec<IpAddr>, Instant)>>,
}

/// Names cached per core before the cache is cleared of stale entries.
const MAX_CACHED: usize = 4096;

impl Resolver {
    /// A core's resolver on `thread`.
    pub fn new(thread: ResolverThread) -> Resolver {
        Resolver {
            thread,
            cache: RefCell::default(),
        }
    }

    /// The addresses of `host` (a DNS name; IP literals never come here),
    /// with `port`. Waits for the resolver thread when the cache has no
    /// fresh answer; the caller bounds the wait.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let now = Instant::now();
        let cached = self.cache.borrow().get(host).cloned();
        let ips = match cached {
            Some((ips, until)) if until > now => ips,
            _ => {
                let (reply, answer) = oneshot::channel();
                let q = Query {
                    host: host.to_owned(),
                    reply,
                };
                self.thread
                    .tx
                    .send(q)
                    .map_err(|_| "resolver thread gone".to_string())?;
                let (ips, until) = answer
                    .await
                    .map_err(|_| "resolver thread gone".to_string())??;
                let mut cache = self.cache.borrow_mut();
                if cache.len() >= MAX_CACHED {
                    cache.retain(|_, (_, u)| *u > now);
                }
                cache.insert(host.to_owned(), (ips.clone(), until));
                ips
            }
        };
        if ips.is_empty() {
            return Err(format!("no address for {host}"));
        }
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }
}
