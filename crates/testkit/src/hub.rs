//! The `quicksilver` binary as a child process, for tests that need the real executable: start-up flags,
//! signals, several nodes behind a proxy, a node killed mid-stream.
//!
//! [`HubProcess::spawn`] adds `--listen 127.0.0.1:0` (unless the caller passed `--listen`), waits for the
//! hub's `quicksilver listening on http://…` (or `https://…`) line on stdout, and from then on two threads drain the child's
//! stdout and stderr into a bounded in-memory log (a hub blocked on a full pipe would be a test bug of
//! ours). The log is printed when a test panics while the handle is alive, and is searchable with
//! [`HubProcess::wait_for_output`]. The child is SIGKILLed when the handle drops.
//!
//! The API is blocking (std threads and processes): waits are short and the hub is another process, so a
//! Tokio test can call it directly.
//!
//! A few helpers speak to any hub over HTTP, a process, one in this process or one behind a proxy:
//! [`publish`] posts an update (its body built by [`encode_form`]), [`metric`] reads a value of
//! `GET /metrics`, [`is_ready`] asks `GET /readyz`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

/// The prefix of the line the hub prints once it accepts connections.
pub const LISTENING_PREFIX: &str = "quicksilver listening on ";

/// How long [`HubProcess::spawn`] waits for the listening line (generous: CI machines are slow and busy).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines kept per stream; older lines are dropped so a chatty hub cannot grow a test's memory without bound.
const MAX_LOG_LINES: usize = 20_000;

/// Lines of each stream printed when a test panics with the hub alive.
const LINES_SHOWN_ON_PANIC: usize = 200;

/// Why a hub could not be started.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The binary could not be executed.
    #[error("could not start {bin}: {source}")]
    Spawn {
        /// The binary's path.
        bin: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The process exited before it was listening.
    #[error("the hub exited with {status} before listening; stderr:\n{stderr}")]
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// What it wrote to stderr (and stdout).
        stderr: String,
    },
    /// It did not report listening in time.
    #[error("the hub did not report listening within {timeout:?}; output so far:\n{output}")]
    Timeout {
        /// How long was waited.
        timeout: Duration,
        /// Its output so far.
        output: String,
    },
    /// The listening line did not hold a URL with a socket address.
    #[error("unparsable listening line {0:?}")]
    BadListeningLine(String),
}

/// Which of the child's streams a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A running `quicksilver` process. Dropping the handle kills the process.
pub struct HubProcess {
    child: Child,
    bin: PathBuf,
    /// The caller's arguments, without any `--listen` that [`HubProcess::spawn`] added.
    args: Vec<String>,
    env: Vec<(String, String)>,
    addr: SocketAddr,
    url: String,
    log: Arc<OutputLog>,
}

impl std::fmt::Debug for HubProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubProcess")
            .field("pid", &self.child.id())
            .field("url", &self.url)
            .field("args", &self.args)
            .finish_non_exhaustive()
    }
}

impl HubProcess {
    /// Starts `bin` with `args` (plus `--listen 127.0.0.1:0` unless `args` has `--listen` or the
    /// environment given names the address: `QUICKSILVER_LISTEN`, `SERVER_NAME`) and waits until
    /// it listens. Panics with the hub's output if it does not: in a test, that is the message one wants.
    ///
    /// In a crate that builds the binary, `bin` is `env!("CARGO_BIN_EXE_quicksilver")`.
    pub fn spawn(bin: impl AsRef<Path>, args: &[&str]) -> HubProcess {
        Self::spawn_with_env(bin, args, &[])
    }

    /// [`HubProcess::spawn`] with extra environment variables for the child.
    pub fn spawn_with_env(
        bin: impl AsRef<Path>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> HubProcess {
        Self::try_spawn(bin, args, env).unwrap_or_else(|e| panic!("starting the hub failed: {e}"))
    }

    /// Starts the hub, returning why it failed instead of panicking (for tests of start-up errors).
    ///
    /// The child's environment is the test's, minus every `QUICKSILVER_*` and `MERCURE_*` variable and
    /// `SERVER_NAME` (so a developer's shell cannot change a test), plus `env`.
    pub fn try_spawn(
        bin: impl AsRef<Path>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<HubProcess, HubError> {
        let bin = bin.as_ref().to_path_buf();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let names_address = env
            .iter()
            .any(|(k, _)| k == "QUICKSILVER_LISTEN" || k == "SERVER_NAME");
        let listen = if has_listen_flag(&args) || names_address {
            None
        } else {
            Some("127.0.0.1:0".to_owned())
        };
        let Started {
            child,
            log,
            addr,
            url,
        } = start(&bin, &args, listen.as_deref(), &env, START_TIMEOUT)?;
        Ok(HubProcess {
            child,
            url,
            bin,
            args,
            env,
            addr,
            log,
        })
    }

    /// The hub's origin, `http://127.0.0.1:PORT` (`https://` when it serves TLS; no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The hub endpoint, `http://127.0.0.1:PORT/.well-known/mercure`.
    pub fn mercure_url(&self) -> String {
        format!("{}/.well-known/mercure", self.url)
    }

    /// The address the hub listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The hub's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the process has exited (reaping it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// SIGKILL (a crash, as far as clients and Redis can tell) and reap it.
    pub fn kill(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// Sends SIGTERM without waiting (to watch what clients see during a graceful shutdown; follow with
    /// [`HubProcess::wait_exit`]).
    pub fn sigterm(&mut self) {
        self.signal(Signal::TERM);
    }

    /// Sends SIGHUP (the hub reloads its configuration file's policies).
    pub fn sighup(&mut self) {
        self.signal(Signal::HUP);
    }

    fn signal(&mut self, signal: Signal) {
        if self.is_running() {
            if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
                let _ = kill_process(pid, signal);
            }
        }
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then waits up to `timeout` for a graceful exit. Returns the exit status, or `None` if the hub
    /// ignored the signal, in which case it has been SIGKILLed.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.sigterm();
        let status = self.wait_exit(timeout);
        if status.is_none() {
            self.kill();
        }
        status
    }

    /// Kills the process if it runs, then starts it again with the same arguments and environment on the
    /// same port (clients reconnect to the same URL). Retries for a while if the port is briefly unavailable.
    /// Panics if it cannot.
    pub fn restart(&mut self) {
        self.kill();
        let listen = format!("127.0.0.1:{}", self.addr.port());
        let args: Vec<String> = strip_listen_flag(&self.args);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match start(&self.bin, &args, Some(&listen), &self.env, START_TIMEOUT) {
                Ok(started) => {
                    self.child = started.child;
                    self.log = started.log;
                    self.addr = started.addr;
                    self.url = started.url;
                    return;
                }
                Err(e) if Instant::now() < deadline && matches!(e, HubError::Exited { .. }) => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("restarting the hub on {listen} failed: {e}"),
            }
        }
    }

    /// The lines the hub wrote to one stream so far (the last 20,000 of them).
    pub fn output_lines(&self, stream: Stream) -> Vec<String> {
        self.log.lines(stream)
    }

    /// The lines the hub wrote to stderr so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.log.lines(Stream::Stderr)
    }

    /// The lines the hub wrote to stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.log.lines(Stream::Stdout)
    }

    /// Every line the hub wrote so far, stdout and stderr interleaved in the order they arrived (the last
    /// 40,000).
    pub fn output(&self) -> Vec<String> {
        self.log.all_lines()
    }

    /// Waits up to `timeout` for a line containing `needle` on stdout or stderr (e.g. a log message);
    /// returns that line.
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.log.wait_for(|line| line.contains(needle), timeout)
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // libtest captures this and prints it under the failing test.
            eprintln!(
                "--- hub pid {} ({}) output, last {LINES_SHOWN_ON_PANIC} lines per stream ---\n{}",
                self.child.id(),
                self.url,
                self.log.tail(LINES_SHOWN_ON_PANIC)
            );
        }
        self.kill();
    }
}

/// A child that listens.
struct Started {
    child: Child,
    log: Arc<OutputLog>,
    addr: SocketAddr,
    /// Its origin, as the listening line says it.
    url: String,
}

/// Starts the child and waits until it listens.
fn start(
    bin: &Path,
    args: &[String],
    listen: Option<&str>,
    env: &[(String, String)],
    timeout: Duration,
) -> Result<Started, HubError> {
    let mut command = Command::new(bin);
    if let Some(listen) = listen {
        command.arg("--listen").arg(listen);
    }
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("QUICKSILVER_") || key.starts_with("MERCURE_") || key == "SERVER_NAME" {
            command.env_remove(&*key);
        }
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    let mut child = spawn_retrying_busy(&mut command).map_err(|source| HubError::Spawn {
        bin: bin.to_path_buf(),
        source,
    })?;
    let log = Arc::new(OutputLog::default());
    if let Some(stdout) = child.stdout.take() {
        drain(stdout, Stream::Stdout, Arc::clone(&log));
    }
    if let Some(stderr) = child.stderr.take() {
        drain(stderr, Stream::Stderr, Arc::clone(&log));
    }

    let deadline = Instant::now() + timeout;
    loop {
        let line = log.wait_for_stdout(
            |line| line.trim_end().starts_with(LISTENING_PREFIX),
            Duration::from_millis(50),
        );
        if let Some(line) = line {
            let url = line.trim_end()[LISTENING_PREFIX.len()..].trim();
            let addr = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .and_then(|rest| rest.trim_end_matches('/').parse::<SocketAddr>().ok())
                .ok_or_else(|| HubError::BadListeningLine(line.clone()));
            return match addr {
                Ok(addr) => Ok(Started {
                    url: url.trim_end_matches('/').to_string(),
                    child,
                    log,
                    addr,
                }),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    Err(e)
                }
            };
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Give the drain threads a moment to collect the last words.
            log.wait_closed(Duration::from_secs(2));
            return Err(HubError::Exited {
                status,
                stderr: log.tail(LINES_SHOWN_ON_PANIC),
            });
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HubError::Timeout {
                timeout,
                output: log.tail(LINES_SHOWN_ON_PANIC),
            });
        }
    }
}

/// `command.spawn()`, retried briefly on ETXTBSY: a binary or script written just before (by cargo, or by a
/// test) can still be open for writing in a process forked concurrently by another test thread.
pub(crate) fn spawn_retrying_busy(command: &mut Command) -> std::io::Result<Child> {
    const ETXTBSY: i32 = 26;
    let mut attempts = 0;
    loop {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) && attempts < 50 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn has_listen_flag(args: &[String]) -> bool {
    args.iter()
        .any(|a| a == "--listen" || a.starts_with("--listen="))
}

/// `args` without `--listen VALUE` / `--listen=VALUE`.
fn strip_listen_flag(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut skip_next = false;
    for arg in args {
        if std::mem::take(&mut skip_next) {
            continue;
        }
        if arg == "--listen" {
            skip_next = true;
        } else if !arg.starts_with("--listen=") {
            out.push(arg.clone());
        }
    }
    out
}

/// Copies a child's stream into `log` line by line until it closes, on a thread of its own.
fn drain(stream: impl Read + Send + 'static, which: Stream, log: Arc<OutputLog>) {
    std::thread::Builder::new()
        .name(format!("hub-{which:?}").to_lowercase())
        .spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        log.push(which, line.trim_end_matches(['\n', '\r']).to_owned());
                    }
                }
            }
            log.close();
        })
        .expect("spawning a log-draining thread");
}

/// A child's stdout and stderr lines, shared between the drain threads and the handle; `changed` wakes
/// waiters on every new line. A `std` mutex: no async code touches it, and critical sections are tiny.
#[derive(Default)]
struct OutputLog {
    state: Mutex<LogState>,
    changed: Condvar,
}

#[derive(Default)]
struct LogState {
    stdout: VecDeque<String>,
    stderr: VecDeque<String>,
    /// Interleaved order of both streams, for diagnostics.
    all: VecDeque<(Stream, String)>,
    closed_streams: usize,
}

impl OutputLog {
    fn state(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(&self, which: Stream, line: String) {
        let mut state = self.state();
        let lines = match which {
            Stream::Stdout => &mut state.stdout,
            Stream::Stderr => &mut state.stderr,
        };
        if lines.len() == MAX_LOG_LINES {
            lines.pop_front();
        }
        lines.push_back(line.clone());
        if state.all.len() == 2 * MAX_LOG_LINES {
            state.all.pop_front();
        }
        state.all.push_back((which, line));
        drop(state);
        self.changed.notify_all();
    }

    fn close(&self) {
        self.state().closed_streams += 1;
        self.changed.notify_all();
    }

    fn lines(&self, which: Stream) -> Vec<String> {
        let state = self.state();
        match which {
            Stream::Stdout => state.stdout.iter().cloned().collect(),
            Stream::Stderr => state.stderr.iter().cloned().collect(),
        }
    }

    fn all_lines(&self) -> Vec<String> {
        self.state()
            .all
            .iter()
            .map(|(_, line)| line.clone())
            .collect()
    }

    fn tail(&self, n: usize) -> String {
        let state = self.state();
        let skip = state.all.len().saturating_sub(n);
        state
            .all
            .iter()
            .skip(skip)
            .map(|(which, line)| match which {
                Stream::Stdout => format!("[stdout] {line}\n"),
                Stream::Stderr => format!("[stderr] {line}\n"),
            })
            .collect()
    }

    /// The first stdout line matching `matches`, waiting up to `timeout` for one.
    fn wait_for_stdout(&self, matches: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        self.block_until(timeout, |state| {
            state.stdout.iter().find(|l| matches(l)).cloned()
        })
    }

    /// The first line on either stream matching `matches`, waiting up to `timeout` for one.
    fn wait_for(&self, matches: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        self.block_until(timeout, |state| {
            state
                .all
                .iter()
                .map(|(_, l)| l)
                .find(|l| matches(l))
                .cloned()
        })
    }

    /// Waits until both streams have closed, at most `timeout`.
    fn wait_closed(&self, timeout: Duration) {
        self.block_until(timeout, |state| (state.closed_streams >= 2).then_some(()));
    }

    /// Blocks (on the condition variable, not by polling) until `check` finds something or `timeout`
    /// passes.
    fn block_until<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&LogState) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state();
        loop {
            if let Some(found) = check(&state) {
                return Some(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

/// Posts an update: `form` pairs (`("topic", t)` repeatable, `("data", d)`, `("private", "on")`, `("id", i)`,
/// `("type", t)`, `("retry", ms)`) form-encoded to the hub, with `Authorization: Bearer token` unless `token`
/// is empty. `hub` is the hub's origin or its full `/.well-known/mercure` URL. Returns the status and the body
/// (the event id on success). Panics if no HTTP response arrives within 10 s.
pub async fn publish(
    client: &reqwest::Client,
    hub: &str,
    token: &str,
    form: &[(&str, &str)],
) -> (u16, String) {
    let mut request = client
        .post(mercure_endpoint(hub))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(encode_form(form));
    if !token.is_empty() {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let response = tokio::time::timeout(Duration::from_secs(10), request.send())
        .await
        .unwrap_or_else(|_| panic!("publishing to {hub}: no response within 10 s"))
        .unwrap_or_else(|e| panic!("publishing to {hub} failed: {e}"));
    let status = response.status().as_u16();
    let text = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    (status, text)
}

/// Whether the hub answers `GET /readyz` with 200 (within 10 s): its transport is reachable and it is
/// not draining. `hub` is the hub's origin.
pub async fn is_ready(client: &reqwest::Client, hub: &str) -> bool {
    let url = format!("{}/readyz", hub.trim_end_matches('/'));
    tokio::time::timeout(Duration::from_secs(10), client.get(&url).send())
        .await
        .is_ok_and(|answer| answer.is_ok_and(|r| r.status() == 200))
}

/// `pairs` as `application/x-www-form-urlencoded` (`topic=https%3A%2F%2Fex.com%2F%7Bid%7D&data=a+b`): a
/// publish body, or a subscription's query string (`format!("{}?{}", hub.mercure_url(), encode_form(…))`).
pub fn encode_form(pairs: &[(&str, &str)]) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        form.append_pair(name, value);
    }
    form.finish()
}

/// The value of one metric in the hub's `GET /metrics`: the line `name VALUE`, where `name` carries its
/// labels as Prometheus writes them (`quicksilver_subscriptions{kind="exact"}`). `None` if the hub does not
/// answer within 10 s or has no such line. `hub` is the hub's origin.
pub async fn metric(client: &reqwest::Client, hub: &str, name: &str) -> Option<f64> {
    let url = format!("{}/metrics", hub.trim_end_matches('/'));
    let text = tokio::time::timeout(Duration::from_secs(10), async {
        client.get(&url).send().await?.text().await
    })
    .await
    .ok()?
    .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// `hub` if it already names the Mercure endpoint, else `hub` + `/.well-known/mercure`.
pub fn mercure_endpoint(hub: &str) -> String {
    if hub.contains("/.well-known/mercure") {
        hub.to_owned()
    } else {
        format!("{}/.well-known/mercure", hub.trim_end_matches('/'))
    }
}

/// Whether something accepts TCP connections at `addr` (within 200 ms).
pub fn is_listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn listen_flags_are_found_and_stripped() {
        assert!(has_listen_flag(&strings(&["--anonymous", "--listen", "x"])));
        assert!(has_listen_flag(&strings(&["--listen=127.0.0.1:1"])));
        assert!(!has_listen_flag(&strings(&["--listener"])));
        assert_eq!(
            strip_listen_flag(&strings(&["-a", "--listen", "x", "--listen=y", "b"])),
            strings(&["-a", "b"])
        );
    }

    #[test]
    fn mercure_endpoint_accepts_origin_or_endpoint() {
        assert_eq!(
            mercure_endpoint("http://127.0.0.1:1/"),
            "http://127.0.0.1:1/.well-known/mercure"
        );
        assert_eq!(
            mercure_endpoint("http://127.0.0.1:1/.well-known/mercure"),
            "http://127.0.0.1:1/.well-known/mercure"
        );
    }

    #[test]
    fn a_fake_hub_is_started_waited_for_and_killed() {
        // A shell script stands in for the binary: it prints the listening line, logs to stderr, then
        // waits. No socket is needed for the handshake.
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("fake-hub");
        std::fs::write(
            &script,
            "#!/bin/sh\necho \"args: $*\" >&2\necho 'quicksilver listening on http://127.0.0.1:4321'\nexec sleep 30\n",
        )
        .expect("write script");
        make_executable(&script);
        let mut hub = HubProcess::spawn(&script, &["--anonymous"]);
        assert_eq!(hub.url(), "http://127.0.0.1:4321");
        assert_eq!(
            hub.mercure_url(),
            "http://127.0.0.1:4321/.well-known/mercure"
        );
        let line = hub
            .wait_for_output("args:", Duration::from_secs(5))
            .expect("stderr line");
        assert_eq!(line, "args: --listen 127.0.0.1:0 --anonymous");
        assert!(hub.is_running());
        let status = hub
            .terminate(Duration::from_secs(5))
            .expect("sleep exits on SIGTERM");
        assert!(!status.success());
        assert!(!hub.is_running());
    }

    #[test]
    fn a_hub_that_exits_early_reports_its_stderr() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("failing-hub");
        std::fs::write(&script, "#!/bin/sh\necho 'error: bad flag' >&2\nexit 2\n")
            .expect("write script");
        make_executable(&script);
        match HubProcess::try_spawn(&script, &[], &[]) {
            Err(HubError::Exited { status, stderr }) => {
                assert_eq!(status.code(), Some(2));
                assert!(stderr.contains("error: bad flag"), "{stderr}");
            }
            other => panic!("expected an early exit, got {other:?}"),
        }
    }

    fn make_executable(path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}
