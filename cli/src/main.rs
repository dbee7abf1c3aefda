//! `berth`: the command-line tool for Berth. `args` is the command line, `commands` what
//! each command does, `client` the server, `config` the stored login, `units` and `output`
//! the human side.

mod args;
mod client;
mod commands;
mod config;
mod error;
mod output;
mod units;

use clap::Parser;

use args::Cli;

fn main() {
    // Like other Unix tools, end quietly when the reader of stdout goes away (`berth ps | head`).
    // SAFETY: setting a signal's disposition to the default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // A bug, or a standard output that cannot be written (a full disk), must still read as
    // one line and exit 1, never as a backtrace. The hook itself never panics.
    std::panic::set_hook(Box::new(|info| {
        use std::io::Write;
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        let line = match what.strip_prefix("failed printing to stdout: ") {
            Some(reason) => format!("error: cannot write to standard output: {reason}\n"),
            None => format!("error: berth failed unexpectedly ({what}); please report it\n"),
        };
        let _ = std::io::stderr().write_all(line.as_bytes());
        std::process::exit(1);
    }));
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(commands::run(cli.global, cli.command)) {
        Ok(()) => 0,
        Err(e) => {
            anstream::eprintln!("error: {e}");
            for line in e.field_lines() {
                anstream::eprintln!("{line}");
            }
            e.exit_code()
        }
    };
    std::process::exit(code);
}
