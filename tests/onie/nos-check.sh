#!/bin/bash
# Runs in the Debian that the kube-gw ONIE installer put on the switch's disk (added with
# onie/build-installer --overlay by scripts/onie-test). Checks print "KGW-ONIE-CHECK ok|FAIL"
# on the serial console, then "KGW-ONIE-RESULT: <failures>"; then back to ONIE.
exec >/dev/ttyS0 2>&1
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
fails=0
check() { local what=$1; shift; if "$@"; then echo "KGW-ONIE-CHECK ok: $what"; else echo "KGW-ONIE-CHECK FAIL: $what"; fails=$((fails + 1)); fi; }
wait_until() { local end=$((SECONDS + $1)); shift; while [ $SECONDS -lt "$end" ]; do "$@" && return 0; sleep 0.5; done; "$@"; }
vip=@@VIP@@
echo "KGW-ONIE: $(. /etc/os-release; echo "$PRETTY_NAME"), $(uname -r), kube-gw $(dpkg-query -W -f='${Version}' kube-gw)"
check "the root file system is the KUBE-GW partition" bash -c '[ "$(findmnt -n -o SOURCE /)" = "$(blkid -L KUBE-GW)" ]'
check "kube-gw-onie-config copied config.toml from KGW-CONFIG (mode 0640)" \
  bash -c '[ "$(stat -c %a /etc/kube-gw/config.toml)" = 640 ] && grep -q "^name = \"kube-gw-vm\"" /etc/kube-gw/config.toml'
check "systemctl is-active kube-gw = active" wait_until 120 systemctl is-active --quiet kube-gw
check "the Service's $vip/32 is on lo" wait_until 180 bash -c "ip -o addr show dev lo | grep -q ' $vip/32 '"
ip -o addr show dev lo | sed 's/^/KGW-ONIE-LO: /'
check "GRUB's menu has the ONIE entry" grep -q '^menuentry ONIE' /boot/grub/grub.cfg
check "the running kernel is the one /vmlinuz names (the menu's default)" \
  bash -c '[ "$(readlink -f /vmlinuz)" = "/boot/vmlinuz-$(uname -r)" ]'
echo "KGW-ONIE-RESULT: $fails"
echo "KGW-ONIE: grub-reboot ONIE"
grub-reboot ONIE
systemctl reboot
