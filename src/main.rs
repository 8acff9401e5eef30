#![forbid(unsafe_code)]

use clap::Parser;

fn main() {
    let cli = rpiimg::cli::Cli::parse();
    if let Err(e) = rpiimg::commands::run(cli) {
        eprintln!("rpiimg: error: {e}");
        std::process::exit(2);
    }
}
