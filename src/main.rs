#![forbid(unsafe_code)]

use clap::Parser;

fn main() {
    let cli = rpiimg::cli::Cli::parse();
    let json = rpiimg::commands::wants_json(&cli);
    match rpiimg::commands::run(cli) {
        Ok(status) => std::process::exit(status),
        Err(e) => {
            // A --json run gets a JSON error object on stdout too (kind
            // and message), so scripts match on the kind, not the text.
            if json {
                println!("{}", e.to_json());
            }
            eprintln!("rpiimg: error: {}", e.for_terminal());
            std::process::exit(e.exit_status());
        }
    }
}
