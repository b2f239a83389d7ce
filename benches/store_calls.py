"""Concurrent GETs against a serve node: requests/s and latency percentiles.
Usage: store_calls.py HOST:PORT THREADS REQUESTS_PER_THREAD (see store_calls.sh)."""
import sys, threading, time, urllib.error, urllib.request
addr, threads, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
paths = ["/api/builds", "/api/builds/1", "/api/workers"]
errors = [0]
lat = []
lock = threading.Lock()
def worker():
    mine = []
    for i in range(per):
        p = paths[i % len(paths)]
        t = time.perf_counter()
        try:
            req = urllib.request.Request("http://" + addr + p, headers={"Authorization": "Bearer tok"})
            urllib.request.urlopen(req, timeout=30).read()
        except urllib.error.HTTPError:
            pass  # an answer (a 404 for a build that does not exist is one)
        except Exception:
            with lock: errors[0] += 1
        mine.append(time.perf_counter() - t)
    with lock: lat.extend(mine)
t0 = time.perf_counter()
ts = [threading.Thread(target=worker) for _ in range(threads)]
[t.start() for t in ts]; [t.join() for t in ts]
el = time.perf_counter() - t0
lat.sort()
print(f"{threads*per/el:.0f} req/s p50 {lat[len(lat)//2]*1000:.1f} ms p95 {lat[int(len(lat)*0.95)]*1000:.1f} ms errors {errors[0]}")
