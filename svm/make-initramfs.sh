#!/bin/bash
# make-initramfs.sh OUT.cpio.gz DIR|PROGRAM...: the SVM test host's initramfs:
# busybox-static, the kernel modules from fetch-kernel.sh, the given statically
# linked programs (a directory means its executables, by name) and an /init that
# loads the modules, prints kvm_amd's parameters, runs each program in order and
# powers off. The serial console shows, for the host to parse:
#   @@@ kvm_amd <param>=<value>            one line per parameter
#   @@@ begin <program>                    then the program's stdout and stderr
#   @@@ end <program> status=<exit status> seconds=<run time>
#   @@@ done                               all programs ran
# Kernel command line words read by /init:
#   kvm_amd.<param>=<value>   passed to insmod (e.g. kvm_amd.npt=0)
#   test_svm.timeout=<s>      per program (default 600)
#   test_svm.mode=agent       instead of running the programs, bring up eth0
#                             (10.0.2.15/24) and serve agent.sh on TCP 5555
#                             (the gdb prototype, see gdb/)
set -euo pipefail
. "$(dirname "$0")/common.sh"

[ $# -ge 2 ] || { echo "usage: $0 OUT.cpio.gz DIR|PROGRAM..." >&2; exit 2; }
out=$(realpath -m "$1")
shift
need_pkgs busybox-static cpio binutils file
kernel=$("$SVM_DIR/fetch-kernel.sh")

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules,tests}
cp /bin/busybox "$root/bin/busybox"
cp "$kernel"/modules/*.ko "$kernel/modules/order" "$root/lib/modules/"
[ -f "$SVM_DIR/gdb/agent.sh" ] && install -m 755 "$SVM_DIR/gdb/agent.sh" "$root/bin/agent.sh"

programs=()
for arg in "$@"; do
    if [ -d "$arg" ]; then
        for f in "$arg"/*; do [ -f "$f" ] && [ -x "$f" ] && programs+=("$f"); done
    else
        programs+=("$arg")
    fi
done
for p in "${programs[@]}"; do
    file -L "$p" 2>/dev/null | grep -q 'statically linked' || log "warning: $p is not statically linked"
    name=$(basename "$p")
    strip --strip-debug -o "$root/tests/$name" "$p" 2>/dev/null || cp "$p" "$root/tests/$name"
    echo "$name" >> "$root/tests/order"
done
touch "$root/tests/order"

cat > "$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin HOME=/tmp TMPDIR=/tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
ip link set lo up
cmdline=$(cat /proc/cmdline)
param() { for w in $cmdline; do case $w in "$1"=*) echo "${w#*=}"; return;; esac; done; echo "$2"; }

for m in $(cat /lib/modules/order); do
    name=${m%.ko}; name=$(echo "$name" | tr - _)
    args=""
    for w in $cmdline; do case $w in "$name".*=*) args="$args ${w#"$name".}";; esac; done
    [ "$name" = e1000 ] && [ "$(param test_svm.mode tests)" != agent ] && continue
    insmod "/lib/modules/$m" $args || echo "@@@ insmod $m failed"
done
for p in /sys/module/kvm_amd/parameters/*; do echo "@@@ kvm_amd ${p##*/}=$(cat "$p")"; done
[ -c /dev/kvm ] || echo "@@@ no /dev/kvm"

if [ "$(param test_svm.mode tests)" = agent ]; then
    ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up
    echo "@@@ agent listening on 5555"
    cd /tests && nc -ll -p 5555 -e /bin/agent.sh
else
    timeout=$(param test_svm.timeout 600)
    cd /tmp
    for t in $(cat /tests/order); do
        echo "@@@ begin $t"
        start=$(date +%s)
        timeout -s KILL "$timeout" "/tests/$t" 2>&1
        echo "@@@ end $t status=$? seconds=$(( $(date +%s) - start ))"
    done
    echo "@@@ done"
fi
sync
poweroff -f
EOF
chmod 755 "$root/init"
(cd "$root" && find . | sort | cpio -o -H newc --quiet | gzip -1) > "$out"
log "initramfs $out ($(du -h "$out" | cut -f1), ${#programs[@]} programs)"
