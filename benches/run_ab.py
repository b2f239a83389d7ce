#!/usr/bin/env python3
"""`runway run` of several binaries, alternating, ROUNDS times each: medians and bests.

Usage: python3 benches/run_ab.py [--rounds N] NAME=BINARY ...
Each binary is copied first (the linker's own output runs ~1 ms slower per process
than a copy of it), runs on one small repository (`script: true`) with its own state
and cache directories, and the order alternates every round.
"""
import os, shutil, statistics, subprocess, sys, tempfile, time

args = sys.argv[1:]
rounds = 60
if args[:1] == ["--rounds"]:
    rounds, args = int(args[1]), args[2:]
with tempfile.TemporaryDirectory() as work:
    repo = os.path.join(work, "app")
    os.makedirs(repo)
    with open(os.path.join(repo, ".travis.yml"), "w") as f:
        f.write("language: shell\nscript: true\n")
    git = ["git", "-c", "user.name=b", "-c", "user.email=b@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "master"], cwd=repo, check=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-qm", "bench"], cwd=repo, check=True)
    bins = {}
    for a in args:
        name, path = a.split("=", 1)
        bins[name] = os.path.join(work, "runway-" + name)
        shutil.copy(path, bins[name])
    subprocess.run(["sync"], check=True)
    times = {k: [] for k in bins}
    for i in range(rounds):
        order = list(bins) if i % 2 == 0 else list(reversed(bins))
        for k in order:
            env = dict(os.environ, RUNWAY_STATE_DIR=os.path.join(work, "state-" + k))
            cmd = [bins[k], "run", repo, "--commit", "HEAD", "--cache-dir", os.path.join(work, "cache-" + k)]
            t = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, env=env, check=True)
            times[k].append(time.perf_counter() - t)
    for k, v in times.items():
        print(f"{k:12} median {statistics.median(v) * 1000:6.2f} ms   best {min(v) * 1000:6.2f} ms   ({rounds} runs)")
