//! A child process whose standard error goes to a log file: stopped with
//! SIGTERM or SIGKILL, measured from `/proc`, killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Process {
    child: Child,
    /// Where its standard error goes.
    log: PathBuf,
    /// When it was spawned: drain and readiness times count from here.
    started: Instant,
    /// What messages about it call it.
    label: String,
}

impl Process {
    /// Spawns `cmd` with no standard input or output and its standard error
    /// in `log` (created).
    pub fn spawn(mut cmd: Command, log: PathBuf, label: &str) -> Result<Self, String> {
        let file = std::fs::File::create(&log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(file);
        let started = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {label}: {e}"))?;
        Ok(Process {
            child,
            started,
            log,
            label: label.to_string(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// An error, with the end of its log, if it has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited early ({status}); last lines of {}:\n{}",
                self.label,
                self.log.display(),
                self.log_tail(30)
            )),
            Err(e) => Err(format!("{}: {e}", self.label)),
        }
    }

    /// SIGKILL: no shutdown, no final commit.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits at most `within` for it to exit: its exit status,
    /// or `None` if it is still running.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid, which it still is: the child
        // has not been reaped (try_wait above returned None).
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// user + sys CPU seconds of the whole process (all its threads).
    pub fn cpu_seconds(&self) -> Result<f64, String> {
        let path = format!("/proc/{}/stat", self.pid());
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = text
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or_else(|| format!("{path}: unexpected format"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After ')': state is field 3 of stat(5); utime is 14, stime 15.
        let field = |n: usize| -> Result<u64, String> {
            fields
                .get(n - 3)
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| format!("{path}: no field {n}"))
        };
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if ticks <= 0 {
            return Err("sysconf(_SC_CLK_TCK) failed".into());
        }
        Ok((field(14)? + field(15)?) as f64 / ticks as f64)
    }

    /// Peak resident set size so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> Result<u64, String> {
        self.status_bytes("VmHWM")
    }

    /// Resident set size now (VmRSS), in bytes.
    pub fn rss(&self) -> Result<u64, String> {
        self.status_bytes("VmRSS")
    }

    /// A `/proc/<pid>/status` field in kB, as bytes.
    fn status_bytes(&self, name: &str) -> Result<u64, String> {
        let path = format!("/proc/{}/status", self.pid());
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| format!("{path}: no {name}"))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
