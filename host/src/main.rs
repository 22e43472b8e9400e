//! The `outreach` binary: parse the command line, set up logging, run.

use clap::Parser;

fn main() {
    // Logging is set up by `cli::run` once the config (which may set the
    // daemon's level and format) is read.
    let cli = outreach::cli::Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(outreach::cli::run(cli));
    // Escrow helpers this run started finish and are reaped before it exits.
    runtime.block_on(outreach::escrow::close_helpers());
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            let bad_input = e.chain().any(|c| {
                c.is::<outreach::config::ConfigError>()
                    || c.is::<outreach::accounts::BadInput>()
                    || c.is::<outreach::store::StoreError>()
                    || c.is::<outreach::plugin::PluginError>()
                    || c.downcast_ref::<outreach::outbox::JournalError>()
                        .is_some_and(|j| j.refused())
            });
            if bad_input {
                outreach::cli::EXIT_BAD_INPUT
            } else {
                outreach::cli::EXIT_FAILED
            }
        }
    };
    std::process::exit(code);
}
