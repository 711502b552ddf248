#!/bin/sh
# kube-gw ONIE installer (onie-installer-x86_64-kube-gw.bin): this POSIX sh header, then
# the payload (a gzip'd tar of the Debian root file system with kube-gw installed).
# ONIE runs it with busybox ash. Nothing is written before the payload's SHA-256 matches.
# It adds (or replaces) its own GPT partition, labelled KUBE-GW, on the disk that holds
# ONIE-BOOT; it never writes GRUB-BOOT's neighbours ONIE-BOOT or any *-DIAG partition;
# it installs GRUB in the MBR (and GRUB-BOOT) with a menu entry that chainloads ONIE, and
# tells ONIE a NOS is installed (onie-nos-mode -s). See onie/README.md.
#   sh onie-installer-x86_64-kube-gw.bin            # as ONIE runs it
#   KUBE_GW_INSTALLER_CHECK_ONLY=1 sh ...bin        # verify the payload, write nothing
payload_offset=@@PAYLOAD_OFFSET@@
payload_sha256=@@PAYLOAD_SHA256@@
payload_version=@@VERSION@@
part_label=KUBE-GW
part_size=@@PART_SIZE@@
set -e
say() { echo "kube-gw installer: $*"; }
die() { echo "kube-gw installer: ERROR: $*" >&2; exit 1; }
self=$0
[ -f "$self" ] || die "cannot read myself ($self)"

say "kube-gw $payload_version for x86_64; checking the payload (SHA-256)"
got=$(tail -c +$((payload_offset + 1)) "$self" | sha256sum | cut -d' ' -f1)
if [ "$got" != "$payload_sha256" ]; then
  die "payload checksum mismatch (expected $payload_sha256, got $got): the file is damaged or altered; nothing was written"
fi
say "payload checksum ok"
[ -z "$KUBE_GW_INSTALLER_CHECK_ONLY" ] || exit 0

[ -r /etc/machine.conf ] && . /etc/machine.conf
[ "${onie_arch:-x86_64}" = x86_64 ] || die "this installer is for x86_64, the machine is ${onie_arch}"
say "platform ${onie_platform:-unknown}, ONIE ${onie_version:-unknown}"

# The disk that holds ONIE-BOOT (as ONIE's demo installer finds it).
onie_part=$(blkid | awk -F: '/LABEL="ONIE-BOOT"/ {print $1; exit}')
[ -n "$onie_part" ] || die "no ONIE-BOOT partition found: is this an ONIE system?"
case $onie_part in
  *[0-9]p[0-9]*) disk=${onie_part%p[0-9]*} ;;
  *) disk=$(echo "$onie_part" | sed 's/[0-9]*$//') ;;
esac
[ -b "$disk" ] || die "cannot find the disk of $onie_part"
say "ONIE's disk is $disk (ONIE-BOOT: $onie_part)"
part_dev() { case $disk in *[0-9]) echo "${disk}p$1" ;; *) echo "$disk$1" ;; esac; }

# Our partition: the old one (found by its GPT name) goes; every other partition stays.
old=$(sgdisk -p "$disk" | awk -v l="$part_label" '$1 ~ /^[0-9]+$/ && $NF == l {print $1}')
for n in $old; do
  say "removing the previous $part_label partition ($(part_dev "$n"))"
  sgdisk -d "$n" "$disk" >/dev/null
done
sgdisk -n "0:0:+$part_size" -t 0:8300 -c "0:$part_label" "$disk" >/dev/null \
  || die "could not create a $part_size partition on $disk (not enough free space?)"
n=$(sgdisk -p "$disk" | awk -v l="$part_label" '$1 ~ /^[0-9]+$/ && $NF == l {print $1}')
dev=$(part_dev "$n")
# The kernel's view: partprobe re-reads the whole table, which fails while ONIE-BOOT is
# mounted; partx adds just the new partition.
partprobe "$disk" 2>/dev/null || partx -u "$disk" 2>/dev/null || true
[ -b "$dev" ] || partx -a -n "$n" "$disk" 2>/dev/null || true
i=0; while [ ! -b "$dev" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
[ -b "$dev" ] || die "the kernel does not show $dev after partitioning"
say "partition $n ($dev), $part_size, GPT name $part_label"

mkfs.ext4 -q -F -L "$part_label" "$dev"
mnt=$(mktemp -d)
mount -t ext4 "$dev" "$mnt"
cleanup() {
  for m in dev/pts dev proc sys; do umount "$mnt/$m" 2>/dev/null || true; done
  umount "$mnt" 2>/dev/null || true
}
trap cleanup EXIT
say "unpacking the root file system"
tail -c +$((payload_offset + 1)) "$self" | tar -xzf - -C "$mnt"
echo "LABEL=$part_label / ext4 defaults,errors=remount-ro 0 1" > "$mnt/etc/fstab"

say "installing GRUB in the MBR of $disk"
for m in dev dev/pts proc sys; do mount -o bind "/$m" "$mnt/$m"; done
chroot "$mnt" grub-install --target=i386-pc --boot-directory=/boot --recheck "$disk" 2>&1 | sed 's/^/  /'
[ -f "$mnt/boot/grub/i386-pc/core.img" ] || die "grub-install did not install GRUB"
# The kernel by the symlinks Debian's kernel packages keep current (/vmlinuz, /initrd.img,
# and .old for the one before), so that a kernel upgrade needs no new menu.
[ -f "$mnt/vmlinuz" ] && [ -f "$mnt/initrd.img" ] || die "no /vmlinuz and /initrd.img in the root file system"
cat > "$mnt/boot/grub/grub.cfg" <<GRUB
# Written by the kube-gw ONIE installer. grub-reboot ONIE returns to ONIE.
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=3
set default=0
load_env
if [ -n "\${next_entry}" ] ; then
  set default="\${next_entry}"
  set next_entry=
  save_env next_entry
fi
menuentry 'kube-gw' {
  search --no-floppy --label --set=root $part_label
  linux /vmlinuz root=LABEL=$part_label ro console=tty0 console=ttyS0,115200n8 net.ifnames=0 quiet
  initrd /initrd.img
}
menuentry 'kube-gw (previous kernel)' {
  search --no-floppy --label --set=root $part_label
  linux /vmlinuz.old root=LABEL=$part_label ro console=tty0 console=ttyS0,115200n8 net.ifnames=0 quiet
  initrd /initrd.img.old
}
GRUB
# The way back to ONIE: ONIE's own entry (its grub.d/50_onie_grub), as ONIE's demo installer
# does; the same chainload entry if this ONIE has none.
if [ -x /mnt/onie-boot/onie/grub.d/50_onie_grub ]; then
  /mnt/onie-boot/onie/grub.d/50_onie_grub >> "$mnt/boot/grub/grub.cfg"
else
  printf '%s\n' 'menuentry ONIE {' '  search --no-floppy --label --set=root ONIE-BOOT' \
    "  echo 'Loading ONIE ...'" '  chainloader +1' '}' >> "$mnt/boot/grub/grub.cfg"
fi
grep -q '^menuentry ONIE' "$mnt/boot/grub/grub.cfg" || die "no ONIE entry in GRUB's menu"
chroot "$mnt" grub-editenv /boot/grub/grubenv create
cleanup
trap - EXIT

# ONIE: a NOS is installed (and ONIE's own boot mode is cleared).
if [ -x /bin/onie-nos-mode ]; then /bin/onie-nos-mode -s; fi
say "kube-gw $payload_version installed on $dev; ONIE reboots into it"
exit 0
