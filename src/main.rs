#![forbid(unsafe_code)]

use clap::Parser;

fn main() {
    let cli = rpiimg::cli::Cli::parse();
    match rpiimg::commands::run(cli) {
        Ok(status) => std::process::exit(status),
        Err(e) => {
            eprintln!("rpiimg: error: {}", e.for_terminal());
            std::process::exit(2);
        }
    }
}
