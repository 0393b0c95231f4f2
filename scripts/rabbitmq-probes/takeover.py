# Client id takeover: the same id on port A then port B; is A's connection closed, and when?
import socket, struct, sys, time
def s(b): return struct.pack("!H", len(b)) + b
def connect(port, cid, clean=True):
    body = s(b"MQTT") + bytes([4, 0x02 if clean else 0]) + struct.pack("!H", 60) + s(cid.encode())
    k = socket.create_connection(("127.0.0.1", port), timeout=10)
    k.sendall(bytes([0x10, len(body)]) + body)
    r = k.recv(4); assert r[0] == 0x20 and r[3] == 0, r
    return k
pa, pb, cid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
a = connect(pa, cid)
time.sleep(0.5)
t0 = time.time()
b = connect(pb, cid)
print(f"second connection (port {pb}) CONNACK ok after {time.time()-t0:.3f}s")
a.settimeout(10)
try:
    d = a.recv(10)
    print(f"first connection (port {pa}): {'closed by broker' if d == b'' else d.hex()} {time.time()-t0:.3f}s after the second CONNECT")
except socket.timeout:
    print("first connection (port %d): still open after 10 s" % pa)
except ConnectionResetError:
    print(f"first connection (port {pa}): reset {time.time()-t0:.3f}s")
b.settimeout(1)
try:
    d = b.recv(10); print("second connection:", "closed" if d == b"" else d.hex())
except socket.timeout:
    print("second connection: still open")
