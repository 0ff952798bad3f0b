//! Headless Chromium as a Mercure subscriber: runs `tests/browser/eventsource-cookie.mjs` with `node` and
//! reports what the page's `EventSource` saw.
//!
//! The script's protocol (documented at its top) avoids guessing ports: it binds its page server first and
//! announces the page origin, so the test can start the hub with `--cors-origins <origin>` and only then
//! name the hub. A test reads:
//!
//! ```no_run
//! # async fn example(bin: &str, key: &str, publisher_token: &str) {
//! use quicksilver_testkit::browser::{BrowserEventSource, EventSourceConfig};
//! use quicksilver_testkit::{hub::publish, http_client, mercure_token, HubProcess, WAIT};
//!
//! let topic = "https://example.com/books/1";
//! let mut browser = BrowserEventSource::launch().await.expect("node and chromium start");
//! let hub = HubProcess::spawn(bin, &["--cors-origins", browser.page_origin(), /* keys… */]);
//! let token = mercure_token(key, &[], &[topic], None);
//! browser.open(&EventSourceConfig::new(hub.url(), &token, topic)).expect("config sent");
//! browser.wait_ready(WAIT * 3).await.expect("EventSource open");
//! let form = [("topic", topic), ("data", "hello"), ("private", "on")];
//! publish(&http_client(), hub.url(), publisher_token, &form).await;
//! assert_eq!(browser.wait_message(WAIT).await.expect("message").data, "hello");
//! # }
//! ```
//!
//! A thread reads the script's stdout into a channel of [`BrowserLine`]s; another keeps its stderr (browser
//! console output, Playwright errors) for error messages. Every wait is bounded. Dropping the handle sends
//! SIGTERM (the script then closes Chromium and removes its profile directory), and SIGKILL after 10 s.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::hub::spawn_retrying_busy;

/// Where Chromium is expected (Debian's `chromium` package).
pub const CHROMIUM_PATH: &str = "/usr/bin/chromium";

/// How long [`BrowserEventSource::launch`] waits for the page origin line.
pub const LAUNCH_TIMEOUT: Duration = Duration::from_secs(20);

/// Stderr lines kept for error messages.
const MAX_STDERR_LINES: usize = 500;

/// Why a browser run failed.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// `node` could not be executed.
    #[error("could not run node: {0} (scripts/install-test-deps.sh sets up the browser tests)")]
    Spawn(std::io::Error),
    /// The script reported an error (`ERROR <reason>`).
    #[error("the browser script failed: {reason}\nstderr:\n{stderr}")]
    Script {
        /// The script's reason.
        reason: String,
        /// Its stderr.
        stderr: String,
    },
    /// The script ended without saying why.
    #[error("the browser script exited unexpectedly\nstderr:\n{stderr}")]
    Exited {
        /// Its stderr.
        stderr: String,
    },
    /// The awaited line did not come in time.
    #[error("no {what} from the browser script within {timeout:?}\nstderr:\n{stderr}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// How long.
        timeout: Duration,
        /// Its stderr so far.
        stderr: String,
    },
    /// Creating its temp dir or writing its configuration failed.
    #[error("I/O for the browser script (temp dir, configuration line) failed: {0}")]
    Io(#[from] std::io::Error),
}

/// One line of the script's stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrowserLine {
    /// `PAGE_ORIGIN http://127.0.0.1:PORT`.
    PageOrigin(String),
    /// `READY`: the `EventSource` is open.
    Ready,
    /// `RECEIVED <data>` (escaped to one line; [`BrowserLine::Message`] follows with the exact data).
    Received(String),
    /// `MESSAGE {json}`: one delivered message.
    Message(BrowserMessage),
    /// `ERROR <reason>`.
    Error(String),
    /// Anything else.
    Other(String),
}

/// A message as the page's `EventSource` delivered it (a `MessageEvent`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BrowserMessage {
    /// `event.data`.
    pub data: String,
    /// `event.lastEventId`.
    #[serde(rename = "lastEventId")]
    pub last_event_id: String,
    /// `event.type`.
    #[serde(rename = "type")]
    pub event_type: String,
}

/// What the page subscribes to: the JSON line the script reads from stdin.
#[derive(Debug, Clone, Serialize)]
pub struct EventSourceConfig {
    /// The hub's origin, `http://127.0.0.1:PORT`.
    #[serde(rename = "hubUrl")]
    pub hub_url: String,
    /// The subscriber JWT, set as the cookie's value.
    pub token: String,
    /// The topic selector in `?topic=`.
    pub topic: String,
    /// The cookie's name (the hub's `--cookie-name`).
    #[serde(rename = "cookieName")]
    pub cookie_name: String,
    /// The query parameter carrying the topic: `topic` (pre-standardization) or `match`.
    pub matcher: String,
    /// How many messages to wait for before the script exits.
    pub messages: usize,
    /// Event types to listen for (an update published with `type=x` arrives as event type `x`).
    #[serde(rename = "eventTypes")]
    pub event_types: Vec<String>,
}

impl EventSourceConfig {
    /// One `message` event on `topic` with the cookie `mercureAuthorization=<token>`.
    pub fn new(hub_url: &str, token: &str, topic: &str) -> Self {
        Self {
            hub_url: hub_url.to_owned(),
            token: token.to_owned(),
            topic: topic.to_owned(),
            cookie_name: "mercureAuthorization".to_owned(),
            matcher: "topic".to_owned(),
            messages: 1,
            event_types: vec!["message".to_owned()],
        }
    }
}

/// The script's directory, `tests/browser` at the repository root.
pub fn script_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser")
}

/// The script's path.
pub fn script_path() -> PathBuf {
    script_dir().join("eventsource-cookie.mjs")
}

/// `Ok` if node, Chromium and the script's npm packages are all present; otherwise what is missing.
pub fn available() -> Result<(), String> {
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(node, Ok(status) if status.success()) {
        return Err("`node` is not on PATH".into());
    }
    let chromium = std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| CHROMIUM_PATH.into());
    if !Path::new(&chromium).exists() {
        return Err(format!("{chromium} is missing (Debian package chromium)"));
    }
    if !script_dir()
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return Err(format!(
            "{}/node_modules lacks playwright-core (npm ci there)",
            script_dir().display()
        ));
    }
    Ok(())
}

/// A running `eventsource-cookie.mjs`: a page served on its own origin, Chromium, and (once
/// [`BrowserEventSource::open`] is called) an `EventSource` to the hub.
pub struct BrowserEventSource {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<BrowserLine>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    page_origin: String,
    /// The script's `TMPDIR`: Chromium's profile and Playwright's artifacts live here, so whatever a killed
    /// run leaves behind is deleted with it. Declared last: dropped after the process is gone.
    _tmp: tempfile::TempDir,
}

impl std::fmt::Debug for BrowserEventSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserEventSource")
            .field("pid", &self.child.id())
            .field("page_origin", &self.page_origin)
            .finish_non_exhaustive()
    }
}

impl BrowserEventSource {
    /// Starts the script in its default (stdin) mode and waits for its page origin. Chromium launches in the
    /// background meanwhile.
    pub async fn launch() -> Result<Self, BrowserError> {
        let mut browser = Self::spawn(&[], &[])?;
        match browser.next_line(LAUNCH_TIMEOUT, "PAGE_ORIGIN").await? {
            BrowserLine::PageOrigin(origin) => {
                browser.page_origin = origin;
                Ok(browser)
            }
            other => Err(BrowserError::Script {
                reason: format!("expected PAGE_ORIGIN first, got {other:?}"),
                stderr: browser.stderr(),
            }),
        }
    }

    /// The page's origin, `http://127.0.0.1:PORT`: the value for the hub's `--cors-origins`.
    pub fn page_origin(&self) -> &str {
        &self.page_origin
    }

    /// Sends the configuration: the page then sets the cookie and opens the `EventSource`.
    pub fn open(&mut self, config: &EventSourceConfig) -> Result<(), BrowserError> {
        let mut stdin = self
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("open() was already called"))?;
        let mut line = serde_json::to_vec(config).map_err(std::io::Error::other)?;
        line.push(b'\n');
        stdin.write_all(&line)?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits for `READY` (the `EventSource` is open). Allow for Chromium's start-up: 30 s is reasonable.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), BrowserError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let BrowserLine::Ready = self.next_line(left, "READY").await? {
                return Ok(());
            }
        }
    }

    /// Waits for the next delivered message.
    pub async fn wait_message(
        &mut self,
        timeout: Duration,
    ) -> Result<BrowserMessage, BrowserError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let BrowserLine::Message(message) = self.next_line(left, "MESSAGE").await? {
                return Ok(message);
            }
        }
    }

    /// Waits up to `timeout` for the script to exit (it does after the configured number of messages).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The script's stderr so far (browser console, Playwright messages).
    pub fn stderr(&self) -> String {
        let lines = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    /// The next stdout line; an `ERROR` line, the end of output, or the timeout become errors.
    async fn next_line(
        &mut self,
        timeout: Duration,
        what: &'static str,
    ) -> Result<BrowserLine, BrowserError> {
        match tokio::time::timeout(timeout, self.lines.recv()).await {
            Err(_) => Err(BrowserError::Timeout {
                what,
                timeout,
                stderr: self.stderr(),
            }),
            Ok(None) => {
                // Stdout closed: the process is ending; give the stderr thread a moment to finish.
                self.wait_exit(Duration::from_secs(2));
                Err(BrowserError::Exited {
                    stderr: self.stderr(),
                })
            }
            Ok(Some(BrowserLine::Error(reason))) => {
                self.wait_exit(Duration::from_secs(2));
                Err(BrowserError::Script {
                    reason,
                    stderr: self.stderr(),
                })
            }
            Ok(Some(line)) => Ok(line),
        }
    }

    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Result<Self, BrowserError> {
        let tmp = tempfile::Builder::new()
            .prefix("quicksilver-browser-")
            .tempdir()?;
        let mut command = Command::new("node");
        command
            .env("TMPDIR", tmp.path())
            .arg(script_path())
            .args(args)
            .envs(env.iter().copied())
            .current_dir(script_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_retrying_busy(&mut command).map_err(BrowserError::Spawn)?;
        let (sender, lines) = mpsc::unbounded_channel();
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stdout) = child.stdout.take() {
            read_lines(stdout, move |line| {
                let _ = sender.send(parse_line(line));
            });
        }
        if let Some(err) = child.stderr.take() {
            let stderr = Arc::clone(&stderr);
            read_lines(err, move |line| {
                let mut lines = stderr.lock().unwrap_or_else(|p| p.into_inner());
                if lines.len() == MAX_STDERR_LINES {
                    lines.pop_front();
                }
                lines.push_back(line);
            });
        }
        Ok(Self {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
            page_origin: String::new(),
            _tmp: tmp,
        })
    }
}

impl Drop for BrowserEventSource {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if matches!(self.child.try_wait(), Ok(None)) {
            if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
                let _ = kill_process(pid, Signal::TERM);
            }
            if self.wait_exit(Duration::from_secs(10)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("--- browser script stderr ---\n{}", self.stderr());
        }
    }
}

/// Runs `eventsource-cookie.mjs --selftest` (its own fake hub on a second origin: cookie, CORS and
/// EventSource, without Quicksilver) and checks that it received its message.
pub async fn selftest(timeout: Duration) -> Result<BrowserMessage, BrowserError> {
    let mut browser = BrowserEventSource::spawn(&["--selftest"], &[])?;
    browser.wait_ready(timeout).await?;
    let message = browser.wait_message(timeout).await?;
    match browser.wait_exit(timeout) {
        Some(status) if status.success() => Ok(message),
        Some(status) => Err(BrowserError::Script {
            reason: format!("exited with {status} after its message"),
            stderr: browser.stderr(),
        }),
        None => Err(BrowserError::Timeout {
            what: "exit",
            timeout,
            stderr: browser.stderr(),
        }),
    }
}

fn parse_line(line: String) -> BrowserLine {
    if line == "READY" {
        return BrowserLine::Ready;
    }
    if let Some(origin) = line.strip_prefix("PAGE_ORIGIN ") {
        return BrowserLine::PageOrigin(origin.to_owned());
    }
    if let Some(data) = line.strip_prefix("RECEIVED ") {
        return BrowserLine::Received(data.to_owned());
    }
    if let Some(json) = line.strip_prefix("MESSAGE ") {
        if let Ok(message) = serde_json::from_str(json) {
            return BrowserLine::Message(message);
        }
    }
    if let Some(reason) = line.strip_prefix("ERROR ") {
        return BrowserLine::Error(reason.to_owned());
    }
    BrowserLine::Other(line)
}

/// Calls `each` with every line of `stream` on a thread of its own, until the stream closes.
fn read_lines(stream: impl Read + Send + 'static, mut each: impl FnMut(String) + Send + 'static) {
    std::thread::Builder::new()
        .name("browser-output".into())
        .spawn(move || {
            for line in BufReader::new(stream).lines() {
                match line {
                    Ok(line) => each(line),
                    Err(_) => break,
                }
            }
        })
        .expect("spawning an output-reading thread");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_lines_parse() {
        assert_eq!(parse_line("READY".into()), BrowserLine::Ready);
        assert_eq!(
            parse_line("PAGE_ORIGIN http://127.0.0.1:5".into()),
            BrowserLine::PageOrigin("http://127.0.0.1:5".into())
        );
        assert_eq!(
            parse_line(r#"MESSAGE {"data":"a\nb","lastEventId":"1","type":"message"}"#.into()),
            BrowserLine::Message(BrowserMessage {
                data: "a\nb".into(),
                last_event_id: "1".into(),
                event_type: "message".into(),
            })
        );
        assert_eq!(
            parse_line("ERROR boom".into()),
            BrowserLine::Error("boom".into())
        );
        assert_eq!(
            parse_line("other".into()),
            BrowserLine::Other("other".into())
        );
    }

    #[test]
    fn config_serializes_to_the_scripts_field_names() {
        let json =
            serde_json::to_value(EventSourceConfig::new("http://h", "t", "x")).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"hubUrl": "http://h", "token": "t", "topic": "x",
                "cookieName": "mercureAuthorization", "matcher": "topic", "messages": 1,
                "eventTypes": ["message"]})
        );
    }
}
