//! Debian's `slurm-wlm` and `munge`: the Slurm test (`examples/tests/slurm`) starts a single-node cluster with
//! them, so the test command installs them when they are missing.

use anyhow::Result;

/// The programs the test runs, where Debian's packages put them.
const PROGRAMS: [&str; 8] = [
    "/usr/sbin/munged",
    "/usr/sbin/mungekey",
    "/usr/sbin/slurmctld",
    "/usr/sbin/slurmd",
    "/usr/bin/sbatch",
    "/usr/bin/squeue",
    "/usr/bin/scancel",
    "/usr/bin/sinfo",
];

/// Makes sure Slurm and munge are installed: installs Debian's `slurm-wlm` and `munge` with apt-get when one of
/// their programs is missing and this runs as root, and fails saying what to do otherwise.
pub fn ensure() -> Result<()> {
    crate::debian::ensure_packages(
        &["slurm-wlm", "munge"],
        &PROGRAMS,
        "the Slurm test runs a single-node Slurm cluster, as root",
    )
}
