#!/usr/bin/env bash
# Two "hosts" on this machine for a real multi-host MPI run: two network namespaces joined
# by a veth pair (10.77.0.1 and 10.77.0.2), Open MPI over TCP between them, its launcher
# pointed at `ip netns exec` instead of ssh. Needs root (network namespaces) and the
# release build. Trains a short run with one rank per host and checks that it completes.
#
#   scripts/mpi-two-hosts.sh [clicktrain train options...]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "mpi-two-hosts.sh: needs root (it creates network namespaces)" >&2; exit 1; }
bin=$PWD/.build/release/clicktrain
[ -x "$bin" ] || { echo "mpi-two-hosts.sh: build first (swift build -c release)" >&2; exit 1; }

ns=(ct-host1 ct-host2)
ips=(10.77.0.1 10.77.0.2)
remove_namespaces() { for n in "${ns[@]}"; do ip netns del "$n" 2>/dev/null || true; done; }
remove_namespaces  # an interrupted earlier run's
work=$(mktemp -d)
trap 'remove_namespaces; rm -rf "$work"' EXIT
for n in "${ns[@]}"; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip link add ct-veth1 netns "${ns[0]}" type veth peer name ct-veth2 netns "${ns[1]}"
ip -n "${ns[0]}" addr add "${ips[0]}/24" dev ct-veth1
ip -n "${ns[1]}" addr add "${ips[1]}/24" dev ct-veth2
ip -n "${ns[0]}" link set ct-veth1 up
ip -n "${ns[1]}" link set ct-veth2 up

# The "ssh" Open MPI uses to start its daemon on the other host: `agent HOST COMMAND...`.
cat > "$work/netns-rsh" <<'AGENT'
#!/usr/bin/env bash
host=$1; shift
case $host in 10.77.0.1) n=ct-host1 ;; 10.77.0.2) n=ct-host2 ;; *) echo "netns-rsh: unknown host $host" >&2; exit 1 ;; esac
exec ip netns exec "$n" /bin/sh -c "$*"
AGENT
chmod +x "$work/netns-rsh"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--model resnet20 --method clicktrain --epochs 3 --choose-epoch 1 --hard-prune-epoch 2
                               --max-steps-per-epoch 10 --batch-size 64)
ip netns exec "${ns[0]}" mpirun -np 2 --host "${ips[0]},${ips[1]}" --map-by node \
  --mca plm_rsh_agent "$work/netns-rsh" --mca btl tcp,self \
  --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24 \
  "$bin" train "${args[@]}" --out "$work/run"
python3 - "$work/run/metrics.jsonl" <<'PY'
import json, sys
m = [json.loads(l) for l in open(sys.argv[1])]
print("two hosts over TCP: %d epochs, %d ranks, test accuracy %.2f%%, allreduce bytes per step %s" %
      (len(m), m[-1]["ranks"], 100 * m[-1]["test_acc"], " -> ".join(str(x["allreduce_bytes_per_step"]) for x in m)))
PY
