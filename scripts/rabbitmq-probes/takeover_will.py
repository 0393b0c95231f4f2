# Takeover of a client that has a Will: is the Will published when the broker closes it?
import socket, struct, sys, time
def s(b): return struct.pack("!H", len(b)) + b
def connect(port, cid, will=None):
    flags = 0x02
    pl = s(cid.encode())
    if will:
        flags |= 0x04 | (1 << 3)  # will flag, will QoS 1
        pl += s(will[0].encode()) + s(will[1].encode())
    body = s(b"MQTT") + bytes([4, flags]) + struct.pack("!H", 60) + pl
    k = socket.create_connection(("127.0.0.1", port), timeout=10)
    k.sendall(bytes([0x10, len(body)]) + body)
    r = k.recv(4); assert r[0] == 0x20 and r[3] == 0, r
    return k
a = connect(int(sys.argv[1]), "dupw", ("lm/will/takeover", "will-of-first"))
time.sleep(0.5)
b = connect(int(sys.argv[2]), "dupw")
time.sleep(2)
b.sendall(b"\xe0\x00"); b.close()
