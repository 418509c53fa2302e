//! `wasm-connect plugin check FILE.wasm`: validates a component offline.

use std::path::Path;

/// Checks `file` and prints what it declares; an error says why this host cannot run it.
pub async fn run(file: &Path) -> anyhow::Result<()> {
    anyhow::bail!("`plugin check` is not implemented yet (issue 5): {}", file.display())
}
