//! A real etcd cluster on loopback (Debian's `etcd-server`), one process per
//! member, each with its own data directory and log in a temp directory.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::free_port;

/// One member.
struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// A cluster of `n` members.
pub struct Cluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    initial: String,
    tls: Option<Tls>,
}

/// Certificates for a cluster that speaks TLS to its clients and asks them
/// for a certificate (`--client-cert-auth`). PEM files in the cluster's
/// directory.
pub struct Tls {
    /// The CA that signed both certificates.
    pub ca: PathBuf,
    /// Client certificate and key.
    pub client: (PathBuf, PathBuf),
    server: (PathBuf, PathBuf),
}

impl Tls {
    fn make(dir: &std::path::Path) -> Tls {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let leaf = |names: Vec<String>, stem: &str| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &ca_cert, &ca_key)
                .unwrap();
            let (c, k) = (
                dir.join(format!("{stem}.pem")),
                dir.join(format!("{stem}.key")),
            );
            std::fs::write(&c, cert.pem()).unwrap();
            std::fs::write(&k, key.serialize_pem()).unwrap();
            (c, k)
        };
        let server = leaf(vec!["127.0.0.1".into(), "localhost".into()], "server");
        let client = leaf(vec!["switchyard-node".into()], "client");
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca_cert.pem()).unwrap();
        Tls {
            ca: ca_path,
            client,
            server,
        }
    }
}

/// The `etcd` binary (`SWITCHYARD_ETCD`, else `etcd` on the PATH).
fn etcd_bin() -> String {
    std::env::var("SWITCHYARD_ETCD").unwrap_or_else(|_| "etcd".into())
}

impl Cluster {
    /// Starts `n` members and waits until the cluster has a leader.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, false)
    }

    /// The cluster's certificates, if it speaks TLS.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// As [`Cluster::start`]; with `tls`, clients speak TLS and must
    /// present a certificate of the cluster's CA.
    pub fn start_with(n: usize, tls: bool) -> Cluster {
        let ok = Command::new(etcd_bin())
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "etcd is not installed: apt-get install etcd-server (scripts/test.sh does)"
        );
        // A port picked free can be taken by another test before etcd binds
        // it: such a member exits, and the cluster starts again on new ports.
        for _ in 0..3 {
            let mut c = Cluster::spawn_all(n, tls);
            if c.ready_or_exited(Duration::from_secs(30)) {
                return c;
            }
            eprintln!(
                "an etcd member exited at start; starting the cluster again:\n{}",
                c.logs()
            );
            c.kill_all();
        }
        panic!("etcd did not start in 3 attempts");
    }

    fn spawn_all(n: usize, tls: bool) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let tls = tls.then(|| Tls::make(dir.path()));
        let mut c = Cluster {
            dir,
            members,
            initial,
            tls,
        };
        for i in 0..n {
            c.spawn(i);
        }
        c
    }

    /// Waits until every member answers and one leads (`true`), or one of
    /// them exits (`false`).
    fn ready_or_exited(&mut self, within: Duration) -> bool {
        let t0 = Instant::now();
        loop {
            let exited = self.members.iter_mut().any(|m| {
                m.child
                    .as_mut()
                    .is_some_and(|c| !matches!(c.try_wait(), Ok(None)))
            });
            if exited {
                return false;
            }
            if self.answering() == self.members.len() && self.leader().is_some() {
                return true;
            }
            assert!(
                t0.elapsed() < within,
                "etcd members not answering:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn spawn(&mut self, i: usize) {
        let data: PathBuf = self.dir.path().join(&self.members[i].name);
        let log = self
            .dir
            .path()
            .join(format!("{}.log", self.members[i].name));
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let tls_args: Vec<String> = match &self.tls {
            None => vec![],
            Some(t) => vec![
                format!("--cert-file={}", t.server.0.display()),
                format!("--key-file={}", t.server.1.display()),
                format!("--trusted-ca-file={}", t.ca.display()),
                "--client-cert-auth".into(),
            ],
        };
        let m = &mut self.members[i];
        let child = Command::new(etcd_bin())
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--listen-client-urls",
                &format!("{scheme}://127.0.0.1:{}", m.client),
                "--advertise-client-urls",
                &format!("{scheme}://127.0.0.1:{}", m.client),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-cluster",
                &self.initial,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "switchyard-test",
                // etcd's defaults: elections take about a second, and a
                // loaded 2-core machine does not miss heartbeats into
                // repeated elections.
                "--heartbeat-interval",
                "100",
                "--election-timeout",
                "1000",
            ])
            .args(&tls_args)
            .stdout(std::fs::File::create(log.with_extension("out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("etcd starts");
        m.child = Some(child);
    }

    /// `host:port,host:port,…` of every member.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn endpoint_list(&self, only_running: bool) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| !only_running || m.child.is_some())
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect()
    }

    /// `kill -9` member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills every member.
    pub fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }

    /// Starts member `i` again on its data directory.
    pub fn restart(&mut self, i: usize) {
        if self.members[i].child.is_none() {
            self.spawn(i);
        }
    }

    /// Starts every stopped member and waits for a leader.
    pub fn restart_all(&mut self) {
        for i in 0..self.members.len() {
            self.restart(i);
        }
        assert!(
            self.ready_or_exited(Duration::from_secs(30)),
            "an etcd member exited on restart:\n{}",
            self.logs()
        );
    }

    /// The index of the current leader, once the running members agree on
    /// one (panics after `within`).
    pub fn wait_leader(&self, within: Duration) -> usize {
        let t0 = Instant::now();
        loop {
            if let Some(i) = self.leader() {
                return i;
            }
            assert!(
                t0.elapsed() < within,
                "etcd has no leader after {within:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn answering(&self) -> usize {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return 0;
        };
        rt.block_on(async {
            let mut n = 0;
            for m in self.members.iter().filter(|m| m.child.is_some()) {
                let ep = format!("127.0.0.1:{}", m.client);
                if let Ok(mut c) = self.connect(vec![ep], None).await {
                    if c.status().await.is_ok_and(|s| s.leader() != 0) {
                        n += 1;
                    }
                }
            }
            n
        })
    }

    fn leader(&self) -> Option<usize> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async {
            for (i, m) in self.members.iter().enumerate() {
                if m.child.is_none() {
                    continue;
                }
                let ep = format!("127.0.0.1:{}", m.client);
                let Ok(mut c) = self.connect(vec![ep], None).await else {
                    continue;
                };
                let Ok(s) = c.status().await else { continue };
                let me = s.header().map(|h| h.member_id()).unwrap_or(0);
                if s.leader() != 0 && s.leader() == me {
                    return Some(i);
                }
            }
            None
        })
    }

    /// A client of the running members (TLS with the client certificate if
    /// the cluster speaks it; `user` as (name, password)).
    pub async fn connect(
        &self,
        endpoints: Vec<String>,
        user: Option<(&str, &str)>,
    ) -> Result<etcd_client::Client, etcd_client::Error> {
        let endpoints = if endpoints.is_empty() {
            self.endpoint_list(true)
        } else {
            endpoints
        };
        let mut opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(500))
            .with_timeout(Duration::from_millis(2000));
        if let Some((u, p)) = user {
            opts = opts.with_user(u, p);
        }
        if let Some(t) = &self.tls {
            let pem = |p: &PathBuf| std::fs::read(p).unwrap();
            opts = opts.with_tls(
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(pem(&t.ca)))
                    .identity(etcd_client::Identity::from_pem(
                        pem(&t.client.0),
                        pem(&t.client.1),
                    )),
            );
        }
        etcd_client::Client::connect(endpoints, Some(opts)).await
    }

    /// Every key and value under `prefix`.
    pub async fn dump(&self, prefix: &str) -> Vec<(String, String)> {
        let mut c = self.connect(vec![], None).await.unwrap();
        let r = c
            .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .unwrap();
        r.kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                )
            })
            .collect()
    }

    /// The members' logs.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for m in &self.members {
            let p = self.dir.path().join(format!("{}.log", m.name));
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            s.push_str(&format!("== {}\n", p.display()));
            for l in tail.into_iter().rev() {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}
