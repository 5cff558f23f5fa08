#!/bin/bash
# gdb/run-gdb-in-svm.sh SOURCE_TREE: the gdb tests (c-tests/gdb/run.sh and
# run_rsp.sh of a libkvm tree whose c-tests/build-static/gdb_vmm is built)
# with the host's gdb and the VMM inside the SVM test host. The SVM host boots in agent mode with
# an e1000 on QEMU user networking (restrict=on: no traffic leaves QEMU),
# host 127.0.0.1:AGENT_PORT forwarded to its agent; gdb/svm-vmm, the tests'
# GDB_TEST_VMM, starts gdb_vmm there and forwards each test's gdb port.
#   GDB_TEST_FILTER=name   only the tests whose name contains it
#   AGENT_PORT, SVM_CPU, SVM_MEM, SVM_SMP, SVM_APPEND as for run-in-svm.sh
set -euo pipefail
. "$(dirname "$0")/../common.sh"
tree=$(realpath "${1:?usage: $0 LIBKVM_TREE}")
vmm=$tree/c-tests/build-static/gdb_vmm
[ -x "$vmm" ] || die "$vmm not built"
need_pkgs gdb python3

qemu=$("$SVM_DIR/build-qemu.sh")
kernel=$("$SVM_DIR/fetch-kernel.sh")
tmp=$(mktemp -d)
qemu_pid=
cleanup() {
    [ -n "$qemu_pid" ] && kill "$qemu_pid" 2> /dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
"$SVM_DIR/make-initramfs.sh" "$tmp/initramfs.cpio.gz" "$vmm"
export SVM_AGENT_PORT=${AGENT_PORT:-$((30000 + $$ % 10000))} SVM_MONITOR=$tmp/monitor
log=${SVM_LOG:-$tmp/serial.log}
: > "$log"

"$qemu" -accel tcg -cpu "${SVM_CPU:-EPYC}" -m "${SVM_MEM:-2G}" -smp "${SVM_SMP:-1}" \
    -display none -serial "file:$log" -no-reboot \
    -monitor "unix:$SVM_MONITOR,server=on,wait=off" \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$SVM_AGENT_PORT-:5555" \
    -device e1000,netdev=n0,romfile= \
    -kernel "$kernel/vmlinuz" -initrd "$tmp/initramfs.cpio.gz" \
    -append "console=ttyS0 panic=-1 quiet mitigations=off test_svm.mode=agent ${SVM_APPEND:-}" \
    < /dev/null &
qemu_pid=$!
start=$(date +%s)
until grep -q '^@@@ agent listening' "$log" 2> /dev/null; do
    kill -0 "$qemu_pid" 2> /dev/null || { cat "$log"; die "the SVM host stopped"; }
    [ $(( $(date +%s) - start )) -lt 300 ] || { cat "$log"; die "the SVM host did not boot"; }
    sleep 1
done
log "SVM host up in $(( $(date +%s) - start )) s; agent on 127.0.0.1:$SVM_AGENT_PORT"
grep '^@@@ kvm_amd' "$log" >&2 || true

status=0
export GDB_TEST_VMM=$SVM_DIR/gdb/svm-vmm GDB_TEST_REMOTE_VMM=1
"$tree/c-tests/run.sh" "$tree/c-tests/gdb/run.sh" "$tree/c-tests/gdb/run_rsp.sh" || status=$?
{ exec 3<> "/dev/tcp/127.0.0.1/$SVM_AGENT_PORT" && echo poweroff >&3 && timeout 10 head -n 1 <&3; } > /dev/null 2>&1 || true
timeout 30 tail --pid="$qemu_pid" -f /dev/null || true
qemu_pid=
exit $status
