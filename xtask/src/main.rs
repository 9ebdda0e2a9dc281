//! Project automation, run as `cargo xtask <command>`:
//!
//! - `ci`: everything CI checks, in fail-fast order: formatting, clippy with warnings as
//!   errors, then the whole test suite (unit tests and the integration binary).
//! - `help`: this list.
//!
//! Tidy checks (file headers, forbidden macros, crate-graph absences) are ordinary tests in
//! `src/tidy.rs`, so `cargo test` runs them too.

use std::process::Command;

use anyhow::{Context, bail};

#[cfg(test)]
mod tidy;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("help") | None => {
            println!("cargo xtask ci    formatting, clippy and all tests, as CI runs them");
            Ok(())
        }
        Some(other) => bail!("unknown xtask command `{other}`; try `cargo xtask help`"),
    }
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(&cargo).args(args).status().with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        bail!("`cargo {}` failed", args.join(" "));
    }
    Ok(())
}

fn ci() -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&["clippy", "--workspace", "--all-targets", "--quiet", "--", "-D", "warnings"])?;
    cargo(&["test", "--workspace", "--quiet"])?;
    eprintln!("ci passed in {:.0?}", started.elapsed());
    Ok(())
}
