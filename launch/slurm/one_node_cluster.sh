#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, to try launch/slurm/ray.sbatch without a real
# cluster (or in CI). Debian/Ubuntu, run as root. Idempotent: a second call only checks.
#
#   bash launch/slurm/one_node_cluster.sh          # install, configure, start; then `sinfo`
#   bash launch/slurm/one_node_cluster.sh stop     # stop slurmd, slurmctld and munged
#
# It installs slurm-wlm and munge, creates a munge key if there is none, writes
# /etc/slurm/slurm.conf for this host (all its CPUs in partition "debug", no accounting,
# no cgroups, so it also works in a container) and starts munged, slurmctld and slurmd.
set -euo pipefail

if [[ "${1:-}" == stop ]]; then
  for d in slurmd slurmctld munged; do
    pid=$(cat "/run/$d.pid" 2>/dev/null || true)
    [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true
  done
  exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge
fi

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))  # leave 1 GiB to the system

# munge: the key every Slurm daemon and client authenticates with
if [[ ! -s /etc/munge/munge.key ]]; then
  mungekey --create --keyfile=/etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 755 /run/munge
install -d -o munge -g munge -m 700 /var/log/munge /var/lib/munge
if ! munge -n >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
  ln -sf /run/munge/munged.pid /run/munged.pid
fi

install -d -o slurm -g slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > /etc/slurm/slurm.conf <<CONF
# Written by launch/slurm/one_node_cluster.sh: a one-node test cluster on $host.
ClusterName=local
SlurmctldHost=$host
AuthType=auth/munge
SlurmUser=slurm
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
SlurmdTimeout=60
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd

for _ in $(seq 30); do  # the node registers within a few seconds
  if sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    sinfo
    exit 0
  fi
  sleep 1
done
echo "one_node_cluster: the node did not come up; see /var/log/slurm/*.log" >&2
sinfo >&2 || true
exit 1
