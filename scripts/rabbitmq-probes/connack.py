# Minimal MQTT 3.1.1 CONNECT: prints CONNACK's session-present flag and return code.
# Usage: connack.py PORT CLIENT_ID CLEAN(1|0)
import socket, struct, sys
port, cid, clean = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3] == "1"
def s(b): return struct.pack("!H", len(b)) + b
vh = s(b"MQTT") + bytes([4, 0x02 if clean else 0x00]) + struct.pack("!H", 30)
pl = s(cid)
body = vh + pl
sock = socket.create_connection(("127.0.0.1", port), timeout=5)
sock.sendall(bytes([0x10, len(body)]) + body)
r = sock.recv(4)
print(f"CONNACK bytes={r.hex()} session_present={r[2] & 1} rc={r[3]}")
sock.sendall(b"\xe0\x00"); sock.close()
