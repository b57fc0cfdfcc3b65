//! Running commands with a time limit, and long-running peers that never outlive the tests.
//!
//! A peer (an X server, a VNC server) runs under a small `sh` guardian whose standard input
//! is a pipe held by the test process. When that pipe closes — because the [`PeerProcess`]
//! was dropped, because a test panicked, or because the whole test binary died, even from
//! SIGKILL — the guardian stops the peer with SIGTERM (so X servers remove their lock
//! files), then SIGKILL. Statics are never dropped, so shared peers rely on this too.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// What a finished command left behind.
#[derive(Debug)]
pub struct CommandOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// From spawning to exit.
    pub elapsed: Duration,
}

impl CommandOutput {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Fails with the command's stderr unless it exited with status 0.
    pub fn check(self, what: &str) -> Result<CommandOutput> {
        if self.status.success() {
            Ok(self)
        } else {
            bail!(
                "{what} failed ({}): {}",
                self.status,
                self.stderr_text().trim()
            )
        }
    }
}

/// Runs `command` with no input; kills it and fails if it runs longer than `timeout`.
pub fn run(command: &mut Command, timeout: Duration) -> Result<CommandOutput> {
    run_with_input(command, &[], timeout)
}

/// Runs `command` with `input` on its standard input; kills it and fails if it runs longer
/// than `timeout`.
pub fn run_with_input(
    command: &mut Command,
    input: &[u8],
    timeout: Duration,
) -> Result<CommandOutput> {
    let program = command.get_program().to_string_lossy().into_owned();
    let start = Instant::now();
    let mut child = command
        .stdin(if input.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {program}"))?;
    let stdin = child.stdin.take().map(|mut stdin| {
        let input = input.to_vec();
        // A writer thread, so that a child that fills its output pipes before reading
        // all of its input cannot deadlock us.
        thread::spawn(move || {
            let _ = stdin.write_all(&input);
        })
    });
    let stdout = read_all_in_background(child.stdout.take());
    let stderr = read_all_in_background(child.stderr.take());
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().unwrap_or_default();
            bail!(
                "{program} did not finish within {timeout:?}; stderr: {}",
                String::from_utf8_lossy(&stderr).trim()
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    if let Some(writer) = stdin {
        let _ = writer.join();
    }
    Ok(CommandOutput {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        elapsed,
    })
}

fn read_all_in_background(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// The guardian. `$@` is the peer's command line. Its stdin becomes fd 3 for the watcher
/// only; the peer gets /dev/null. The peer is started through a shell that first prints
/// its own process id, then becomes the peer (`exec`), so the first line of output is
/// always the peer's pid. The watcher keeps no copy of stdout, so the stdout pipe closes
/// when the peer exits. The guardian exits with the peer's status.
const GUARDIAN: &str = r#"
exec 3<&0 </dev/null
sh -c 'echo "$$"; exec "$@"' kvmux-tests-peer "$@" 3<&- &
peer=$!
{ read -r _ <&3; kill -TERM "$peer"; sleep 3; kill -KILL "$peer"; } >/dev/null 2>&1 &
watcher=$!
exec 3<&-
wait "$peer"
status=$?
kill "$watcher" 2>/dev/null
exit "$status"
"#;

/// A long-running peer process, stopped when dropped (and when the test process dies).
/// Its standard output arrives line by line through [`PeerProcess::next_line`]; its
/// standard error goes to a log file.
pub struct PeerProcess {
    name: String,
    pid: u32,
    guardian: Child,
    lifeline: Option<ChildStdin>,
    // In a mutex only to make peers shareable between test threads.
    stdout_lines: Mutex<Receiver<String>>,
    log: PathBuf,
}

impl PeerProcess {
    /// Starts `command` (program and arguments; its stdio is replaced) under the guardian,
    /// with standard error going to `log`.
    pub fn spawn(command: &Command, log: &Path) -> Result<PeerProcess> {
        let name = command.get_program().to_string_lossy().into_owned();
        let mut guarded = Command::new("/bin/sh");
        guarded
            .arg("-c")
            .arg(GUARDIAN)
            .arg("kvmux-tests-guardian")
            .arg(command.get_program())
            .args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => guarded.env(key, value),
                None => guarded.env_remove(key),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            guarded.current_dir(dir);
        }
        let log_file = File::create(log).with_context(|| format!("cannot create {log:?}"))?;
        let mut guardian = {
            use std::os::unix::process::CommandExt;
            guarded
                // Its own process group: a terminal's Ctrl-C reaches the test process, whose
                // death then closes the lifeline; and the group can be killed as a whole.
                .process_group(0)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(log_file)
                .spawn()
                .with_context(|| format!("cannot start {name}"))?
        };
        let lifeline = guardian.stdin.take();
        let (lines_tx, stdout_lines) = mpsc::channel();
        if let Some(stdout) = guardian.stdout.take() {
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if lines_tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut peer = PeerProcess {
            name,
            pid: 0,
            guardian,
            lifeline,
            stdout_lines: Mutex::new(stdout_lines),
            log: log.to_path_buf(),
        };
        let first_line = peer.next_line(Duration::from_secs(10))?;
        peer.pid = first_line
            .trim()
            .parse()
            .with_context(|| format!("guardian of {} wrote {first_line:?}", peer.name))?;
        Ok(peer)
    }

    /// The peer's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The next line the peer wrote on its standard output. Fails if the peer exits or
    /// closes its output first, or after `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Result<String> {
        let lines = self.stdout_lines.lock().unwrap_or_else(|e| e.into_inner());
        match lines.recv_timeout(timeout) {
            Ok(line) => Ok(line),
            Err(RecvTimeoutError::Timeout) => Err(anyhow!(
                "{} wrote nothing within {timeout:?}; its log:\n{}",
                self.name,
                self.log_text()
            )),
            Err(RecvTimeoutError::Disconnected) => Err(anyhow!(
                "{} closed its output (exited?); its log:\n{}",
                self.name,
                self.log_text()
            )),
        }
    }

    /// Whether the peer (its guardian, which lives exactly as long) is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.guardian.try_wait(), Ok(None))
    }

    /// The peer's standard error so far.
    pub fn log_text(&self) -> String {
        std::fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Stops the peer: SIGTERM, then SIGKILL for the whole process group if it lingers.
    pub fn stop(&mut self) {
        // Closing the lifeline is what the guardian waits for.
        drop(self.lifeline.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.guardian.try_wait(), Ok(None)) {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.guardian.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.guardian.wait();
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A directory removed with everything in it when dropped.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A new empty directory under the system's temporary directory; `label` (no `-`)
    /// goes into its name to help whoever finds one left behind.
    ///
    /// The first call in a process also removes directories left by test processes that
    /// are gone (those kept by statics, which are never dropped).
    pub fn new(label: &str) -> Result<TempDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        static SWEPT: std::sync::Once = std::sync::Once::new();
        let base = std::env::temp_dir();
        SWEPT.call_once(|| sweep_stale(&base));
        debug_assert!(!label.contains('-'), "label {label:?} has a '-'");
        for _ in 0..100 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let path = base.join(format!(
                "kvmux-tests-{label}-{}-{}-{nanos:08x}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot create {path:?}")),
            }
        }
        bail!("cannot create a temporary directory in {base:?}")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

/// Removes `kvmux-tests-LABEL-PID-…` directories whose process no longer exists.
fn sweep_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("kvmux-tests-")) else {
            continue;
        };
        // LABEL has no '-' of its own; PID follows it.
        let Some(pid) = rest.split('-').nth(1).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn run_captures_output_and_status() {
        let out = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out.stdout_text(), "out\n");
        assert_eq!(out.stderr_text(), "err\n");
        assert_eq!(out.status.code(), Some(3));
    }

    #[test]
    fn run_with_input_feeds_stdin() {
        let out =
            run_with_input(&mut Command::new("cat"), b"abc", Duration::from_secs(10)).unwrap();
        assert_eq!(out.stdout, b"abc");
    }

    #[test]
    fn run_kills_on_timeout() {
        let start = Instant::now();
        let err = run(Command::new("sleep").arg("30"), Duration::from_millis(300)).unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    /// Whether a process with this id exists (zombies included).
    fn alive(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
    }

    fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn dropping_a_peer_stops_it() {
        let dir = TempDir::new("peer").unwrap();
        let mut command = Command::new("sh");
        command.args(["-c", "echo $$; exec sleep 1000"]);
        let peer = PeerProcess::spawn(&command, &dir.join("log")).unwrap();
        let pid = peer.pid();
        // The peer's own idea of its pid: the guardian's report is right.
        let echoed: u32 = peer
            .next_line(Duration::from_secs(10))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(echoed, pid);
        assert!(alive(pid));
        drop(peer);
        wait_until("the peer is gone", Duration::from_secs(10), || !alive(pid));
    }

    /// Not a test on its own: run by `peers_die_with_the_test_process` in a child process,
    /// which is then killed with SIGKILL.
    #[test]
    #[ignore = "helper for peers_die_with_the_test_process"]
    fn orphan_helper() {
        if std::env::var_os("KVMUX_TESTS_ORPHAN_HELPER").is_none() {
            return;
        }
        let dir = TempDir::new("orphan").unwrap();
        let peer = PeerProcess::spawn(Command::new("sleep").arg("1000"), &dir.join("log")).unwrap();
        println!("PEER={}", peer.pid());
        std::io::stdout().flush().unwrap();
        thread::sleep(Duration::from_secs(1000));
    }

    #[test]
    fn peers_die_with_the_test_process() {
        let mut helper = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "process::tests::orphan_helper",
                "--ignored",
                "--nocapture",
            ])
            .env("KVMUX_TESTS_ORPHAN_HELPER", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = helper.stdout.take().unwrap();
        let mut pid = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("PEER=") {
                pid = Some(rest.trim().parse::<u32>().unwrap());
                break;
            }
        }
        let pid = pid.expect("the helper reported its peer");
        assert!(alive(pid));
        helper.kill().unwrap(); // SIGKILL: no destructor runs in the helper
        helper.wait().unwrap();
        wait_until("the orphaned peer is gone", Duration::from_secs(10), || {
            !alive(pid)
        });
    }

    #[test]
    fn temp_dir_is_removed() {
        let dir = TempDir::new("t").unwrap();
        std::fs::write(dir.join("f"), b"x").unwrap();
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists());
    }
}
