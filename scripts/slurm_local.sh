#!/usr/bin/env bash
# A throw-away single-node Slurm cluster on localhost, so that `hydra/launcher=slurm` (submitit) is
# tested against a real slurmctld/slurmd rather than a mock (docs/slurm.md, docs/libraries.md).
#
#   scripts/slurm_local.sh start  [DIR]   install if needed, start munged + slurmctld + slurmd, wait until
#                                         the node is idle; prints `export SLURM_CONF=...` on stdout
#   scripts/slurm_local.sh stop   [DIR]   cancel jobs, stop the daemons by their pid files (safe twice)
#   scripts/slurm_local.sh status [DIR]   daemons, ports and sinfo; exit 0 only when the cluster is up
#   scripts/slurm_local.sh env    [DIR]   print the `export SLURM_CONF=...` line for clients
#
#   eval "$(scripts/slurm_local.sh start)" && sinfo && scripts/slurm_local.sh stop
#
# Everything (slurm.conf, state, spool, logs, pid files, munge key and socket) lives in DIR (default
# $BISENET_PL_SLURM_DIR or /tmp/bisenet_pl_slurm): nothing in /etc or /run is touched, and two clusters
# in two folders do not see each other. No systemd: the daemons are started by hand and stopped by PID,
# never by name, because other Slurm daemons may legitimately run on the same machine.
#
# Environment:
#   BISENET_PL_SLURM_DIR        default DIR
#   BISENET_PL_SLURM_PORT       slurmctld port (slurmd uses PORT+1). Unset: 6817 if 6817 and 6818 are
#                               free, else the next free pair, so a foreign cluster on the default ports
#                               does not block us. Set: exactly that pair, or a clear error if taken.
#   BISENET_PL_SLURM_TIMEOUT    seconds to wait for the node to become idle (default 30)
#   BISENET_PL_SLURM_NO_INSTALL=1  never run apt-get (report "unavailable" instead)
#
# Accounting (slurmdbd + MariaDB) is deliberately off: submitit sees finished jobs through their result
# files without sacct; only a job killed before it writes one (scancel, OOM) would never be seen as done.
#
# Exit status: 0 ok; 1 failed (a bug or a broken installation: read DIR/log/*.log); 3 Slurm cannot be
# installed or started on this machine (not root, no apt-get, apt-get failed, no free port). The tests
# skip on 3 only, so a broken cluster is a failure and never a silent skip.
set -euo pipefail

readonly EXIT_UNAVAILABLE=3
readonly PACKAGES=(slurm-wlm munge)
readonly BINARIES=(munged mungekey slurmctld slurmd sinfo sbatch srun scontrol scancel squeue)
readonly DAEMONS=(munged slurmctld slurmd)

log() { echo "[slurm_local] $*" >&2; }
die() {
	log "error: $*"
	exit 1
}
unavailable() {
	log "unavailable: $*"
	exit "$EXIT_UNAVAILABLE"
}
usage() {
	sed -n '5,11p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 1
}

cmd=${1:-}
[[ -n $cmd ]] || usage
# Absolute: the daemons get it in their config, and the PID checks look for it in their command lines.
DIR=$(realpath -m -- "${2:-${BISENET_PL_SLURM_DIR:-/tmp/bisenet_pl_slurm}}")
CONF=$DIR/etc/slurm.conf
RUN=$DIR/run
LOGS=$DIR/log
MUNGE=$DIR/munge
SOCKET=$MUNGE/munge.socket
PARTITION=local
TIMEOUT=${BISENET_PL_SLURM_TIMEOUT:-30}
# Marks DIR as ours, so that start never rewrites a folder it did not make.
MARKER=.bisenet_pl_slurm

# --- processes ---------------------------------------------------------------------------------------

# Prints the PID in DIR/run/<name>.pid if that process is alive, is a <name> (/proc/PID/comm: a reused
# PID would not match), is not a zombie, and was started with this DIR's files (its command line names
# DIR): a stale pid file must never make us signal somebody else's process.
live_pid() {
	local name=$1 pidfile=$RUN/$1.pid pid state
	[[ -s $pidfile ]] || return 1
	# The daemon may delete its pid file between the test above and this read (it is exiting).
	pid=$(tr -dc "0-9" 2>/dev/null <"$pidfile") || return 1
	[[ -n $pid && -d /proc/$pid ]] || return 1
	[[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || return 1
	state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
	[[ -n $state && $state != Z ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$DIR/" || return 1
	echo "$pid"
}

stop_daemon() {
	local name=$1 pid i
	if ! pid=$(live_pid "$name"); then
		rm -f "$RUN/$name.pid"
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	# slurmctld saves its state on TERM; 10 s is plenty for one node before we insist.
	for ((i = 0; i < 100; i++)); do
		live_pid "$name" >/dev/null || break
		sleep 0.1
	done
	if live_pid "$name" >/dev/null; then
		log "$name (pid $pid) ignored SIGTERM for 10 s: sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		sleep 0.2
	fi
	rm -f "$RUN/$name.pid"
	log "stopped $name (pid $pid)"
}

# --- ports -------------------------------------------------------------------------------------------

# True if something accepts connections on 127.0.0.1:PORT. slurmctld/slurmd bind 0.0.0.0, so a listener
# on any local address makes them die with "Address already in use" after we have already waited.
port_busy() {
	timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

port_owner() {
	local owner=""
	if command -v ss >/dev/null 2>&1; then
		owner=$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:(([^)]*))' | head -1 || true)
	fi
	echo "${owner:-another process}"
}

choose_ports() {
	local port p
	if [[ -n ${BISENET_PL_SLURM_PORT:-} ]]; then
		port=$BISENET_PL_SLURM_PORT
		[[ $port =~ ^[0-9]+$ ]] || die "BISENET_PL_SLURM_PORT=$port is not a port number"
		for p in "$port" $((port + 1)); do
			if port_busy "$p"; then
				unavailable "port $p (BISENET_PL_SLURM_PORT=$port; slurmd uses +1) is in use by $(port_owner "$p")." \
					"Stop that cluster (scripts/slurm_local.sh stop <its DIR>) or choose another port."
			fi
		done
	else
		# Slurm's own defaults first; a foreign cluster there (a real one, or a stale one whose folder
		# was deleted so that we cannot stop it safely) only moves us to the next free pair.
		for ((port = 6817; port < 6917; port += 2)); do
			port_busy "$port" || port_busy $((port + 1)) || break
		done
		((port < 6917)) || unavailable "no free port pair for slurmctld/slurmd in 6817-6916"
		if ((port != 6817)); then
			for p in 6817 6818; do
				port_busy "$p" && log "port $p is in use by $(port_owner "$p")"
			done
			log "using ports $port/$((port + 1)) instead of 6817/6818"
		fi
	fi
	CTLD_PORT=$port
	SLURMD_PORT=$((port + 1))
}

# --- install -----------------------------------------------------------------------------------------

missing_binaries() {
	local b
	for b in "${BINARIES[@]}"; do
		command -v "$b" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$b" >/dev/null 2>&1 ||
			echo "$b"
	done
}

ensure_installed() {
	# Debian installs the daemons in /usr/sbin, which a non-login root shell may lack on PATH.
	export PATH=$PATH:/usr/sbin:/sbin
	local missing
	missing=$(missing_binaries | tr '\n' ' ')
	[[ -z $missing ]] && return 0
	[[ ${BISENET_PL_SLURM_NO_INSTALL:-0} == 1 ]] &&
		unavailable "Slurm is not installed (missing: $missing) and BISENET_PL_SLURM_NO_INSTALL=1"
	((EUID == 0)) ||
		unavailable "Slurm is not installed (missing: $missing) and installing needs root:" \
			"sudo apt-get install --no-install-recommends ${PACKAGES[*]}"
	command -v apt-get >/dev/null 2>&1 ||
		unavailable "Slurm is not installed (missing: $missing) and there is no apt-get to install" \
			"${PACKAGES[*]}; install Slurm and munge with your package manager"
	log "installing ${PACKAGES[*]} (apt-get, no recommends)"
	export DEBIAN_FRONTEND=noninteractive
	# A fresh CI image may have empty package lists: update only when the first try fails.
	if ! apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >"$LOGS/apt.log" 2>&1; then
		apt-get update -q >>"$LOGS/apt.log" 2>&1 || true
		apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$LOGS/apt.log" 2>&1 ||
			unavailable "apt-get install ${PACKAGES[*]} failed (log: $LOGS/apt.log): $(tail -1 "$LOGS/apt.log")"
	fi
	missing=$(missing_binaries | tr '\n' ' ')
	[[ -z $missing ]] || die "installed ${PACKAGES[*]} but still missing: $missing"
}

# --- config ------------------------------------------------------------------------------------------

write_config() {
	local host node_line real_mem cpus
	# The node line comes from slurmd itself (CPUs, boards, sockets, cores, threads), so it matches what
	# slurmd will report; a mismatch would drain the node ("Low socket*core*thread count").
	node_line=$(slurmd -C | head -1)
	[[ $node_line == NodeName=* ]] || die "slurmd -C printed no node line: $node_line"
	host=$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' <<<"$node_line")
	real_mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")
	cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$node_line")
	# Leave memory for the OS and the other processes on this shared machine; a RealMemory above what
	# slurmd measures would drain the node ("Low RealMemory").
	node_line=${node_line/RealMemory=$real_mem/RealMemory=$((real_mem * 8 / 10))}
	NODE=$host
	cat >"$CONF" <<CONF
# Written by scripts/slurm_local.sh: a one-node cluster on localhost. See docs/libraries.md for why each line.
ClusterName=bisenetpl
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
# munge through our own socket. A requeued job is held for cred_expire + 1 s (default 121 s): 10 s is
# plenty for a job launch on localhost and brings a requeue down to about 12 s.
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in a container and no systemd: track processes by PID, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without DefMemPerCPU a job without --mem takes the whole node and jobs run one at a time.
DefMemPerCPU=512
# Reject impossible jobs at sbatch time; otherwise they pend forever and a Hydra sweep hangs.
EnforcePartLimits=ALL
# Start jobs within a second and look at requeued jobs again quickly.
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2
ReturnToService=2
MailProg=/bin/true
KillWait=5
InactiveLimit=0
# Finished jobs stay visible to squeue/scontrol for 10 min: without accounting that is the only record.
MinJobAge=600
# No accounting (slurmdbd + MariaDB): submitit reads results from files; see docs/slurm.md.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
	log "node: $node_line (partition $PARTITION, $cpus CPUs)"
}

# --- commands ----------------------------------------------------------------------------------------

client() { SLURM_CONF=$CONF "$@"; }

node_state() {
	client timeout 5 sinfo -h -N -o '%T' 2>/dev/null | head -1
}

print_env() {
	echo "export SLURM_CONF=$CONF"
}

all_running() {
	local d
	for d in "${DAEMONS[@]}"; do
		live_pid "$d" >/dev/null || return 1
	done
}

cmd_stop() {
	local ids i d
	if live_pid slurmctld >/dev/null; then
		# Cancel jobs first: slurmstepd and the jobs' processes outlive a stopped slurmd otherwise.
		ids=$(client timeout 5 squeue -h -o %i 2>/dev/null | sort -u | tr '\n' ' ' || true)
		if [[ -n ${ids// /} ]]; then
			log "cancelling jobs: $ids"
			# shellcheck disable=SC2086 # one word per job id
			client timeout 10 scancel --quiet $ids 2>/dev/null || true
			for ((i = 0; i < 75; i++)); do
				[[ -z $(client timeout 5 squeue -h -t R,CG,S -o %i 2>/dev/null || true) ]] && break
				sleep 0.2
			done
		fi
	fi
	for d in slurmd slurmctld munged; do
		stop_daemon "$d"
	done
	rm -f "$SOCKET" "$SOCKET.lock"
	log "stopped (folder $DIR kept for its logs)"
}

# Starts the three daemons on CTLD_PORT/SLURMD_PORT and waits for the node to be idle. Returns 0 when
# up, 2 when a daemon lost a race for its port (another cluster started at the same moment), 1 otherwise;
# on failure whatever did start is stopped again. Called as `launch || rc=$?`, where bash ignores set -e,
# hence an explicit check after every step that matters.
launch_failed() {
	log "$*"
	cmd_stop
	return 1
}

launch() {
	local d state="" deadline
	rm -rf "${DIR:?}/etc" "$DIR/state" "$DIR/spool" "$RUN" "$MUNGE"
	mkdir -p "$DIR/etc" "$DIR/state" "$DIR/spool" "$RUN" "$MUNGE"
	# munged refuses a socket whose parent folders are not all executable by others (mktemp -d and
	# pytest's tmp folders are 0700), and the jobs' srun/slurmstepd must reach the socket.
	chmod 0755 "$DIR" "$DIR/etc" "$RUN" "$LOGS" "$MUNGE"
	for d in "${DAEMONS[@]}"; do
		: >"$LOGS/$d.log" # each start's errors only, so the tails printed below are this start's
	done
	write_config

	mungekey --create --keyfile="$MUNGE/munge.key" --force 2>>"$LOGS/munged.log" ||
		die "mungekey failed: $(tail -1 "$LOGS/munged.log")"
	chmod 0600 "$MUNGE/munge.key"
	munged --socket="$SOCKET" --key-file="$MUNGE/munge.key" --pid-file="$RUN/munged.pid" \
		--log-file="$LOGS/munged.log" --seed-file="$MUNGE/munged.seed" ||
		{ launch_failed "munged did not start: $(tail -3 "$LOGS/munged.log")"; return 1; }
	# Both fork into the background and write their pid files; -c: a cold start without old state.
	slurmctld -c -f "$CONF" ||
		{ launch_failed "slurmctld did not start: $(tail -5 "$LOGS/slurmctld.log")"; return 1; }
	slurmd -f "$CONF" -N "$NODE" ||
		{ launch_failed "slurmd did not start: $(tail -5 "$LOGS/slurmd.log")"; return 1; }

	deadline=$((SECONDS + TIMEOUT))
	while ((SECONDS < deadline)); do
		state=$(node_state || true)
		[[ $state == idle ]] && return 0
		for d in "${DAEMONS[@]}"; do
			[[ -s $RUN/$d.pid ]] || continue # still forking
			if ! live_pid "$d" >/dev/null; then
				if grep -qi "address already in use" "$LOGS/$d.log"; then
					cmd_stop
					return 2
				fi
				log "$d exited during start-up; the end of $LOGS/$d.log:"
				tail -5 "$LOGS/$d.log" >&2
				cmd_stop
				return 1
			fi
		done
		sleep 0.1
	done
	log "node state after ${TIMEOUT}s: '${state:-no answer}'; the ends of the logs:"
	tail -5 "$LOGS/slurmctld.log" "$LOGS/slurmd.log" >&2 || true
	cmd_stop
	return 1
}

cmd_start() {
	# Idempotent: a healthy cluster in DIR is reused; anything half-up (a crash, a run killed mid-way) is
	# stopped first, because its saved state would bring back stale jobs and node states.
	if all_running && [[ $(node_state) =~ ^(idle|mixed|allocated|completing) ]]; then
		log "already running in $DIR ($(node_state))"
		print_env
		return 0
	fi
	# slurmd starts jobs as their owner, which needs root; the throw-away cluster is run as root only.
	((EUID == 0)) || unavailable "the local cluster's slurmd must run as root (you are $(id -un));" \
		"on your own cluster, see docs/slurm.md"
	# start deletes and rewrites sub-folders of DIR (etc, state, spool, run, munge): never in a folder that
	# holds something else (a mistyped DIR such as / or $HOME).
	if [[ -d $DIR && ! -e $DIR/$MARKER && -n $(ls -A "$DIR") ]]; then
		die "$DIR is not empty and was not made by this script: refusing to use it"
	fi
	mkdir -p "$DIR" && touch "$DIR/$MARKER"
	[[ -d $RUN ]] && cmd_stop
	# Unix socket paths are limited to 108 bytes, with room for munged's ".lock" suffix.
	((${#SOCKET} < 100)) || die "DIR is too long for the munge socket (${#SOCKET} bytes): $SOCKET"

	mkdir -p "$LOGS"
	ensure_installed
	local t0=$SECONDS attempt rc
	for attempt in 1 2 3 4 5; do
		choose_ports
		rc=0
		launch || rc=$?
		((rc == 0)) && break
		((rc == 2)) || die "the cluster did not start (logs in $LOGS)"
		# Lost a race for the port pair against a cluster started at the same moment (two test sessions).
		[[ -z ${BISENET_PL_SLURM_PORT:-} ]] ||
			unavailable "port $CTLD_PORT or $SLURMD_PORT was taken while starting (BISENET_PL_SLURM_PORT is fixed)"
		log "port $CTLD_PORT/$SLURMD_PORT was taken while starting (attempt $attempt): trying the next pair"
	done
	((rc == 0)) || unavailable "no port pair could be bound after 5 attempts"
	log "up in $((SECONDS - t0))s: node $NODE idle, slurmctld port $CTLD_PORT, slurmd port $SLURMD_PORT, folder $DIR"
	print_env
}

cmd_status() {
	local d pid ok=0
	for d in "${DAEMONS[@]}"; do
		if pid=$(live_pid "$d"); then
			echo "$d: running (pid $pid)"
		else
			echo "$d: not running"
			ok=1
		fi
	done
	if [[ -f $CONF ]]; then
		echo "config: $CONF ($(grep -E '^Slurm(ctld|d)Port=' "$CONF" | tr '\n' ' '))"
		if ((ok == 0)); then
			client timeout 5 sinfo || ok=1
			client timeout 5 squeue || true
		fi
	else
		echo "config: none in $DIR"
	fi
	return "$ok"
}

case $cmd in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) print_env ;;
*) usage ;;
esac
