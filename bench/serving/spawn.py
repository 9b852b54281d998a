"""A small process launcher, so that ru_maxrss of the processes it starts is their own.

Linux carries a process's peak RSS across fork/vfork + exec: a child spawned by the benchmark (which holds pandas,
~140 MiB) would report at least the benchmark's size as its ru_maxrss. This launcher runs on a bare interpreter
(`python -I -S`, ~10 MiB), so what its children report is theirs (a floor of about this launcher's size remains,
and every child also reports VmHWM, its post-exec peak, which has no floor).

Protocol: one JSON request per line on stdin, one JSON answer per line on stdout.
  request: {"args": [...], "cwd": str, "env": {...}, "stderr": path|null, "count": substring|null}
  answer:  {"wall_s": seconds from spawn to the first stdout line starting with "ANSWER " (null if none),
            "answer": that line's JSON payload, "total_s", "returncode", "maxrss_kib" (from wait4),
            "counted": stdout lines containing `count`, "stdout_tail": last lines of stdout (without ANSWER)}
Standard library only.
"""
import fcntl, json, os, subprocess, sys, time

for req in sys.stdin:
    req = json.loads(req)
    err = open(req["stderr"], "w") if req.get("stderr") else subprocess.DEVNULL
    count, counted, tail, wall, answer = req.get("count"), 0, [], None, None
    t0 = time.perf_counter()
    p = subprocess.Popen(req["args"], cwd=req["cwd"], env=req["env"], stdout=subprocess.PIPE, stderr=err)
    if count:   # a long-running worker: drain its stdout as it comes (like a log forwarder), counting as we go
        # Read in batches, every 10 ms, from a 1 MiB pipe, without blocking on it: a reader blocked on the pipe is woken
        # by every line the worker writes, and on this 2-vCPU VM that wake is an inter-processor interrupt through the
        # hypervisor which the *writer* pays, 8-26 us per line depending on where the scheduler put this launcher: the
        # benchmark would time this VM's interrupt path, not the handler. A reader that is not waiting is not woken, so
        # the worker pays for its write alone (~1.5 us). As little work per read as can be (one count, a 4 KiB tail).
        fd, needle, keep, eof = p.stdout.fileno(), count.encode(), b"", False
        n = len(needle) - 1   # a needle split across two reads is counted once, in keep + the next read
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
        except (OSError, AttributeError):   # a lower pipe-max-size, or not Linux: a full pipe makes the worker wait
            pass
        os.set_blocking(fd, False)
        while not eof:
            time.sleep(0.01)
            while True:
                try:
                    b = os.read(fd, 1 << 20)
                except BlockingIOError:
                    break
                if not b:
                    eof = True
                    break
                counted += (keep[-n:] + b).count(needle) if n else b.count(needle)
                keep = (keep + b)[-4096:]
        tail = [l.decode(errors="replace") for l in keep.split(b"\n") if l][-5:]
    else:       # a cold start: time the first ANSWER line
        for line in p.stdout:
            line = line.decode(errors="replace")
            if wall is None and line.startswith("ANSWER "):
                wall = time.perf_counter() - t0
                answer = json.loads(line[7:])
                continue
            tail = (tail + [line.rstrip("\n")])[-5:]
    total = time.perf_counter() - t0
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    p.stdout.close()
    if err is not subprocess.DEVNULL:
        err.close()
    print(json.dumps({"wall_s": wall, "answer": answer, "total_s": total, "returncode": p.returncode,
                      "maxrss_kib": ru.ru_maxrss, "counted": counted, "stdout_tail": tail}), flush=True)
