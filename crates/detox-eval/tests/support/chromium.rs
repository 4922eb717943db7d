//! Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`): commands go to the
//! browser's fd 3 and its answers and events come back on fd 4, each a JSON message ended by a NUL byte. No
//! browser-automation download, no network port.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

#[path = "../../../../xtask/src/headless.rs"]
mod headless;
use headless::HEADLESS_FLAGS;

/// Where Debian's `chromium` package puts the browser; `DETOX_CHROMIUM` names another.
pub fn chromium_path() -> Result<PathBuf> {
    let path = std::env::var_os("DETOX_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !path.is_file() {
        bail!(
            "{} not found: this test renders the run report in a real headless Chromium. Install Debian's \
             package with `apt-get install -y chromium` (as root; `cargo xtask test` does it), or point \
             DETOX_CHROMIUM at a Chromium binary",
            path.display()
        );
    }
    Ok(path)
}

/// A headless browser; killed when dropped.
pub struct Browser {
    child: Child,
    commands: File,
    messages: Receiver<Value>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

/// How long one command may take.
const TIMEOUT: Duration = Duration::from_secs(60);

impl Browser {
    /// Starts headless Chromium with a fresh profile and no background networking.
    pub fn launch() -> Result<Self> {
        let binary = chromium_path()?;
        let profile = tempfile::tempdir()?;
        let (command_reader, commands) = pipe()?;
        let (answers, answer_writer) = pipe()?;
        let (from, to) = (command_reader.as_raw_fd(), answer_writer.as_raw_fd());
        let mut command = Command::new(&binary);
        command
            .args(HEADLESS_FLAGS)
            .args(["--disable-extensions", "--remote-debugging-pipe", "--window-size=1280,900"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: between fork and exec only async-signal-safe calls (fcntl, dup2) on descriptors this process
        // owns; nothing allocates.
        unsafe {
            command.pre_exec(move || place_fds(from, to));
        }
        let child = command.spawn().with_context(|| format!("starting {}", binary.display()))?;
        drop(command_reader);
        drop(answer_writer);
        let (sender, messages) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(answers);
            loop {
                let mut message = Vec::new();
                match reader.read_until(0, &mut message) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        message.pop();
                        let Ok(value) = serde_json::from_slice::<Value>(&message) else { break };
                        if sender.send(value).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Ok(Self { child, commands, messages, next_id: 0, _profile: profile })
    }

    /// Sends `method` (to the page `session`, or to the browser) and waits for its result, skipping events.
    pub fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message)?;
        bytes.push(0);
        self.commands.write_all(&bytes).with_context(|| format!("sending {method} to Chromium"))?;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = match self.messages.recv_timeout(left) {
                Ok(answer) => answer,
                Err(RecvTimeoutError::Timeout) => {
                    bail!("Chromium did not answer {method} in {TIMEOUT:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("Chromium closed its DevTools pipe while {method} was pending")
                }
            };
            if answer["id"] != json!(id) {
                continue;
            }
            if let Some(error) = answer.get("error") {
                bail!("{method}: {error}");
            }
            return Ok(answer["result"].clone());
        }
    }

    /// Opens `file` in a new page and waits until it has loaded.
    pub fn open(&mut self, file: &Path) -> Result<Page<'_>> {
        let url = format!("file://{}", file.canonicalize()?.display());
        let target = self.call(None, "Target.createTarget", json!({ "url": "about:blank" }))?;
        let target_id =
            target["targetId"].as_str().ok_or_else(|| anyhow!("no targetId: {target}"))?;
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        )?;
        let session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no sessionId: {attached}"))?
            .to_string();
        let mut page = Page { browser: self, session };
        page.call("Page.enable", json!({}))?;
        page.call("Page.navigate", json!({ "url": url }))?;
        page.wait_for(&format!(
            "location.href === {} && document.readyState === 'complete'",
            json!(url)
        ))?;
        Ok(page)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pipe's read and write ends, closed on exec.
fn pipe() -> std::io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given, which this function then owns.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])))
    }
}

/// Puts the command pipe on fd 3 and the answer pipe on fd 4 of the child (through copies above both, so that
/// neither overwrites the other); dup2 leaves 3 and 4 open across exec.
fn place_fds(from: RawFd, to: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl and dup2 on open descriptors, async-signal-safe.
    unsafe {
        let from = libc::fcntl(from, libc::F_DUPFD_CLOEXEC, 10);
        let to = libc::fcntl(to, libc::F_DUPFD_CLOEXEC, 10);
        if from < 0 || to < 0 || libc::dup2(from, 3) < 0 || libc::dup2(to, 4) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// One page of the browser.
pub struct Page<'b> {
    browser: &'b mut Browser,
    session: String,
}

impl Page<'_> {
    /// Sends `method` to this page.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.browser.call(Some(&self.session), method, params)
    }

    /// The value of the JavaScript expression `expression` (JSON-serialisable), failing on an exception.
    pub fn eval(&mut self, expression: &str) -> Result<Value> {
        let answer = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        )?;
        if let Some(exception) = answer.get("exceptionDetails") {
            bail!("`{expression}` threw: {exception}");
        }
        Ok(answer["result"]["value"].clone())
    }

    /// Waits until the expression `condition` is true.
    pub fn wait_for(&mut self, condition: &str) -> Result<()> {
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if self.eval(condition)? == json!(true) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("`{condition}` did not become true in {TIMEOUT:?}")
    }
}
