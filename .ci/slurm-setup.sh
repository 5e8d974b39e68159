#!/usr/bin/env bash
# Installs what the SLURM engine tests need (tests/backends/slurm_cluster.py starts the one- and two-node
# clusters: the two nodes are two slurmd daemons on this host, `slurmd -N n1` and `slurmd -N n2`):
# slurmctld, slurmd, the client commands and munge, from the Debian archive (SLURM 22.05 on
# Debian 12; about 10 s, 13 MB). Idempotent and quiet: does nothing when every program is there,
# prints apt's output only when it fails.
set -euo pipefail
missing=0
for program in slurmctld slurmd munged sbatch srun scontrol sinfo squeue scancel; do
    if ! command -v "$program" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$program" ]; then missing=1; fi
done
if [ "$missing" = 0 ]; then
    exit 0
fi
sudo=()
if [ "$(id -u)" != 0 ]; then sudo=(sudo); fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "slurm-setup: installing slurmctld slurmd slurm-client munge failed" >&2
    exit 1
fi
echo "slurm-setup: installed slurmctld slurmd slurm-client munge" >&2
