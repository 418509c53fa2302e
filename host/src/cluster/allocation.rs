//! Who runs what: the leader turns the live workers and the connectors' task counts into an
//! [`Assignment`]. Pure functions, so every strategy is tested without a cluster.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How connectors and tasks are spread over the workers (`--alloc-strategy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    /// RocketMQ Connect's default: workers sorted by id; connectors in name order, then every
    /// connector's tasks in order, round-robin with one shared counter.
    #[default]
    RoundRobin,
    /// A hash ring of the workers (virtual nodes each): a join or leave moves only the tasks
    /// of the ring segments that changed owner.
    ConsistentHash,
}

/// Virtual nodes per worker on the consistent-hash ring.
const VIRTUAL_NODES: usize = 64;

/// The connectors and tasks each worker runs; written by the leader, read by every worker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Bumped by the leader at every change.
    pub generation: u64,
    /// Connector name → the worker that owns the connector (shown by `/getAllocatedInfo`).
    pub connectors: BTreeMap<String, String>,
    /// Connector name → the worker of each task, by task number.
    pub tasks: BTreeMap<String, Vec<String>>,
}

impl Assignment {
    /// The tasks of `connector` that `worker` runs.
    pub fn tasks_of(&self, connector: &str, worker: &str) -> Vec<usize> {
        self.tasks
            .get(connector)
            .map(|owners| {
                owners
                    .iter()
                    .enumerate()
                    .filter(|(_, owner)| *owner == worker)
                    .map(|(task, _)| task)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The worker that runs one task, if any.
    pub fn owner(&self, connector: &str, task: usize) -> Option<&str> {
        self.tasks.get(connector)?.get(task).map(String::as_str)
    }

    /// Same placement, whatever the generation.
    pub fn same_placement(&self, other: &Assignment) -> bool {
        self.connectors == other.connectors && self.tasks == other.tasks
    }
}

/// Assigns `connectors` (name → number of tasks; only those that should run) to `workers`.
/// No workers, no assignment.
pub fn allocate(
    strategy: Strategy,
    workers: &[String],
    connectors: &BTreeMap<String, usize>,
) -> Assignment {
    let mut workers: Vec<&String> = workers.iter().collect();
    workers.sort();
    workers.dedup();
    if workers.is_empty() {
        return Assignment::default();
    }
    match strategy {
        Strategy::RoundRobin => round_robin(&workers, connectors),
        Strategy::ConsistentHash => consistent_hash(&workers, connectors),
    }
}

fn round_robin(workers: &[&String], connectors: &BTreeMap<String, usize>) -> Assignment {
    let mut counter = 0usize;
    let mut next = || {
        let worker = workers[counter % workers.len()].clone();
        counter += 1;
        worker
    };
    let mut assignment = Assignment::default();
    for name in connectors.keys() {
        assignment.connectors.insert(name.clone(), next());
    }
    for (name, tasks) in connectors {
        let owners = (0..*tasks).map(|_| next()).collect();
        assignment.tasks.insert(name.clone(), owners);
    }
    assignment
}

fn consistent_hash(workers: &[&String], connectors: &BTreeMap<String, usize>) -> Assignment {
    let mut ring: Vec<(u64, &String)> = workers
        .iter()
        .flat_map(|w| (0..VIRTUAL_NODES).map(move |v| (hash(&format!("{w}#{v}")), *w)))
        .collect();
    ring.sort();
    let route = |key: &str| {
        let point = hash(key);
        let i = ring.partition_point(|(h, _)| *h < point) % ring.len();
        ring[i].1.clone()
    };
    let mut assignment = Assignment::default();
    for (name, tasks) in connectors {
        assignment.connectors.insert(name.clone(), route(name));
        let owners = (0..*tasks).map(|t| route(&format!("{name}/{t}"))).collect();
        assignment.tasks.insert(name.clone(), owners);
    }
    assignment
}

fn hash(key: &str) -> u64 {
    let digest = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn connectors(list: &[(&str, usize)]) -> BTreeMap<String, usize> {
        list.iter().map(|(n, t)| (n.to_string(), *t)).collect()
    }

    #[test]
    fn round_robin_shares_one_counter_over_connectors_then_tasks() {
        let a = allocate(
            Strategy::RoundRobin,
            &workers(&["w2", "w1", "w3"]),
            &connectors(&[("b", 2), ("a", 3)]),
        );
        assert_eq!(a.connectors["a"], "w1");
        assert_eq!(a.connectors["b"], "w2");
        // The counter goes on from 2 over a's tasks, then b's.
        assert_eq!(a.tasks["a"], workers(&["w3", "w1", "w2"]));
        assert_eq!(a.tasks["b"], workers(&["w3", "w1"]));
        assert_eq!(a.tasks_of("a", "w1"), vec![1]);
        assert_eq!(a.owner("b", 1), Some("w1"));
    }

    #[test]
    fn no_workers_no_assignment() {
        let a = allocate(Strategy::RoundRobin, &[], &connectors(&[("a", 2)]));
        assert!(a.tasks.is_empty());
    }

    #[test]
    fn consistent_hash_uses_every_worker_and_moves_little_on_a_join() {
        let many = connectors(&[("a", 30), ("b", 30)]);
        let three = allocate(
            Strategy::ConsistentHash,
            &workers(&["w1", "w2", "w3"]),
            &many,
        );
        for w in ["w1", "w2", "w3"] {
            assert!(!three.tasks_of("a", w).is_empty() || !three.tasks_of("b", w).is_empty());
        }
        let four = allocate(
            Strategy::ConsistentHash,
            &workers(&["w1", "w2", "w3", "w4"]),
            &many,
        );
        let moved = ["a", "b"]
            .iter()
            .flat_map(|c| three.tasks[*c].iter().zip(&four.tasks[*c]))
            .filter(|(before, after)| before != after)
            .count();
        // Every task that moved went to the new worker; about a quarter moved.
        let to_new = ["a", "b"]
            .iter()
            .flat_map(|c| three.tasks[*c].iter().zip(&four.tasks[*c]))
            .filter(|(before, after)| before != after && *after == "w4")
            .count();
        assert_eq!(moved, to_new);
        assert!(moved > 0 && moved < 40, "moved {moved} of 60");
    }

    #[test]
    fn same_placement_ignores_generation() {
        let mut a = allocate(
            Strategy::RoundRobin,
            &workers(&["w1"]),
            &connectors(&[("a", 1)]),
        );
        let b = a.clone();
        a.generation = 7;
        assert!(a.same_placement(&b));
    }
}
