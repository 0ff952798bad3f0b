//! The `quicksilver` binary: reads the configuration, sets up logging (and tracing, when the
//! OpenTelemetry variables ask for it), serves until SIGTERM/SIGINT.
//!
//! Subcommands are picked before the hub's configuration is read. Two never start the async
//! runtime: `quicksilver healthcheck [--url URL] [--ready]` probes a running hub (see
//! [`quicksilver_server::healthcheck`]), and `quicksilver token …` (or `mercure-token …`, the
//! reference hub's name) mints a token for one (see [`quicksilver_server::token`]).
//! `quicksilver revoke …` revokes tokens on a running hub (see [`quicksilver_server::revoke`]),
//! on a single-threaded runtime of its own for its one HTTP request.

use std::process::ExitCode;

use quicksilver_server::config::{reference_command, Config};
use quicksilver_server::{healthcheck, revoke, token};

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == healthcheck::SUBCOMMAND) {
        return healthcheck::run(args.into_iter().skip(1));
    }
    if args
        .get(1)
        .is_some_and(|a| a == token::SUBCOMMAND || a == token::REFERENCE_SUBCOMMAND)
    {
        return token::run(args.into_iter().skip(1));
    }
    if args.get(1).is_some_and(|a| a == revoke::SUBCOMMAND) {
        return revoke::run(args.into_iter().skip(1));
    }
    // A compose file written for the reference hub's image passes its command line
    // (`caddy run --config /etc/caddy/Caddyfile`) as arguments.
    let (args, notice) = match reference_command::translate(&args) {
        Ok(Some(translated)) => (translated.args, Some(translated.notice)),
        Ok(None) => (args, None),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut config = match Config::from_args(args) {
        Ok(config) => config,
        Err(e) => e.exit(),
    };
    config.notices.extend(notice);
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the hub on a multi-threaded runtime until a shutdown signal.
fn serve(config: Config) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(async {
        // Held to the end: dropping it flushes the traces still queued.
        let _telemetry = quicksilver_server::telemetry::init(config.log_format, &config.log)?;
        quicksilver_server::serve(config, shutdown_signal()).await
    })
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
