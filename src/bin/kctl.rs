use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = kctl::cli::Cli::parse();
    match kctl::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(report) => {
            if let Some(kctl::ops::CommandExited(code)) = report.downcast_ref() {
                return ExitCode::from(u8::try_from(*code).unwrap_or(1));
            }
            if let Some(failed) = report.downcast_ref::<kctl::ops::FailedWith>() {
                eprintln!("{}", kctl::ui::report_text(&failed.report));
                return ExitCode::from(failed.code);
            }
            eprintln!("{}", kctl::ui::report_text(&report));
            if kctl::cli::is_usage_error(&report) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
