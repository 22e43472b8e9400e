//! The `outreach` binary: parse the command line, set up logging, run.

use clap::Parser;

fn main() {
    // Logging is set up by `cli::run` once the config (which may set the
    // daemon's level and format) is read.
    let cli = outreach::cli::Cli::parse();
    // A command whose output goes into a pipe that closes early
    // (`outreach plugins | head`) ends quietly, as Unix tools do, instead
    // of panicking on the failed write. The daemon and the escrow helper
    // keep ignoring SIGPIPE: they must finish their work whoever stops
    // reading.
    if !matches!(
        cli.command,
        outreach::cli::Command::Daemon { .. } | outreach::cli::Command::Escrow { .. }
    ) {
        // SAFETY: called before any other thread exists; SIG_DFL is a
        // valid disposition for SIGPIPE.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
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
                    || c.is::<outreach::error::BadInput>()
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
