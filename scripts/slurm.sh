#!/usr/bin/env bash
# slurm.sh - a throwaway single-node Slurm cluster for relief's tests and CI.
#
# Debian 12 (bookworm), Slurm 22.05, run as root, no systemd, no cgroups, no slurmdbd.
# munged, slurmctld and slurmd run as plain daemons and are stopped by their PIDs.
#
#   bash scripts/slurm.sh install    # apt-get the packages (skipped when installed)
#   bash scripts/slurm.sh up         # write config, start the daemons, wait for an idle node
#   bash scripts/slurm.sh selftest   # arrays, --parsable, dependencies, scancel, env/cwd
#   bash scripts/slurm.sh status     # daemons, node, queue
#   bash scripts/slurm.sh down       # cancel all jobs, stop the daemons
#   eval "$(bash scripts/slurm.sh env)"   # export SLURM_CONF for sbatch/squeue/scontrol/...
#
# Everything (config, munge key and socket, state, spool, logs, pid files) lives under
# $RELIEF_SLURM_DIR (default /tmp/relief-slurm). Nothing under /etc is written: the
# clients find the config through SLURM_CONF, the daemons get it with -f.
#
# The node is configured with $RELIEF_SLURM_CPUS CPUs (default: 8, or the real count if
# higher) whatever the machine has (SlurmdParameters=config_overrides), so that a 2-core
# CI machine still runs several one-CPU tasks at once. Memory is not a consumable
# resource (CR_CPU); RealMemory is the real memory unless $RELIEF_SLURM_MEM_MB is set.
#
# Without slurmdbd there is no accounting: plain `sacct` fails. End states of jobs are
# seen with `scontrol -o show job ID` or `squeue -t all -j ID` while the controller keeps
# them (MinJobAge, here 3600 s), and with `sacct -c` / the jobcomp file afterwards.
set -euo pipefail

BASE=${RELIEF_SLURM_DIR:-/tmp/relief-slurm}
CTLD_PORT=${RELIEF_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${RELIEF_SLURM_SLURMD_PORT:-6818}
NODE=localhost
PARTITION=debug
PKGS=(slurmctld slurmd slurm-client munge)

export SLURM_CONF=$BASE/etc/slurm.conf
MUNGE_DIR=$BASE/munge
MUNGE_SOCK=$MUNGE_DIR/munge.socket
MUNGE_PID=$BASE/run/munged.pid
CTLD_PID=$BASE/run/slurmctld.pid
SLURMD_PID=$BASE/run/slurmd.pid
LOG=$BASE/log

say() { printf '[slurm %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { say "ERROR: $*" >&2; show_logs; exit 1; }
show_logs() {
  local f
  for f in "$LOG/munged.log" "$LOG/slurmctld.log" "$LOG/slurmd.log"; do
    if [[ -f $f ]]; then echo "----- last lines of $f" >&2; tail -n 20 "$f" >&2; fi
  done
  return 0
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# poll TIMEOUT_S WHAT CMD... : run CMD every 0.2 s until it succeeds or TIMEOUT_S pass
poll() {
  local limit=$1 what=$2 end
  shift 2
  end=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) >= end )); then say "timed out after ${limit}s waiting for $what"; return 1; fi
    sleep 0.2
  done
}
# a dead controller must not hang the caller: every client call has a hard timeout
sl() { timeout 30 "$@"; }

# running PIDFILE NAME : the PID in PIDFILE is alive and its command name is NAME
running() {
  local pid
  [[ -s $1 ]] || return 1
  pid=$(<"$1")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]]
}
# stop PIDFILE NAME : SIGTERM that PID, wait up to 20 s, then SIGKILL it
stop() {
  local pid
  if running "$1" "$2"; then
    pid=$(<"$1")
    say "stopping $2 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! poll 20 "$2 to exit" bash -c "! kill -0 $pid"; then
      kill -KILL "$pid" 2>/dev/null || true
      poll 5 "$2 to die" bash -c "! kill -0 $pid" || true
    fi
  fi
  rm -f "$1"
}

# apt_install PKGS... : apt-get install, with one `apt-get update` first when the package lists
# are missing (a fresh Debian image ships none), or afterwards when the lists are stale
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    say "apt-get update (no package lists yet)"
    timeout 300 apt-get update -qq
  fi
  if ! timeout 900 apt-get install -y -qq --no-install-recommends "$@"; then
    say "apt-get install failed; apt-get update and one retry"
    timeout 300 apt-get update -qq
    timeout 900 apt-get install -y -qq --no-install-recommends "$@"
  fi
}

cmd_install() {
  local missing=() p t0 guard='' rc=0
  t0=$(now)
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  if (( ${#missing[@]} == 0 )); then say "slurm packages already installed"; return 0; fi
  # The packages' maintainer scripts would start munge/slurmctld/slurmd through their
  # init scripts (munged on /run/munge, slurmctld failing without /etc/slurm/slurm.conf).
  # policy-rc.d exit 101 forbids that; we start our own daemons.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    guard=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$guard"
    chmod 755 "$guard"
  fi
  say "installing ${missing[*]}"
  apt_install "${missing[@]}" || rc=$?
  if [[ -n $guard ]]; then rm -f "$guard"; fi
  (( rc == 0 )) || die "apt-get failed (rc=$rc)"
  say "installed in $(elapsed "$t0") s: $(dpkg-query -W -f='${Version}' slurmctld)"
}

write_conf() {
  local hw real_cpus cpus mem
  # slurmd -C: this machine as slurmd sees it, e.g. "NodeName=x CPUs=2 Boards=1 ... RealMemory=23000"
  hw=$(slurmd -C | head -n1)
  real_cpus=$(grep -oE 'CPUs=[0-9]+' <<<"$hw" | cut -d= -f2)
  mem=$(grep -oE 'RealMemory=[0-9]+' <<<"$hw" | cut -d= -f2)
  [[ -n $real_cpus && -n $mem ]] || die "unexpected 'slurmd -C' output: $hw"
  cpus=${RELIEF_SLURM_CPUS:-$(( real_cpus > 8 ? real_cpus : 8 ))}
  mem=${RELIEF_SLURM_MEM_MB:-$mem}
  cat >"$SLURM_CONF" <<EOF
# generated by relief scripts/slurm.sh: one node, no slurmdbd, no cgroups, daemons as root
ClusterName=relief
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCK
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups in containers: plain process tracking, no task confinement
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# the node below has more CPUs than the machine: use the configured values, don't drain it
SlurmdParameters=config_overrides
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# the default batch_sched_delay=3 costs ~3 s per scheduling wave of a job array
SchedulerParameters=batch_sched_delay=0
# a dependency that can never be satisfied (afterok on a failed job) cancels the dependent
# job instead of leaving it PENDING forever (22.05: DependencyParameters, not SchedulerParameters)
DependencyParameters=kill_invalid_depend
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# finished jobs stay visible to scontrol/squeue -t all for an hour (there is no sacct)
MinJobAge=3600
KillWait=5
AccountingStorageType=accounting_storage/none
# sacct -c reads this file: the only record of finished jobs once MinJobAge has passed
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG/jobcomp.txt
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus Sockets=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

munge_ok() { munge -S "$MUNGE_SOCK" -n | unmunge -S "$MUNGE_SOCK"; }
ctld_ok() { sl scontrol ping | grep -q 'is UP'; }
node_idle() { [[ $(sl sinfo -h -N -n "$NODE" -o %t) == idle ]]; }
cluster_up() {
  running "$MUNGE_PID" munged && running "$CTLD_PID" slurmctld && running "$SLURMD_PID" slurmd &&
    munge_ok >/dev/null 2>&1 && ctld_ok
}

cmd_up() {
  local t0
  t0=$(now)
  command -v slurmctld >/dev/null || die "Slurm is not installed; run: bash $0 install"
  if cluster_up; then
    poll 60 "node $NODE to be idle or busy" bash -c "timeout 30 sinfo -h -N -n $NODE -o %t | grep -qE '^(idle|mix|alloc)'" ||
      die "node $NODE is $(sl sinfo -h -N -n "$NODE" -o %t)"
    say "already up (SLURM_CONF=$SLURM_CONF)"
    return 0
  fi
  cmd_down >/dev/null # leftovers of a half-started cluster
  rm -rf "$BASE/state" "$BASE/spool" "$BASE/run" "$LOG"
  mkdir -p "$BASE/etc" "$BASE/state" "$BASE/spool" "$BASE/run" "$LOG" "$MUNGE_DIR"
  # munged refuses a socket directory that others cannot traverse, and a key others can read
  chmod 755 "$BASE" "$MUNGE_DIR"
  [[ -s $MUNGE_DIR/munge.key ]] || mungekey -c -k "$MUNGE_DIR/munge.key"
  chmod 600 "$MUNGE_DIR/munge.key"
  write_conf

  munged --key-file="$MUNGE_DIR/munge.key" --socket="$MUNGE_SOCK" --pid-file="$MUNGE_PID" \
    --log-file="$LOG/munged.log" --seed-file="$MUNGE_DIR/munged.seed" || die "munged did not start"
  poll 20 "munged" munge_ok || die "munge does not work"
  slurmctld -f "$SLURM_CONF" || die "slurmctld did not start"
  poll 60 "slurmctld to answer" ctld_ok || die "slurmctld does not answer"
  slurmd -f "$SLURM_CONF" -N "$NODE" || die "slurmd did not start"
  poll 60 "node $NODE to be idle" node_idle || die "node $NODE is $(sl sinfo -h -N -n "$NODE" -o %t)"
  say "up in $(elapsed "$t0") s"
  sl sinfo -N -o '%P %N %t %c %m'
  say "use it with: eval \"\$(bash $0 env)\"   (export SLURM_CONF=$SLURM_CONF)"
}

cmd_down() {
  local ids
  if running "$CTLD_PID" slurmctld; then
    ids=$(sl squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ' || true)
    if [[ -n ${ids// /} ]]; then
      say "cancelling jobs: $ids"
      # shellcheck disable=SC2086
      sl scancel $ids || true
      poll 30 "the queue to drain" bash -c '[[ -z $(timeout 30 squeue -h -o %A) ]]' || true
    fi
  fi
  stop "$SLURMD_PID" slurmd
  stop "$CTLD_PID" slurmctld
  stop "$MUNGE_PID" munged
  say "down"
}

cmd_status() {
  local d pf rc=0
  for d in munged slurmctld slurmd; do
    pf=$BASE/run/$d.pid
    if running "$pf" "$d"; then echo "$d: running (pid $(<"$pf"))"; else echo "$d: not running"; rc=1; fi
  done
  echo "SLURM_CONF=$SLURM_CONF"
  if (( rc == 0 )) && ctld_ok; then
    sl sinfo -N -o '%P %N %t %c %m'
    sl squeue
  fi
  return $rc
}

# ---------------------------------------------------------------- self-test
# finished JOBID : every record of the job (all array tasks) is in a final state
finished() {
  local out
  out=$(sl scontrol -o show job "$1") && [[ -n $out ]] || return 1
  ! grep -qvE ' JobState=(COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|PREEMPTED|BOOT_FAIL|DEADLINE) ' <<<"$out"
}
# field JOB[_TASK] NAME : one field of `scontrol -o show job`
field() { sl scontrol -o show job "$1" | sed 's/^/ /' | grep -oE " $2=[^ ]*" | head -n1 | cut -d= -f2; }
# state JOB[_TASK] : the job's state as squeue reports it, finished jobs included
state() { sl squeue -h -t all -j "$1" -o %T | head -n1; }
check() {
  if (eval "$1") >/dev/null 2>&1; then say "PASS: $2"; else say "FAIL: $2"; FAILS=$((FAILS + 1)); fi
}

cmd_selftest() {
  local T=$BASE/selftest FAILS=0 t0 A D F G sub first lat nrun
  t0=$(now)
  cluster_up || die "the cluster is not up; run: bash $0 up"
  rm -rf "$T"
  mkdir -p "$T/wd"
  check node_idle "node $NODE is idle"

  # 1. job array with --parsable, submitted from $T/wd without --chdir and with an extra
  #    variable: the job's working directory and environment are the submitter's
  #    (sbatch --export=ALL is the default). Task 2 runs until it is cancelled.
  sub=$(now)
  A=$(cd "$T/wd" && RELIEF_PROBE=probe-42 sl sbatch --parsable -J relief-selftest -o "$T/a-%A_%a.log" --array=0-3 \
    --wrap 'now=$(date +%s.%N); echo $now > start.$SLURM_ARRAY_TASK_ID
            printf "%s %s\n" "$PWD" "$RELIEF_PROBE" > env.$SLURM_ARRAY_TASK_ID
            if [ $SLURM_ARRAY_TASK_ID -eq 2 ]; then echo $$ > pid.2; exec sleep 300; fi
            sleep 4; echo $SLURM_ARRAY_TASK_ID > out.$SLURM_ARRAY_TASK_ID')
  check '[[ $A =~ ^[0-9]+$ ]]' "sbatch --parsable printed the bare job id '$A'"
  # 2. a job that depends on the whole array ending in any state
  D=$(cd "$T/wd" && sl sbatch --parsable -o "$T/d.log" --dependency=afterany:"$A" --kill-on-invalid-dep=yes \
    --wrap 'date +%s.%N > dep.start; ls out.* > dep.seen')
  check '[[ $(state $D) == PENDING && $(field $D Reason) == Dependency ]]' "afterany:$A job $D is PENDING (Dependency)"

  poll 30 "the first array task to start" bash -c "compgen -G '$T/wd/start.*'" || FAILS=$((FAILS + 1))
  first=$(sort -n "$T"/wd/start.* | head -n1)
  lat=$(awk -v a="$sub" -v b="$first" 'BEGIN { printf "%.2f", b - a }')
  say "sbatch to first task running: $lat s"
  poll 30 "4 array tasks running" bash -c "[[ \$(timeout 30 squeue -h -j $A -t R -o %i | wc -l) -ge 4 ]]" || true
  nrun=$(sl squeue -h -j "$A" -t R -o %i | wc -l)
  check '(( nrun >= 3 ))' "$nrun tasks of array $A run at once on $(nproc) real cores"
  check '[[ $(cat $T/wd/env.0) == "$T/wd probe-42" ]]' "task runs in the submit directory with the submitter's environment: '$(cat "$T/wd/env.0" 2>/dev/null)'"
  poll 30 "task 2 to be running" bash -c "[ -s $T/wd/pid.2 ]" || FAILS=$((FAILS + 1))

  # 3. scancel of one array task: it ends CANCELLED, its process dies, the others complete
  sl scancel "${A}_2"
  poll 60 "array $A to finish" finished "$A" || FAILS=$((FAILS + 1))
  check '[[ $(field ${A}_2 JobState) == CANCELLED ]]' "scancel ${A}_2 -> scontrol JobState=$(field "${A}_2" JobState)"
  check '[[ $(state ${A}_2) == CANCELLED ]]' "squeue -t all -j ${A}_2 -> $(state "${A}_2")"
  check '! kill -0 $(cat $T/wd/pid.2)' "the cancelled task's process is gone"
  check '[[ $(field ${A}_0 JobState) == COMPLETED && $(field ${A}_3 JobState) == COMPLETED ]]' "tasks ${A}_0 ${A}_3 COMPLETED"
  check '[[ $(field ${A}_0 ExitCode) == 0:0 && $(field ${A}_2 ExitCode) == 0:15 ]]' \
    "ExitCode of ${A}_0 $(field "${A}_0" ExitCode), of the cancelled ${A}_2 $(field "${A}_2" ExitCode) (0:signal)"

  poll 60 "dependent job $D" finished "$D" || FAILS=$((FAILS + 1))
  check '[[ $(field $D JobState) == COMPLETED && $(tr "\n" " " < $T/wd/dep.seen) == "out.0 out.1 out.3 " ]]' \
    "afterany:$A job $D ran after the array ended: saw $(tr '\n' ' ' <"$T/wd/dep.seen" 2>/dev/null)"

  # 4. a failing job: FAILED with its exit code; afterok on it with --kill-on-invalid-dep=yes
  #    cancels the dependent job instead of leaving it pending
  F=$(cd "$T/wd" && sl sbatch --parsable -o "$T/f.log" --wrap 'exit 3')
  G=$(cd "$T/wd" && sl sbatch --parsable -o "$T/g.log" --dependency=afterok:"$F" --kill-on-invalid-dep=yes --wrap 'touch g.ran')
  poll 60 "failing job $F" finished "$F" || FAILS=$((FAILS + 1))
  check '[[ $(field $F JobState) == FAILED && $(field $F ExitCode) == 3:0 ]]' "exit 3 -> JobState=$(field "$F" JobState) ExitCode=$(field "$F" ExitCode)"
  poll 30 "job $G to be cancelled" finished "$G" || FAILS=$((FAILS + 1))
  check '[[ $(field $G JobState) == CANCELLED && ! -e $T/wd/g.ran ]]' "afterok:$F job $G $(field "$G" JobState) ($(field "$G" Reason)), never ran"

  # 5. accounting: no slurmdbd, so only `sacct -c` (the jobcomp file) knows finished jobs
  check '! sacct -n -j "$F" 2>/dev/null | grep -q .' "plain sacct has no records (no slurmdbd)"
  check 'sacct -c -n -P -S 2000-01-01 --format=JobID,State,ExitCode | grep -qx "$F|FAILED|3:0"' "sacct -c: $F|FAILED|3:0"

  # 6. sbatch --wait blocks and returns the job's exit code
  local rc=0
  sl sbatch --wait -o /dev/null --wrap 'exit 5' >/dev/null || rc=$?
  check '(( rc == 5 ))' "sbatch --wait returns the exit code (rc=$rc)"

  say "selftest finished in $(elapsed "$t0") s with $FAILS failures"
  (( FAILS == 0 ))
}

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) echo "export SLURM_CONF=$SLURM_CONF" ;;
  selftest) cmd_selftest ;;
  *)
    echo "usage: $0 install|up|selftest|status|down|env" >&2
    exit 2
    ;;
esac
