//! Network namespaces joined by veth pairs: the server in one, clients in
//! others. Made by the test, removed when dropped (also on failure).

use std::fs::File;
use std::process::Command;

/// Runs `ip ARGS`; Err with its stderr.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A server namespace and one client namespace per client, each joined
/// to the server's by its own veth pair, on link-local addresses that
/// exist only inside these namespaces.
pub struct Topology {
    pub server_ns: String,
    pub client_ns: Vec<String>,
    /// The server's address as each client sees it.
    pub server_addr: Vec<String>,
    /// The veth end inside each client namespace.
    pub client_if: Vec<String>,
    /// The veth end in the server's namespace (made in the test's own
    /// first, so removed by name too).
    server_if: Vec<String>,
}

impl Topology {
    /// Makes it; Err says why it could not (not root, no `ip`, no netns).
    pub fn new(tag: &str, clients: usize) -> Result<Topology, String> {
        let pid = std::process::id() % 100_000;
        let server_ns = format!("rfs{tag}{pid}s");
        let mut t = Topology {
            server_ns: server_ns.clone(),
            client_ns: Vec::new(),
            server_addr: Vec::new(),
            client_if: Vec::new(),
            server_if: Vec::new(),
        };
        ip(&["netns", "add", &server_ns])?;
        ip(&["-n", &server_ns, "link", "set", "lo", "up"])?;
        for i in 0..clients {
            let ns = format!("rfs{tag}{pid}c{i}");
            ip(&["netns", "add", &ns])?;
            t.client_ns.push(ns.clone());
            // Interface names: at most 15 bytes, unique per test.
            let t1 = tag.chars().next().unwrap_or('x');
            let a = format!("rs{t1}{pid}{i}");
            let b = format!("rc{t1}{pid}{i}");
            ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
            t.server_if.push(a.clone());
            ip(&["link", "set", &a, "netns", &server_ns])?;
            ip(&["link", "set", &b, "netns", &ns])?;
            let net = 231 + i;
            let srv = format!("169.254.{net}.1");
            ip(&[
                "-n",
                &server_ns,
                "addr",
                "add",
                &format!("{srv}/24"),
                "dev",
                &a,
            ])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("169.254.{net}.2/24"),
                "dev",
                &b,
            ])?;
            ip(&["-n", &server_ns, "link", "set", &a, "up"])?;
            ip(&["-n", &ns, "link", "set", &b, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            t.server_addr.push(srv);
            t.client_if.push(b);
        }
        Ok(t)
    }

    /// Takes client `i`'s link down or up.
    pub fn link(&self, i: usize, up: bool) -> Result<(), String> {
        ip(&[
            "-n",
            &self.client_ns[i],
            "link",
            "set",
            &self.client_if[i],
            if up { "up" } else { "down" },
        ])
    }

    /// Runs `f` on a thread inside client namespace `i`: sockets it (and
    /// threads it spawns) make live there.
    pub fn in_client<T: Send + 'static>(
        &self,
        i: usize,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.client_ns[i]);
        std::thread::spawn(move || {
            let ns = File::open(&path).expect("open the namespace");
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends inside it.
        for ns in &self.client_ns {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["netns", "del", &self.server_ns]);
        for a in &self.server_if {
            let _ = ip(&["link", "del", a]);
        }
    }
}

/// A topology, or None with the reason printed (a failure under CI).
pub fn make_or_skip(tag: &str, clients: usize) -> Option<Topology> {
    match Topology::new(tag, clients) {
        Ok(t) => Some(t),
        Err(why) => {
            if super::in_ci() {
                panic!("CI=true: cannot make network namespaces: {why}");
            }
            eprintln!("skipped: cannot make network namespaces: {why}");
            None
        }
    }
}
