#!/bin/bash
# A two-node Slurm cluster on this one machine, for tests and for trying slurm/tfm.sbatch locally.
#
#   slurm/localhost-up.sh DIR      # writes DIR/slurm.conf, starts munged (if needed), slurmctld, slurmd n1 + n2
#   export SLURM_CONF=DIR/slurm.conf
#   sbatch --nodes=2 ... ; squeue ; scontrol requeue <job>
#   slurm/localhost-down.sh DIR    # stops the daemons by their pid files
#
# Needs root and Debian's slurm-wlm + munge (`apt-get install slurm-wlm munge`). Nodes n1 and n2 are two
# slurmd processes on 127.0.0.1 with distinct ports; no cgroups (proctrack/linuxproc, task/none), no
# accounting. AuthInfo=cred_expire=10 lets a requeued job start again after ~11 s instead of ~2 min.
set -euo pipefail
DIR=$(mkdir -p "${1:?usage: slurm/localhost-up.sh DIR}" && cd "$1" && pwd)
command -v slurmctld >/dev/null || { echo "slurm-wlm is not installed (apt-get install slurm-wlm munge)" >&2; exit 1; }
HOST=$(hostname)
CPUS=$(nproc)
PORT0=${TFM_SLURM_PORT:-6817}
mkdir -p "$DIR/ctld" "$DIR/n1" "$DIR/n2" "$DIR/log"
cat > "$DIR/slurm.conf" <<CONF
ClusterName=tfm
SlurmctldHost=${HOST}(127.0.0.1)
SlurmctldPort=${PORT0}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation=${DIR}/ctld
SlurmdSpoolDir=${DIR}/%n
SlurmctldPidFile=${DIR}/slurmctld.pid
SlurmdPidFile=${DIR}/slurmd-%n.pid
SlurmctldLogFile=${DIR}/log/slurmctld.log
SlurmdLogFile=${DIR}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
MpiDefault=none
ReturnToService=2
SwitchType=switch/none
JobRequeue=1
KillWait=5
MinJobAge=300
InactiveLimit=0
Waittime=0
NodeName=n1 NodeHostname=${HOST} NodeAddr=127.0.0.1 Port=$((PORT0 + 10)) CPUs=${CPUS} RealMemory=4000 State=UNKNOWN
NodeName=n2 NodeHostname=${HOST} NodeAddr=127.0.0.1 Port=$((PORT0 + 11)) CPUs=${CPUS} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
export SLURM_CONF="$DIR/slurm.conf"
if ! pgrep -x munged >/dev/null; then
  mkdir -p /run/munge && chown munge:munge /run/munge
  [ -s /etc/munge/munge.key ] || { mungekey --create; chown munge:munge /etc/munge/munge.key; chmod 600 /etc/munge/munge.key; }
  su -s /bin/sh munge -c /usr/sbin/munged
  touch "$DIR/started-munged"
fi
slurmctld -f "$SLURM_CONF"        # each daemonizes and writes its pid file into DIR
slurmd -f "$SLURM_CONF" -N n1     # several slurmd on one host: -N <NodeName>, a Port each
slurmd -f "$SLURM_CONF" -N n2
for _ in $(seq 1 60); do
  [ "$(sinfo -h -o %t 2>/dev/null | tr -d ' \n')" = "idle" ] && break
  sleep 0.5
done
sinfo -h -o "%P %D %t" | grep -q "2 idle" || { echo "slurm did not come up; logs in $DIR/log" >&2; exit 1; }
echo "export SLURM_CONF=$SLURM_CONF"
