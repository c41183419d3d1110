use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = kctl::cli::Cli::parse();
    match kctl::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(report) => {
            eprintln!("{report:?}");
            if kctl::cli::is_usage_error(&report) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
