//! `quicksilver-loadtest`: a load-test harness for Mercure hubs.
//!
//! It speaks Mercure over HTTP only (it links none of the hub's crates), so it measures any hub:
//! subscribers hold SSE connections, publishers POST updates whose data carries a small JSON
//! header (`seq`, publish time, lane, topic). Receivers compute publish → receive latency and
//! check every (lane, topic) sequence for loss, duplicates and reordering against the
//! publisher's manifest of acknowledged updates. A run with any of those prints
//! `LOSS DETECTED` and exits 1; connect or publish errors exit 2.
//!
//! # Layout
//! - [`cli`] — the scenarios and their flags; [`scenario`] turns them into a run setup.
//! - [`plan`] — what each subscriber selects and shows, shared by every worker process.
//! - [`run`] — the parent: hub readings, phases, publishing, report. [`workers`] starts and talks
//!   to workers, in-process or as child processes over [`control`]'s JSON lines.
//! - [`worker`] — drives one share of the subscribers: [`subscriber`] (an SSE connection per
//!   subscriber over [`http1`], a minimal HTTP/1.1 client)
//!   and [`slow_subscriber`] (never reads), ordered through
//!   [`directive`].
//! - [`sse`], [`header`], [`tracker`], [`manifest`] — parsing and accounting of deliveries.
//! - [`publisher`] — paced sequential lanes and the publish book; [`token`] mints JWTs.
//! - [`recorder`], [`latency`] — histograms and the per-second timeline.
//! - [`procstat`], [`metrics`] — hub CPU/RSS from `/proc` and Prometheus scrapes.
//! - [`report`], [`chart`] — the JSON report, the human summary and the SVG chart.
//! - [`net`], [`clock`] — endpoints, sockets bound to source addresses, clocks.

mod chart;
mod cli;
mod clock;
mod control;
mod directive;
mod header;
mod http1;
mod latency;
mod manifest;
mod metrics;
mod nchan;
mod net;
mod plan;
mod procstat;
mod publisher;
mod recorder;
mod report;
mod run;
mod scenario;
mod slow_subscriber;
mod sse;
mod subscriber;
#[cfg(test)]
mod test_hub;
mod token;
mod tracker;
mod worker;
mod workers;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use crate::cli::{Cli, Command};
use crate::report::Verdict;

fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_open_files_limit();
    // One thread per process: a worker process is meant to own one core, and single-threaded
    // subscribers share their recorders without contention. Use --processes for more cores.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match cli.command {
        Command::Worker => match runtime.block_on(control::serve_stdio()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("worker error: {e:#}");
                ExitCode::from(3)
            }
        },
        command => match runtime.block_on(run_scenario(command)) {
            Ok(verdict) => match verdict {
                Verdict::Clean => ExitCode::SUCCESS,
                Verdict::Loss => ExitCode::from(1),
                Verdict::Errors => ExitCode::from(2),
            },
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(3)
            }
        },
    }
}

/// Runs a scenario, prints and writes its report.
async fn run_scenario(command: Command) -> anyhow::Result<Verdict> {
    let setup = scenario::build(command)?;
    let tolerate =
        setup.common.tolerate_errors || setup.resume.as_ref().is_some_and(|r| r.kill_pid.is_some());
    let json_out = setup.common.json_out.clone();
    let chart_out = setup.common.chart_out.clone();
    let mut report = run::execute(setup).await?;
    let verdict = report.judge(tolerate);
    print!("{}", report.summary());
    if let Some(path) = json_out {
        let json = serde_json::to_vec_pretty(&report)?;
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = chart_out {
        chart::write_svg(&path, report.scenario, &report.timeline)?;
    }
    Ok(verdict)
}

/// Raises the soft limit on open files to the hard limit: every subscriber is a socket.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            eprintln!("warning: cannot raise the open files limit: {e}");
        }
    }
}
