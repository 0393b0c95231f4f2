# Reconnect a persistent session without SUBSCRIBE: are queued messages delivered anyway?
import socket, struct, sys
def s(b): return struct.pack("!H", len(b)) + b
port, cid = int(sys.argv[1]), sys.argv[2].encode()
body = s(b"MQTT") + bytes([4, 0]) + struct.pack("!H", 30) + s(cid)
k = socket.create_connection(("127.0.0.1", port), timeout=3)
k.sendall(bytes([0x10, len(body)]) + body)
print("CONNACK", k.recv(4).hex())
buf = b""
try:
    while True:
        d = k.recv(65536)
        if not d: break
        buf += d
except socket.timeout: pass
print("received without SUBSCRIBE:", buf.count(b"lm/ps3/x"), "PUBLISH packets")
