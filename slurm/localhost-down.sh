#!/bin/bash
# Stops what slurm/localhost-up.sh DIR started, by the pid files in DIR (munged only if it started it).
DIR=${1:?usage: slurm/localhost-down.sh DIR}
for f in "$DIR"/slurmd-n1.pid "$DIR"/slurmd-n2.pid "$DIR"/slurmctld.pid; do
  [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null
done
if [ -e "$DIR/started-munged" ] && [ -s /run/munge/munged.pid ]; then kill "$(cat /run/munge/munged.pid)" 2>/dev/null; rm -f "$DIR/started-munged"; fi
for _ in $(seq 1 20); do
  alive=0
  for f in "$DIR"/slurmd-n1.pid "$DIR"/slurmd-n2.pid "$DIR"/slurmctld.pid; do [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break
  sleep 0.25
done
for f in "$DIR"/slurmd-n1.pid "$DIR"/slurmd-n2.pid "$DIR"/slurmctld.pid; do  # still there after 5 s
  [ -s "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null
done
exit 0
