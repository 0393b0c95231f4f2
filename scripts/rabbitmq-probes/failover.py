# Usage: failover.py DIR KILLNODE (NOKILL=1: same run without the kill, for a baseline).
# Kill one node (via the cluster script) while QoS 1 flows run between the two survivors and
# new clients keep connecting to them; prints pauses in delivery, PUBACK latency and CONNACK
# latency/failures around the kill. Usage: failover.py DIR KILLNODE (ports 21883..21885).
import socket, struct, sys, threading, time, subprocess
DIR, K = sys.argv[1], int(sys.argv[2])
ports = {1: 21883, 2: 21884, 3: 21885}
surv = [n for n in (1, 2, 3) if n != K]
T = time.time
def s(b): return struct.pack("!H", len(b)) + b
def rl(n):
    out = b""
    while True:
        d, n = n % 128, n // 128
        out += bytes([d | (0x80 if n else 0)])
        if not n: return out
def readpkt(k):
    h = k.recv(1)
    if not h: raise EOFError
    mult, n = 1, 0
    while True:
        b = k.recv(1)[0]; n += (b & 127) * mult; mult *= 128
        if not b & 128: break
    body = b""
    while len(body) < n:
        c = k.recv(n - len(body))
        if not c: raise EOFError
        body += c
    return h[0], body
def connect(port, cid, clean=True, timeout=10):
    body = s(b"MQTT") + bytes([4, 0x02 if clean else 0]) + struct.pack("!H", 30) + s(cid.encode())
    k = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    k.sendall(bytes([0x10]) + rl(len(body)) + body)
    t, b = readpkt(k)
    if t != 0x20 or b[1] != 0: raise RuntimeError(f"connack {b.hex()}")
    return k
events = []
def ev(*a): events.append((T(), " ".join(map(str, a))))
t_kill = None
def subscriber(n, topic):
    k = connect(ports[n], f"fo-sub-{n}")
    k.sendall(bytes([0x82]) + rl(2 + 2 + len(topic) + 1) + struct.pack("!H", 1) + s(topic.encode()) + b"\x01")
    last = None; gaps = []
    k.settimeout(40)
    try:
        while True:
            t, b = readpkt(k)
            if t & 0xF0 == 0x30:
                tl = struct.unpack("!H", b[:2])[0]
                mid = b[2 + tl:4 + tl]
                k.sendall(b"\x40\x02" + mid)
                now = T()
                sent = float(b[4 + tl:].decode().split()[1])
                if last is not None and now - last > 0.3:
                    gaps.append((last, now))
                lat = now - sent
                if lat > 0.3: ev(f"sub n{n}: late delivery {lat:.2f}s of msg sent at +{sent - t_kill:.2f}s")
                last = now
    except (EOFError, OSError, socket.timeout) as e:
        ev(f"sub n{n} ended: {e!r}")
    for a, b in gaps:
        ev(f"sub n{n}: delivery pause {b - a:.2f}s from +{a - t_kill:.2f}s")
def publisher(n, topic, dur):
    k = connect(ports[n], f"fo-pub-{n}")
    k.settimeout(30)
    end = T() + dur; mid = 0; worst = (0, 0)
    try:
        while T() < end:
            mid = mid % 65535 + 1
            payload = f"{mid} {T():.6f}".encode()
            t0 = T()
            k.sendall(bytes([0x32]) + rl(2 + len(topic) + 2 + len(payload)) + s(topic.encode()) + struct.pack("!H", mid) + payload)
            t, b = readpkt(k)
            rtt = T() - t0
            if rtt > worst[0]: worst = (rtt, t0)
            if rtt > 0.3: ev(f"pub n{n}: PUBACK after {rtt:.2f}s (sent at +{t0 - t_kill:.2f}s)")
            time.sleep(0.05)
    except Exception as e:
        ev(f"pub n{n} failed: {e!r}")
    ev(f"pub n{n}: {mid} msgs, worst PUBACK {worst[0]:.3f}s at +{worst[1]-t_kill:.2f}s")
    k.sendall(b"\xe0\x00"); k.close()
def connector(n, dur):
    end = T() + dur; i = 0; fails = 0; worst = (0, 0)
    while T() < end:
        i += 1; t0 = T()
        try:
            k = connect(ports[n], f"fo-conn-{n}-{i}", timeout=15)
            d = T() - t0
            if d > worst[0]: worst = (d, t0)
            if d > 0.3: ev(f"connect n{n}: CONNACK after {d:.2f}s (at +{t0 - t_kill:.2f}s)")
            k.sendall(b"\xe0\x00"); k.close()
        except Exception as e:
            fails += 1; ev(f"connect n{n}: failed at +{t0 - t_kill:.2f}s after {T()-t0:.2f}s: {e!r}")
        time.sleep(0.1)
    ev(f"connect n{n}: {i} connects, {fails} failed, worst {worst[0]:.3f}s at +{worst[1]-t_kill:.2f}s")
# a client connected to the doomed node; reconnects to a survivor right after the kill
victim = connect(ports[K], "fo-victim")
t_kill = T() + 8
a, b = surv
th = [threading.Thread(target=subscriber, args=(b, "lm/fo/ab")),
      threading.Thread(target=subscriber, args=(a, "lm/fo/ba"))]
for x in th: x.start()
time.sleep(1)
th2 = [threading.Thread(target=publisher, args=(a, "lm/fo/ab", 25)),
       threading.Thread(target=publisher, args=(b, "lm/fo/ba", 25)),
       threading.Thread(target=connector, args=(a, 25)),
       threading.Thread(target=connector, args=(b, 25))]
for x in th2: x.start()
time.sleep(max(0, t_kill - T()))
t_kill = T()
import os
if not os.environ.get("NOKILL"): subprocess.run([os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "rabbitmq-cluster"), "kill", DIR, str(K)], check=True)
ev(f"killed node {K} (took {T()-t_kill:.2f}s)")
t0 = T()
for attempt in range(100):
    try:
        v = connect(ports[a], "fo-victim", timeout=15)
        ev(f"victim id re-connected to n{a} after {T()-t0:.2f}s ({attempt} failed attempts)")
        v.close(); break
    except Exception as e:
        ev(f"victim reconnect attempt failed after {T()-t0:.2f}s: {e!r}")
        time.sleep(0.2)
for x in th2: x.join()
time.sleep(1)
for n in surv:  # end the subscribers
    try:
        z = connect(ports[n], f"fo-sub-{n}"); z.close()
    except Exception: pass
for x in th: x.join()
for t, m in sorted(events): print(f"+{t - t_kill:7.2f}s  {m}")
