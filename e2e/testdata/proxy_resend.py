# Driven by e2e's TestProxyResendRules through libnbd: keeps writes in flight
# through grbd proxy until the test kills the primary and writes "killed" on
# stdin, then sends more writes and a FLUSH behind them. When the FLUSH
# returns it records which writes sent before it are still unanswered, and
# reads those blocks straight from the serving node. At the end it reads
# every block back through the proxy. Prints one JSON report.
# Usage: python3 proxy_resend.py PROXY_URI NODE_URI...
import json
import select
import sys
import time

import nbd

BS = 4096
MAXW = 32768  # blocks of the first 128 MiB, each written once
QD = 16

uri, nodes = sys.argv[1], sys.argv[2:]
h = nbd.NBD()
h.connect_uri(uri)

done = {}       # write index -> errno
bufs = {}
issued = 0
report = {"errors": [], "flush_pending": [], "direct_mismatch": [], "proxy_mismatch": []}


def pat(i):
    return i.to_bytes(4, "little") * (BS // 4)


def wcb(i):
    def cb(err):
        done[i] = err.value
        return 1
    return cb


def issue():
    global issued
    if issued >= MAXW:
        return
    b = nbd.Buffer.from_bytearray(bytearray(pat(issued)))
    bufs[issued] = b
    h.aio_pwrite(b, issued * BS, completion=wcb(issued))
    issued += 1


flush = {}


def fcb(err):
    flush["err"] = err.value
    flush["at"] = time.time()
    # Writes sent before the FLUSH that are not answered yet.
    flush["pending"] = [k for k in range(flush["before"]) if k not in done]
    return 1


print("started", flush=True)
deadline = time.time() + 40
killed_at = None
while killed_at is None and time.time() < deadline:
    while issued - len(done) < QD and issued < MAXW:
        issue()
    h.poll(5)
    r, _, _ = select.select([sys.stdin], [], [], 0)
    if r:
        sys.stdin.readline()
        killed_at = time.time()
report["inflight_at_kill"] = issued - len(done)
report["issued_before_kill"] = issued

for _ in range(32):
    issue()
flush["before"] = issued
h.aio_flush(completion=fcb)
for _ in range(8):
    issue()

checked = False
while h.aio_in_flight() > 0 and time.time() < deadline:
    h.poll(100)
    if "at" in flush and not checked:
        checked = True
        report["flush_after_kill_s"] = flush["at"] - killed_at
        report["flush_pending"] = flush["pending"]
        # Straight from the serving node, at once: is what the FLUSH
        # covers there?
        for n in nodes:
            try:
                d = nbd.NBD()
                d.connect_uri(n)
                for k in range(flush["before"]):
                    if d.pread(BS, k * BS) != pat(k):
                        report["direct_mismatch"].append(k)
                d.shutdown()
                report["direct_node"] = n
                break
            except nbd.Error:
                continue

report["flush_err"] = flush.get("err")
report["issued"] = issued
report["unanswered"] = h.aio_in_flight()
report["errors"] = [k for k, e in done.items() if e != 0]
for k in range(issued):
    if h.pread(BS, k * BS) != pat(k):
        report["proxy_mismatch"].append(k)
h.shutdown()
print(json.dumps(report), flush=True)
