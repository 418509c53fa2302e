//! `cargo bench --bench network` (issue 12): the network connectors against real servers on
//! loopback, each beside a native baseline doing the same work from the bench process.
//! Prints figures and ratios. Needs `mosquitto` and `mosquitto-clients` (the "MQTT
//! connectors" block of `.ci/run`).

#[path = "../common/mod.rs"]
mod common;
#[path = "../../../tests/common/mod.rs"]
mod harness;
mod http;
mod mqtt;

fn main() -> anyhow::Result<()> {
    http::run()?;
    mqtt::run();
    Ok(())
}
