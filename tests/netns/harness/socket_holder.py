#!/usr/bin/env python3
"""What systemd's kube-gw-gateway.socket does, for tests: holds the gateway's two listening sockets
and runs kube-gw with them, across restarts.

    socket_holder.py PORT CMD...

- Listens on 127.0.0.1:PORT and [::1]:PORT (backlog 4096) and runs CMD with them as
  descriptors 3 and 4 (LISTEN_FDS=2, LISTEN_FDNAMES=gateway:gateway, LISTEN_PID = CMD's pid),
  as systemd's socket activation passes them.
- SIGHUP restarts CMD the way `systemctl restart` does: SIGTERM, wait for it to exit, start
  it again with the same sockets. Connections arriving meanwhile wait in the accept queue.
- SIGTERM stops CMD and exits.

Run it as `unshare --mount --propagation private sh -c 'mount -t bpf bpf /sys/fs/bpf && exec
socket_holder.py ...'`: the bpf filesystem kube-gw pins its steering in is then this holder's
own and goes away with it.
"""
import os
import signal
import socket
import sys
import time

port, cmd = int(sys.argv[1]), sys.argv[2:]
v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
v4.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
v4.bind(("127.0.0.1", port))
v4.listen(4096)
v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
v6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
v6.bind(("::1", port))
v6.listen(4096)


def start():
    pid = os.fork()
    if pid == 0:
        # Descriptors 3 and 4, in that order, inheritable; through high numbers first so that
        # neither overwrites the other.
        a, b = os.dup(v4.fileno()), os.dup(v6.fileno())
        hi_a, hi_b = os.dup2(a, 100), os.dup2(b, 101)
        os.dup2(hi_a, 3)
        os.dup2(hi_b, 4)
        os.set_inheritable(3, True)
        os.set_inheritable(4, True)
        env = dict(os.environ, LISTEN_FDS="2", LISTEN_FDNAMES="gateway:gateway",
                   LISTEN_PID=str(os.getpid()))
        os.execvpe(cmd[0], cmd, env)
    print(f"holder: started {cmd[0]} as {pid}", flush=True)
    return pid


child = start()
restart = False
stopping = False


def on_hup(*_):
    global restart
    restart = True


def on_term(*_):
    global stopping
    stopping = True


signal.signal(signal.SIGHUP, on_hup)
signal.signal(signal.SIGTERM, on_term)
while True:
    if stopping:
        os.kill(child, signal.SIGTERM)
        os.waitpid(child, 0)
        sys.exit(0)
    if restart:
        restart = False
        began = time.time()
        os.kill(child, signal.SIGTERM)
        os.waitpid(child, 0)
        print(f"holder: {child} stopped after {time.time() - began:.2f} s; starting again", flush=True)
        child = start()
        continue
    try:
        pid, status = os.waitpid(child, os.WNOHANG)
    except ChildProcessError:
        pid, status = child, 0
    if pid == child:
        print(f"holder: {child} exited ({status}); starting again", flush=True)
        child = start()
    time.sleep(0.05)
