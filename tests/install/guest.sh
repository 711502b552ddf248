#!/bin/bash
# Runs inside the Debian 12 or 11 VM (systemd as PID 1), started by
# kube-gw-install-test.service. Walks the user's path: add the repository (and see apt
# refuse badly signed ones), apt install, configure, start, reload, watchdog, stop, apt
# upgrade, join the cluster, remove, purge. Every check prints "KGW-CHECK ok|FAIL: what"; the last line is
# "KGW-RESULT: <failures>". Output goes to the serial console, read by scripts/install-test.
exec >/dev/ttyS0 2>&1
set -u
export DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin
fails=0
ok() { echo "KGW-CHECK ok: $*"; }
bad() { echo "KGW-CHECK FAIL: $*"; fails=$((fails + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
# wait_until SECONDS command...: true once the command succeeds.
wait_until() {
  local end=$((SECONDS + $1)); shift
  while [ $SECONDS -lt "$end" ]; do "$@" && return 0; sleep 0.2; done
  "$@"
}
active() { systemctl is-active --quiet kube-gw; }
mainpid() { systemctl show -p MainPID --value kube-gw; }
cd /root
. /etc/os-release
suite=$VERSION_CODENAME old=$(cat version-old) new=$(cat version-new) url=$(cat repo-url)
echo "KGW-INFO: Debian $VERSION_ID ($suite), $(uname -r), systemd $(systemctl --version | head -1 | cut -d' ' -f2), glibc $(dpkg-query -W -f='${Version}' libc6)"

# 0. The network (qemu's user networking: the guest is 10.0.2.15, the host 10.0.2.2, where
#    the repository and the test control plane are).
modprobe virtio_net 2>/dev/null || true
nic_name() { ip -o link show | awk -F': ' '$2 ~ /^(en|eth)/ {print $2; exit}'; }
wait_until 30 bash -c '[ -n "$(ip -o link show | awk -F": " "\$2 ~ /^(en|eth)/")" ]' || true
nic=$(nic_name)
check "the VM has a network interface (${nic:-none})" test -n "$nic"
ip link set "$nic" up && ip addr add 10.0.2.15/24 dev "$nic" && ip route add default via 10.0.2.2
ip -o addr show | sed 's/^/KGW-NET: /'; ip route | sed 's/^/KGW-NET: /'

# 1. The repository, as the README tells the user: the keyring file, a sources.list.d entry
#    with signed-by. First two that must be refused, then the good one.
install -m 0644 /root/kube-gw-archive-keyring.gpg /usr/share/keyrings/kube-gw-archive-keyring.gpg
sources() { # path under the server
  cat > /etc/apt/sources.list.d/kube-gw.sources <<SOURCES
Types: deb
URIs: $url/$1
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/kube-gw-archive-keyring.gpg
SOURCES
}
# refused REPO REASON: apt fetched the repository's InRelease (the attempt), reported REASON
# for it, and then knows no kube-gw (nothing from it was taken).
refused() {
  sources "$1"
  local out
  out=$(apt-get update 2>&1); echo "$out" | sed "s/^/KGW-APT-$1: /"
  check "apt fetched $1's InRelease" bash -c 'grep -qE "^(Err|Ign|Get|Hit):[0-9]+ $2/$1 $3 InRelease" <<<"$4"' _ "$1" "$url" "$suite" "$out"
  check "apt refused $1 ($2)" bash -c 'grep -q -- "$1" <<<"$2"' _ "$2" "$out"
  check "after $1, apt has no kube-gw to install" bash -c '! apt-cache show kube-gw >/dev/null 2>&1'
  check "apt install kube-gw from $1 fails" bash -c '! apt-get install -y -q kube-gw >/dev/null 2>&1'
}
refused bad-key NO_PUBKEY
refused bad-sig BADSIG
sources good
check "apt update with the good repository" apt-get update -q
check "the good repository offers kube-gw $old" \
  bash -c '[ "$(apt-cache policy kube-gw | awk "/Candidate:/ {print \$2}")" = "$1" ]' _ "$old"

check "apt install kube-gw" apt install -y -q kube-gw
check "kube-gw $old is installed" bash -c '[ "$(dpkg-query -W -f="\${Version}" kube-gw)" = "$1" ]' _ "$old"
check "the unit is enabled" systemctl is-enabled --quiet kube-gw
check "the service is active after install (READY sent)" wait_until 60 active
check "config.toml is a conffile with mode 0640" \
  bash -c '[ "$(stat -c %a /etc/kube-gw/config.toml)" = 640 ] && grep -qx /etc/kube-gw/config.toml /var/lib/dpkg/info/kube-gw.conffiles'
check "the data-path modules were loaded at install" grep -q '^ip_vs_mh ' /proc/modules
check "the sysctls were applied at install" bash -c '[ "$(cat /proc/sys/net/ipv4/vs/sloppy_tcp)" = 1 ]'
check "man pages are installed" test -f /usr/share/man/man8/kube-gw.8.gz -a -f /usr/share/man/man5/kube-gw.toml.5.gz
check "the state directory exists with mode 0700" bash -c '[ "$(stat -c %a /var/lib/kube-gw)" = 700 ]'

# 2. The user's configuration; restart; status and structured logs.
cat > /etc/kube-gw/config.toml <<'EOF'
[vip]
pools = ["198.51.100.0/24"]

[log]
level = "info"
EOF
check "systemctl restart with the user's config" systemctl restart kube-gw
check "active after restart" active
check "kube-gw status answers over the admin socket" kube-gw status
check "the journal holds structured records (TARGET field)" \
  bash -c 'journalctl -u kube-gw -o json --no-pager | grep -q "\"TARGET\":\"kube_gw"'

# 3. systemctl reload applies a change.
gen0=$(kube-gw status --json | grep -o '"generation":[0-9]*')
sed -i 's/level = "info"/level = "debug"/' /etc/kube-gw/config.toml
check "systemctl reload" systemctl reload kube-gw
check "the reload took effect (log filter debug, new generation)" wait_until 10 \
  bash -c "kube-gw status --json | grep -q '\"log_filter\":\"debug\"' && ! kube-gw status --json | grep -q '$gen0'"

# 4. A stuck daemon is restarted by the watchdog (WatchdogSec=10).
mkdir -p /etc/systemd/system/kube-gw.service.d
printf '[Service]\nEnvironment=KUBE_GW_TEST_HOOKS=1\n' > /etc/systemd/system/kube-gw.service.d/test-hooks.conf
systemctl daemon-reload && systemctl restart kube-gw
pid0=$(mainpid)
check "debug-freeze (test hook) accepted" kube-gw debug-freeze 60
check "the watchdog restarted the frozen daemon" wait_until 45 \
  bash -c "[ \"\$(systemctl show -p MainPID --value kube-gw)\" != $pid0 ] && systemctl is-active --quiet kube-gw"
check "the journal says it was the watchdog" \
  bash -c 'journalctl -u kube-gw --no-pager | grep -qi "watchdog timeout"'
rm -r /etc/systemd/system/kube-gw.service.d && systemctl daemon-reload && systemctl restart kube-gw

# 5. systemctl stop ends within the stop timeout, cleanly.
t0=$SECONDS
check "systemctl stop" systemctl stop kube-gw
check "stopped within TimeoutStopSec (took $((SECONDS - t0)) s)" test $((SECONDS - t0)) -lt 60
check "the stop was clean (Result=success)" bash -c '[ "$(systemctl show -p Result --value kube-gw)" = success ]'
systemctl start kube-gw

# 6. Upgrade to a newer build from the same repository (the host publishes it when asked):
#    the edited config stays, the daemon restarts on the new one.
echo "# edited by the operator" >> /etc/kube-gw/config.toml
pid0=$(mainpid)
echo "KGW-PUBLISH: $suite"
candidate() { apt-get update -q >/dev/null 2>&1; [ "$(apt-cache policy kube-gw | awk '/Candidate:/ {print $2}')" = "$new" ]; }
check "the repository offers kube-gw $new once published" wait_until 120 candidate
apt-get update 2>&1 | sed 's/^/KGW-APT-UPGRADE: /'; apt-cache policy kube-gw | sed 's/^/KGW-APT-UPGRADE: /'
check "apt upgrade" apt upgrade -y -q
check "kube-gw $new is installed" bash -c '[ "$(dpkg-query -W -f="\${Version}" kube-gw)" = "$1" ]' _ "$new"
check "the operator's edit survived the upgrade" grep -qx "# edited by the operator" /etc/kube-gw/config.toml
check "the daemon was restarted and is active" wait_until 30 \
  bash -c "[ \"\$(systemctl show -p MainPID --value kube-gw)\" != $pid0 ] && systemctl is-active --quiet kube-gw"

# 7. The user's own check, end to end: joined to the cluster on the host, the Service's
#    externalIP is on lo as a /32.
vip=$(cat /root/vip)
install -m 0600 /root/kubeconfig /etc/kube-gw/kubeconfig
cat > /etc/kube-gw/config.toml <<'CONFIG'
[node]
name = "kube-gw-vm"

[kubernetes]
kubeconfig = "kubeconfig"
service-cidrs = ["10.96.0.0/12"]

[vip]
pools = ["198.51.100.0/24"]
CONFIG
check "kube-gw check-config accepts the cluster config" kube-gw check-config
check "systemctl restart with the cluster config" systemctl restart kube-gw
check "ip addr show lo shows the Service's $vip/32" wait_until 120 \
  bash -c "ip -o addr show dev lo | grep -q ' $vip/32 '"
ip addr show dev lo | sed 's/^/KGW-LO: /'
# The data path: the kernel's own table (/proc/net/ip_vs, addresses in hex) has the virtual
# service, Maglev, toward the Service's endpoint; nftables has kube-gw's return-path table;
# the kernel settings IPVS needs are in place (set by the package's sysctl.d file).
hex() { printf '%02X%02X%02X%02X' $(echo "$1" | tr . ' '); }
endpoint=$(cat /root/endpoint)
check "IPVS has $vip:80 (mh) toward $endpoint:80" wait_until 60 bash -c \
  "grep -q '^TCP  $(hex "$vip"):0050 mh' /proc/net/ip_vs && grep -q -- '-> $(hex "$endpoint"):0050' /proc/net/ip_vs"
sed 's/^/KGW-IPVS: /' /proc/net/ip_vs
# (written in the same pass, just after the IPVS requests: wait for it too)
check "nftables has kube-gw's table with the Service in its source-NAT set" wait_until 30 \
  bash -c "nft list table inet kube-gw 2>/dev/null | grep -qE '$vip \. (tcp|6) \. 80'"
nft list table inet kube-gw 2>&1 | sed 's/^/KGW-NFT: /'
check "kube-gw status shows the IPVS component programmed, with no settings problem" wait_until 30 \
  bash -c "kube-gw status | grep -qE '^ipvs +genetlink +programmed +[0-9]+s +1 virtual services \(1 wanted\), 1 destinations, 0 draining\$'"
# A reload that changes the scheduler changes it in place.
printf '\n[ipvs]\nscheduler = "sh"\n' >> /etc/kube-gw/config.toml
check "systemctl reload with [ipvs] scheduler = sh" systemctl reload kube-gw
check "IPVS now schedules $vip:80 with sh, toward the same endpoint" wait_until 30 bash -c \
  "grep -q '^TCP  $(hex "$vip"):0050 sh' /proc/net/ip_vs && grep -q -- '-> $(hex "$endpoint"):0050' /proc/net/ip_vs"
# A restart adopts the kernel's table: it sends IPVS nothing (no flush, no re-create). The
# first start's programming is in the log, so the absence below means something.
check "the first start logged its IPVS changes" \
  bash -c "journalctl -u kube-gw --no-pager | grep -q 'IPVS changed'"
cursor=$(journalctl -u kube-gw -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p')
check "systemctl restart" systemctl restart kube-gw
check "after the restart the IPVS component is programmed again" wait_until 60 bash -c \
  "kube-gw status | grep -qE '^ipvs +genetlink +programmed +[0-9]+s +1 virtual services'"
check "the restart changed nothing in IPVS (no 'IPVS changed' in its log)" \
  bash -c "! journalctl -u kube-gw --after-cursor='$cursor' --no-pager | grep -q 'IPVS changed'"
check "IPVS still has $vip:80 (sh) toward $endpoint:80" bash -c \
  "grep -q '^TCP  $(hex "$vip"):0050 sh' /proc/net/ip_vs && grep -q -- '-> $(hex "$endpoint"):0050' /proc/net/ip_vs"
kube-gw status | sed 's/^/KGW-STATUS: /'

echo "KGW-SECURITY-BEGIN"
systemd-analyze security kube-gw --no-pager | sed 's/^/KGW-SECURITY: /'
echo "KGW-SECURITY-END"

# 8. remove stops it (taking its address away) and keeps the configuration; purge
#    leaves nothing behind.
check "apt remove" apt-get remove -y -q kube-gw
check "remove stopped the daemon" bash -c '! systemctl is-active --quiet kube-gw'
check "the stopped daemon took $vip off lo" bash -c "! ip -o addr show dev lo | grep -q ' $vip/32 '"
check "remove kept the configuration" test -f /etc/kube-gw/config.toml
check "apt purge" apt-get purge -y -q kube-gw
for p in /etc/kube-gw /var/lib/kube-gw /run/kube-gw /usr/sbin/kube-gw /usr/lib/systemd/system/kube-gw.service \
         /etc/systemd/system/multi-user.target.wants/kube-gw.service; do
  check "purge removed $p" test ! -e "$p"
done
check "dpkg knows nothing of kube-gw" bash -c '! dpkg-query -W kube-gw >/dev/null 2>&1'

echo "KGW-RESULT: $fails"
systemctl poweroff --no-block
