//! Spawning the real `ringcached` for end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringcache::client::Client;

/// A running daemon in a temp directory; killed (SIGKILL) on drop.
pub struct DaemonProc {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
}

/// Write a config for a daemon in `dir` (a 64 MiB cache file).
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let config = dir.join("ringcached.conf");
    std::fs::write(
        &config,
        format!(
            "dir {}\nsize 64M\nsocket {}\n{extra}",
            dir.display(),
            dir.join("rc.sock").display()
        ),
    )
    .unwrap();
    config
}

impl DaemonProc {
    /// Start a daemon with `config` and wait until it accepts clients.
    pub fn start(dir: &Path, config: &Path) -> DaemonProc {
        let child = Command::new(super::ringcached_bin::path())
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ringcached");
        let d = DaemonProc {
            child: Some(child),
            dir: dir.to_path_buf(),
            socket: dir.join("rc.sock"),
            config: config.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = Client::connect(&d.socket)
                && c.ping().is_ok()
            {
                break;
            }
            assert!(Instant::now() < deadline, "ringcached did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// A new client connection.
    pub fn client(&self) -> Client {
        Client::connect(&self.socket).expect("connect")
    }

    /// SIGTERM and wait; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        child.wait().expect("wait").success()
    }

    /// SIGKILL and wait.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The value of the daemon's counter `name` (as `ringcache stat` names it).
pub fn stat(c: &mut Client, name: &str) -> u64 {
    c.stats()
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no stat {name}"))
}
