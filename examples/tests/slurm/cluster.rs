//! A single-node Slurm cluster on this machine, for the test's lifetime: Debian's `munge` and `slurm-wlm`
//! daemons (munged, slurmctld, slurmd) run as root with a generated `slurm.conf` for localhost and two CPUs,
//! everything they write in a temporary directory, their own ports and munge socket. Dropping the [`Cluster`]
//! (also while a panic unwinds) cancels its jobs and stops the daemons by their pid files.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How to get the packages, for the failure messages.
const INSTALL: &str =
    "install Debian's packages as root with `apt-get install -y slurm-wlm munge` \
                       (`cargo xtask test` does it when they are missing)";

/// Finds `name` on PATH or in the system binary folders.
fn program(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("{name} not found: the Slurm test runs a real Slurm cluster; {INSTALL}")
        })
}

/// A free TCP port on localhost (bound, read, released).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Runs `command` to completion, failing with its output when it fails.
fn checked(command: &mut Command, what: &str) -> Result<Output> {
    let output = command.output().with_context(|| format!("starting {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}

/// The running cluster.
pub struct Cluster {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

impl Cluster {
    /// Starts munged, slurmctld and slurmd and waits until the node takes jobs.
    pub fn start() -> Result<Self> {
        let root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
        if !root {
            bail!(
                "the Slurm test starts munged, slurmctld and slurmd, which must run as root: run `cargo xtask \
                 test` (or this test) as root"
            );
        }
        let [munged, mungekey, slurmctld, slurmd] =
            ["munged", "mungekey", "slurmctld", "slurmd"].map(program);
        let (munged, mungekey, slurmctld, slurmd) = (munged?, mungekey?, slurmctld?, slurmd?);
        for client in ["sbatch", "squeue", "scancel", "sinfo"] {
            program(client)?;
        }
        let dir = tempfile::Builder::new().prefix("detox-slurm-").tempdir()?;
        // munged wants every folder on its socket's path searchable by all.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let conf = dir.path().join("slurm.conf");
        // From here on, dropping the cluster stops whatever was started.
        let cluster = Self { dir, conf };
        let d = cluster.dir.path().to_path_buf();
        for sub in ["munge", "state", "spool", "log"] {
            std::fs::create_dir_all(d.join(sub))?;
            std::fs::set_permissions(d.join(sub), std::fs::Permissions::from_mode(0o755))?;
        }
        let socket = d.join("munge/munge.socket");
        checked(
            Command::new(&mungekey).arg("--create").arg("--keyfile").arg(d.join("munge/munge.key")),
            "mungekey",
        )?;
        checked(
            Command::new(&munged)
                .arg(format!("--socket={}", socket.display()))
                .arg(format!("--key-file={}", d.join("munge/munge.key").display()))
                .arg(format!("--log-file={}", d.join("log/munged.log").display()))
                .arg(format!("--pid-file={}", d.join("munged.pid").display()))
                .arg(format!("--seed-file={}", d.join("munge/munged.seed").display())),
            "munged",
        )
        .map_err(|e| e.context(cluster.logs()))?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()).min(2);
        let (ctld_port, slurmd_port) = (free_port()?, free_port()?);
        std::fs::write(
            &cluster.conf,
            format!(
                "ClusterName=detoxtest\n\
                 SlurmctldHost=localhost\n\
                 SlurmctldPort={ctld_port}\n\
                 SlurmdPort={slurmd_port}\n\
                 SlurmUser=root\n\
                 SlurmdUser=root\n\
                 AuthType=auth/munge\n\
                 CredType=cred/munge\n\
                 AuthInfo=socket={socket}\n\
                 StateSaveLocation={d}/state\n\
                 SlurmdSpoolDir={d}/spool\n\
                 SlurmctldPidFile={d}/slurmctld.pid\n\
                 SlurmdPidFile={d}/slurmd.pid\n\
                 SlurmctldLogFile={d}/log/slurmctld.log\n\
                 SlurmdLogFile={d}/log/slurmd.log\n\
                 ProctrackType=proctrack/linuxproc\n\
                 TaskPlugin=task/none\n\
                 SelectType=select/cons_tres\n\
                 SelectTypeParameters=CR_CPU\n\
                 JobAcctGatherType=jobacct_gather/none\n\
                 AccountingStorageType=accounting_storage/none\n\
                 JobCompType=jobcomp/none\n\
                 MpiDefault=none\n\
                 MailProg=/bin/true\n\
                 ReturnToService=2\n\
                 SchedulerType=sched/backfill\n\
                 InactiveLimit=0\n\
                 MinJobAge=600\n\
                 KillWait=5\n\
                 NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN\n\
                 PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP\n",
                socket = socket.display(),
                d = d.display(),
            ),
        )?;
        checked(Command::new(&slurmctld).arg("-f").arg(&cluster.conf), "slurmctld")
            .map_err(|e| e.context(cluster.logs()))?;
        checked(
            Command::new(&slurmd).arg("-f").arg(&cluster.conf).args(["-N", "localhost"]),
            "slurmd",
        )
        .map_err(|e| e.context(cluster.logs()))?;
        cluster.wait_for_idle_node()?;
        Ok(cluster)
    }

    fn wait_for_idle_node(&self) -> Result<()> {
        let started = Instant::now();
        loop {
            let output =
                self.command("sinfo").args(["--noheader", "--Node", "--format=%t"]).output()?;
            let state = String::from_utf8_lossy(&output.stdout).trim().to_string();
            if output.status.success() && state == "idle" {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!(
                    "the Slurm node is not idle 60 s after start (sinfo: {state:?} {})\n{}",
                    String::from_utf8_lossy(&output.stderr).trim(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// A Slurm client command (or any program) that talks to this cluster.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command.env("SLURM_CONF", &self.conf);
        command
    }

    /// The ends of the daemons' logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for name in ["munged.log", "slurmctld.log", "slurmd.log"] {
            let log =
                std::fs::read_to_string(self.dir.path().join("log").join(name)).unwrap_or_default();
            let lines: Vec<&str> = log.lines().filter(|l| !l.contains("pmix")).collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            text.push_str(&format!("--- {name} (last lines)\n{}\n", tail.join("\n")));
        }
        text
    }

    /// Array job `array`'s tasks and job `others` that Slurm still holds, as `id|task|state|reason` lines.
    pub fn queued(&self, ids: &[&str]) -> Result<Vec<String>> {
        let output = self
            .command("squeue")
            .args(["--noheader", "--array", "--format=%F|%K|%T|%r", "--jobs"])
            .arg(ids.join(","))
            .output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() && !stderr.contains("Invalid job id") {
            bail!("squeue failed: {stderr}");
        }
        Ok(String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect())
    }

    /// Waits until Slurm holds none of `ids` (their tasks included) any more.
    pub fn wait_until_gone(&self, ids: &[&str], limit: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            let queued = self.queued(ids)?;
            if queued.is_empty() {
                return Ok(());
            }
            if started.elapsed() > limit {
                bail!(
                    "jobs {ids:?} still queued after {} s: {queued:?}\n{}",
                    limit.as_secs(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn stop_daemon(&self, pid_file: &str) {
        let Ok(text) = std::fs::read_to_string(self.dir.path().join(pid_file)) else { return };
        let pid = text.trim();
        if pid.is_empty() || !pid.chars().all(|c| c.is_ascii_digit()) {
            return;
        }
        let alive = || Path::new("/proc").join(pid).exists();
        let _ = Command::new("kill").args(["-TERM", pid]).output();
        let started = Instant::now();
        while alive() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(100));
        }
        if alive() {
            let _ = Command::new("kill").args(["-KILL", pid]).output();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Jobs first, so that no task outlives the daemons, then the daemons, newest first.
        if self.conf.is_file() {
            let _ = self.command("scancel").args(["--user", "root"]).output();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(20) {
                let listed = self.command("squeue").args(["--noheader", "--format=%i"]).output();
                match listed {
                    Ok(o)
                        if o.status.success()
                            && !o.stdout.iter().any(|b| !b.is_ascii_whitespace()) =>
                    {
                        break
                    }
                    Ok(o) if o.status.success() => std::thread::sleep(Duration::from_millis(200)),
                    _ => break,
                }
            }
        }
        for pid_file in ["slurmd.pid", "slurmctld.pid", "munged.pid"] {
            self.stop_daemon(pid_file);
        }
    }
}
