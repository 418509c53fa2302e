//! `cargo bench --bench network`: the network connectors against real servers on loopback,
//! each beside a native baseline that runs the same work from the bench process.
//! Needs `mosquitto` and `mosquitto-clients` (the "MQTT connectors" block of `.ci/run`).

#[path = "../../../tests/common/mod.rs"]
mod harness;
mod mqtt;

fn main() {
    mqtt::run();
}
