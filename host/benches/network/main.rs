//! Network benchmark (issue 12): connectors that talk to real servers, each beside a native
//! baseline doing the same requests from the host process. Prints figures and ratios.
//!
//! Run: `cargo bench --bench network`.

#[path = "../common/mod.rs"]
mod common;
mod http;

fn main() -> anyhow::Result<()> {
    http::run()?;
    Ok(())
}
