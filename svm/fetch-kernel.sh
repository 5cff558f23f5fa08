#!/bin/bash
# fetch-kernel.sh: Debian bookworm's kernel for the SVM test host. Downloads
# (apt-get download, not installed) a linux-image-*-amd64 package and extracts
# vmlinuz and the modules the inner host needs, decompressed (busybox insmod
# cannot read .ko.xz), into
#   $SVM_CACHE/kernel-<package>-<version>/{vmlinuz,modules/*.ko}
# reused when present. Prints that directory.
#
#   KERNEL_PKG=linux-image-6.1.0-57-amd64   pin the package (default: what
#                                           linux-image-amd64 depends on now)
#   KERNEL_VERSION=6.1.192-1                pin its version (default: newest)
set -euo pipefail
. "$(dirname "$0")/common.sh"

# In load order. e1000 is for the gdb prototype's network (QEMU -nic user).
MODULES=(kernel/virt/lib/irqbypass kernel/arch/x86/kvm/kvm kernel/drivers/crypto/ccp/ccp
         kernel/arch/x86/kvm/kvm-amd kernel/drivers/net/ethernet/intel/e1000/e1000)

need_pkgs xz-utils

pkg=${KERNEL_PKG:-$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[^ ]*-amd64\)$/\1/p' | head -n 1)}
[ -n "$pkg" ] || die "cannot tell which linux-image package linux-image-amd64 depends on"
version=${KERNEL_VERSION:-$(newest_version "$pkg")}
[ -n "$version" ] || die "apt knows no version of $pkg (apt-get update?)"
out=$SVM_CACHE/kernel-$pkg-$version

if [ -f "$out/.complete" ]; then
    log "kernel $pkg $version cached in $out"
    echo "$out"
    exit 0
fi

work=$SVM_CACHE/build/kernel-$pkg-$version
rm -rf "$work" "$out"
mkdir -p "$work" "$out/modules"
log "downloading $pkg $version"
(cd "$work" && apt-get download -q "$pkg=$version" >&2)
dpkg-deb -x "$work"/*.deb "$work/root"
cp "$work"/root/boot/vmlinuz-* "$out/vmlinuz"
moddir=$(echo "$work"/root/lib/modules/*)
for m in "${MODULES[@]}"; do
    f=$(ls "$moddir/$m.ko" "$moddir/$m.ko.xz" 2>/dev/null | head -n 1) || true
    [ -n "$f" ] || die "$m.ko not in $pkg"
    case $f in
        *.xz) xz -dc "$f" > "$out/modules/$(basename "$m").ko" ;;
        *) cp "$f" "$out/modules/" ;;
    esac
    echo "$(basename "$m").ko" >> "$out/modules/order"
done
basename "$moddir" > "$out/release"
echo "$pkg $version" > "$out/.complete"
rm -rf "$work"
log "kernel $(cat "$out/release") in $out"
echo "$out"
