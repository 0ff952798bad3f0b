//! The parent's handle on its workers, in-process or as child processes.
//!
//! With `--processes 1` the single worker runs as a task of the parent (same runtime, no
//! serialisation); with more, each worker is this same executable started as `worker`, fed its
//! [`WorkerSpec`] and commands as JSON lines on stdin and answering with events on stdout. Either
//! way the parent sees the same thing: commands go to every worker, progress lands in a shared
//! table, and `Ready`/`Result`/`Failed` events arrive on one channel. Children are killed when
//! the pool is dropped, so none outlives an aborted run.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::control::{Command, ConnectReport, Event, Progress, WorkerResult, WorkerSpec};
use crate::plan::Plan;
use crate::subscriber::lock;

/// All workers of a run.
pub(crate) struct WorkerPool {
    commands: Vec<mpsc::Sender<Command>>,
    events: mpsc::Receiver<(usize, Event)>,
    progress: Arc<Mutex<Vec<Progress>>>,
    children: Vec<Child>,
}

impl WorkerPool {
    /// Starts `processes` workers sharing the subscribers of `plan`.
    pub(crate) async fn start(plan: &Plan, processes: usize) -> anyhow::Result<Self> {
        let processes = processes.max(1);
        let (merged_tx, events) = mpsc::channel(64);
        let progress = Arc::new(Mutex::new(vec![Progress::default(); processes]));
        let mut pool = Self {
            commands: Vec::new(),
            events,
            progress: progress.clone(),
            children: Vec::new(),
        };
        for shard in 0..processes {
            let spec = WorkerSpec {
                plan: plan.clone(),
                shard,
                shards: processes,
            };
            let (command_tx, command_rx) = mpsc::channel::<Command>(16);
            let (event_tx, event_rx) = mpsc::channel::<Event>(64);
            if processes == 1 {
                tokio::spawn(async move {
                    if let Err(e) =
                        crate::worker::run(spec, command_rx, event_tx.clone(), false).await
                    {
                        let _ = event_tx
                            .send(Event::Failed {
                                message: format!("{e:#}"),
                            })
                            .await;
                    }
                });
            } else {
                pool.children
                    .push(spawn_child(&spec, command_rx, event_tx).await?);
            }
            pool.commands.push(command_tx);
            tokio::spawn(forward(
                shard,
                event_rx,
                merged_tx.clone(),
                progress.clone(),
            ));
        }
        Ok(pool)
    }

    /// Sends `command` to every worker.
    pub(crate) async fn broadcast(&self, command: Command) {
        for tx in &self.commands {
            let _ = tx.send(command.clone()).await;
        }
    }

    /// A handle that reads the workers' latest progress.
    pub(crate) fn progress_view(&self) -> ProgressView {
        ProgressView(self.progress.clone())
    }

    /// Waits until every worker reported `Ready`.
    pub(crate) async fn wait_ready(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<Vec<ConnectReport>> {
        let mut out: Vec<Option<ConnectReport>> = vec![None; self.commands.len()];
        let deadline = Instant::now() + timeout;
        while out.iter().any(Option::is_none) {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some((i, Event::Ready(r)))) => out[i] = Some(r),
                Ok(Some((i, Event::Failed { message }))) => bail!("worker {i} failed: {message}"),
                Ok(Some(_)) => {}
                Ok(None) => bail!("workers went away before they were ready"),
                Err(_) => bail!("workers not ready within {timeout:?}"),
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Waits for every worker's result.
    pub(crate) async fn collect(&mut self, timeout: Duration) -> anyhow::Result<Vec<WorkerResult>> {
        let mut out: Vec<Option<WorkerResult>> = vec![None; self.commands.len()];
        let deadline = Instant::now() + timeout;
        while out.iter().any(Option::is_none) {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some((i, Event::Result(r)))) => out[i] = Some(*r),
                Ok(Some((i, Event::Failed { message }))) => bail!("worker {i} failed: {message}"),
                Ok(Some(_)) => {}
                Ok(None) => bail!("workers went away before reporting"),
                Err(_) => bail!("worker results not in within {timeout:?}"),
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Waits (briefly) for child processes to exit after their last report.
    pub(crate) async fn shutdown(mut self) {
        self.commands.clear();
        for child in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
            }
        }
    }
}

/// The latest progress of every worker.
#[derive(Clone, Debug)]
pub(crate) struct ProgressView(Arc<Mutex<Vec<Progress>>>);

impl ProgressView {
    /// Progress summed over workers (p99: the worst worker's).
    pub(crate) fn sum(&self) -> Progress {
        let table = lock(&self.0);
        let mut sum = Progress::default();
        for p in table.iter() {
            sum.open += p.open;
            sum.connected += p.connected;
            sum.failed += p.failed;
            sum.delivered += p.delivered;
            sum.reconnects += p.reconnects;
            sum.incomplete += p.incomplete;
            sum.catching_up += p.catching_up;
            sum.p99_ms = match (sum.p99_ms, p.p99_ms) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        sum
    }
}

/// Routes a worker's events: progress into the table, the rest onto the merged channel.
async fn forward(
    shard: usize,
    mut events: mpsc::Receiver<Event>,
    merged: mpsc::Sender<(usize, Event)>,
    progress: Arc<Mutex<Vec<Progress>>>,
) {
    while let Some(event) = events.recv().await {
        match event {
            Event::Progress(p) => lock(&progress)[shard] = p,
            other => {
                if merged.send((shard, other)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Starts this executable as a worker process wired to the two channels.
async fn spawn_child(
    spec: &WorkerSpec,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let mut child = tokio::process::Command::new(exe)
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting a worker process")?;
    let mut stdin = child.stdin.take().context("worker stdin")?;
    let stdout = child.stdout.take().context("worker stdout")?;
    let mut first = serde_json::to_vec(spec)?;
    first.push(b'\n');
    stdin.write_all(&first).await?;
    tokio::spawn(async move {
        while let Some(command) = commands.recv().await {
            let Ok(mut line) = serde_json::to_vec(&command) else {
                continue;
            };
            line.push(b'\n');
            if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
                return;
            }
        }
        // Dropping stdin tells the worker its parent is done with it.
    });
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<Event>(&line) {
                Ok(event) => {
                    if events.send(event).await.is_err() {
                        return;
                    }
                }
                Err(e) => eprintln!("worker sent an unreadable line ({e}): {line:.200}"),
            }
        }
    });
    Ok(child)
}
