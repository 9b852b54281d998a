"""Shared by the serving benchmark's processes: the Lambda event they send and the timing loop.

Standard library only: the workers import it from a bare interpreter (`python -I -S`) inside the unzipped package.
"""
import os, select, time


def api_event(name, body, request_id="bench-request"):
    """An API Gateway (REST, proxy) event for POST /models/{name}/predict, as tests/test_package.py builds it."""
    return {"resource": "/models/{name}/predict", "path": f"/models/{name}/predict", "httpMethod": "POST",
            "headers": {"content-type": "application/json"}, "multiValueHeaders": {}, "pathParameters": {"name": name},
            "queryStringParameters": None, "multiValueQueryStringParameters": None, "stageVariables": None,
            "body": body, "isBase64Encoded": False,
            "requestContext": {"resourcePath": "/models/{name}/predict", "httpMethod": "POST",
                               "path": f"/api/models/{name}/predict", "stage": "api", "requestId": request_id,
                               "identity": {"sourceIp": "127.0.0.1"}}}


def timed(fn, args_list, n):
    """ns per call of fn(*args) over n calls, cycling through args_list."""
    now, out, k = time.perf_counter_ns, [], len(args_list)
    for i in range(n):
        a = args_list[i % k]
        t = now(); fn(*a); out.append(now() - t)
    return out


class Turns:
    """Two workers taking turns, through two FIFOs made by run.py: `take()` waits for this worker's turn, `give()`
    hands it over. The Lambda worker and the pyfunc worker alternate short blocks of requests this way, so both
    sample the same minutes of the machine (this VM's speed changes over minutes). With no FIFOs, both are no-ops."""
    def __init__(self, mine=None, theirs=None, timeout_s=900):
        # O_RDWR: opening a FIFO so does not wait for the other end, and a token given after the other worker
        # has exited is not an error
        self.fds = (os.open(mine, os.O_RDWR), os.open(theirs, os.O_RDWR)) if mine else None
        self.timeout_s, self.taken = timeout_s, 0

    def take(self):
        if self.fds:
            if not select.select([self.fds[0]], [], [], self.timeout_s)[0]:
                raise SystemExit(f"no turn came in {self.timeout_s} s: the other worker is gone")
            os.read(self.fds[0], 1)
            self.taken += 1

    def give(self):
        if self.fds:
            os.write(self.fds[1], b"t")
