//! tessera-eventd: will lock the sessions opened with a smart card when that
//! card is pulled. This version only identifies itself.

use std::process::ExitCode;

use clap::Parser;

/// Locks the sessions opened with a smart card when that card is pulled.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {}

fn main() -> ExitCode {
    Cli::parse();
    eprintln!(
        "tessera-eventd {}: the card-removal watcher is not part of this release; \
         nothing to run",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
