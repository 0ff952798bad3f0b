//! The `quicksilver` binary: reads the configuration, sets up logging (and tracing, when the
//! OpenTelemetry variables ask for it), serves until SIGTERM/SIGINT.

use quicksilver_server::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = match Config::from_args(std::env::args_os()) {
        Ok(config) => config,
        Err(e) => e.exit(),
    };
    // Held to the end: dropping it flushes the traces still queued.
    let _telemetry = quicksilver_server::telemetry::init(config.log_format, &config.log)?;
    quicksilver_server::serve(config, shutdown_signal()).await
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
