#!/bin/bash
# run-in-svm.sh PROGRAM|DIR...: boots the SVM test host (Debian's kernel with
# kvm_amd, inside QEMU TCG with the patched SVM emulation) with an initramfs of
# the given statically linked programs, runs them in order and prints the
# serial console. Then a table of each program's "N passed, M failed" line
# and the sum, as c-tests/run.sh does. Exit status 0 only if the host booted,
# every program ran and exited 0, and no test failed.
#
#   SVM_CPU=EPYC           QEMU -cpu model (needs svm; TCG has no vmx)
#   SVM_MEM=2G SVM_SMP=1   inner host memory and cpus (with 2, multi-vcpu tests
#                          hang the inner kernel: see README.txt)
#   SVM_APPEND="kvm_amd.npt=0"   extra kernel command line (see make-initramfs.sh)
#   SVM_TIMEOUT=3600       seconds for the whole boot and run
#   TEST_TIMEOUT=600       seconds for each program
#   SVM_LOG=file           keep the serial log there (default: a temporary file)
#   SVM_MONITOR=path       QEMU's HMP monitor on this unix socket (to debug a hang)
set -euo pipefail
. "$(dirname "$0")/common.sh"

[ $# -ge 1 ] || { echo "usage: $0 PROGRAM|DIR..." >&2; exit 2; }
qemu=$("$SVM_DIR/build-qemu.sh")
kernel=$("$SVM_DIR/fetch-kernel.sh")

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
log=${SVM_LOG:-$tmp/serial.log}
mkdir -p "$(dirname "$log")"
"$SVM_DIR/make-initramfs.sh" "$tmp/initramfs.cpio.gz" "$@"

monitor=none
[ -n "${SVM_MONITOR:-}" ] && monitor=unix:$SVM_MONITOR,server=on,wait=off
start=$(date +%s)
status=0
timeout --foreground --signal=KILL "${SVM_TIMEOUT:-3600}" "$qemu" \
    -accel tcg -cpu "${SVM_CPU:-EPYC}" -m "${SVM_MEM:-2G}" -smp "${SVM_SMP:-1}" \
    -display none -monitor "$monitor" \
    -serial stdio -nic none -no-reboot \
    -kernel "$kernel/vmlinuz" -initrd "$tmp/initramfs.cpio.gz" \
    -append "console=ttyS0 panic=-1 loglevel=5 mitigations=off test_svm.timeout=${TEST_TIMEOUT:-600} ${SVM_APPEND:-}" \
    < /dev/null 2>&1 | sed -u 's/\r$//' | tee "$log" || status=$?
elapsed=$(( $(date +%s) - start ))

# Each program's summary line: the last "N passed, M failed" between its markers.
echo
echo "== SVM host results (${elapsed} s, qemu status $status)"
awk '
    /^@@@ begin / { name = $3; summary = "no summary line"; next }
    /^@@@ end /   { split($4, s, "="); split($5, t, "=")
                    printf "%-20s %-24s exit %-3s %5s s\n", $3, summary, s[2], t[2]
                    if (s[2] != 0 || summary !~ / 0 failed/) bad = 1
                    n = split(summary, w, " "); if (w[2] == "passed,") { p += w[1]; f += w[3] } else f++
                    name = ""; next }
    name != "" && /^[0-9]+ passed, [0-9]+ failed/ { summary = $0; sub(/[,:] *[0-9]+ skipped.*/, "", summary) }
    /^@@@ done/ { done = 1 }
    END { if (name != "") { print name " did not end (timeout or crash)"; f++; bad = 1 }
          if (!done) { print "the SVM host did not finish its run"; bad = 1 }
          printf "%d passed, %d failed\n", p, f; exit bad }
' "$log"
