"""Shared by the serving benchmark's processes: the Lambda event they send and the timing loop.

Standard library only: the workers import it from a bare interpreter (`python -I -S`) inside the unzipped package.
"""
import gc, os, select, time
from array import array


# what API Gateway (REST API, edge-optimized) puts in front of a client's two headers
HEADERS = {"Accept": "application/json", "Accept-Encoding": "gzip, deflate", "CloudFront-Forwarded-Proto": "https",
           "CloudFront-Is-Desktop-Viewer": "true", "CloudFront-Is-Mobile-Viewer": "false", "CloudFront-Is-SmartTV-Viewer": "false",
           "CloudFront-Is-Tablet-Viewer": "false", "CloudFront-Viewer-Country": "DE", "Content-Type": "application/json",
           "Host": "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com", "User-Agent": "python-requests/2.32.3",
           "Via": "1.1 0f1e2d3c4b5a69788796a5b4c3d2e1f0.cloudfront.net (CloudFront)",
           "X-Amz-Cf-Id": "kT0V2v1KqYb8r1E0n3hJ5cXnS6m2rL9w8xQ4pZ7yA1bC3dE5fG7hIj==",
           "X-Amzn-Trace-Id": "Root=1-6744a1f0-3c1d2e3f4a5b6c7d8e9f0a1b", "X-Forwarded-For": "203.0.113.7, 130.176.0.1",
           "X-Forwarded-Port": "443", "X-Forwarded-Proto": "https", "x-api-key": "k" * 40}


def api_event(name, body, request_id="c6af9ac6-7b61-11e6-9a41-93e8deadbeef"):
    """An API Gateway (REST, proxy) event for POST /models/{name}/predict, with the headers and request context
    API Gateway sends (headers also as multiValueHeaders)."""
    return {"resource": "/models/{name}/predict", "path": f"/models/{name}/predict", "httpMethod": "POST",
            "headers": dict(HEADERS), "multiValueHeaders": {k: [v] for k, v in HEADERS.items()}, "pathParameters": {"name": name},
            "queryStringParameters": None, "multiValueQueryStringParameters": None, "stageVariables": None,
            "body": body, "isBase64Encoded": False,
            "requestContext": {"resourceId": "a1b2c3", "resourcePath": "/models/{name}/predict", "httpMethod": "POST",
                               "extendedRequestId": "BQGojGkMjoEFeAw=", "requestTime": "25/Nov/2026:12:00:00 +0000",
                               "path": f"/api/models/{name}/predict", "accountId": "123456789012", "protocol": "HTTP/1.1",
                               "stage": "api", "domainPrefix": "a1b2c3d4e5", "requestTimeEpoch": 1795608000000,
                               "requestId": request_id, "domainName": "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com",
                               "apiId": "a1b2c3d4e5",
                               "identity": {"cognitoIdentityPoolId": None, "accountId": None, "cognitoIdentityId": None, "caller": None,
                                            "sourceIp": "203.0.113.7", "principalOrgId": None, "accessKey": None,
                                            "cognitoAuthenticationType": None, "cognitoAuthenticationProvider": None,
                                            "userArn": None, "userAgent": "python-requests/2.32.3", "user": None,
                                            "apiKey": "k" * 40, "apiKeyId": "abcd1234ef"}}}


def timed(fn, args_list, n):
    """ns per call of fn(*args) over n calls, cycling through args_list; an array of int64, so that the samples
    (~300,000 per Lambda worker) add ~2 MB to the worker's peak RSS, not the ~12 MB of a list of ints."""
    now, out, k = time.perf_counter_ns, array("q"), len(args_list)
    for i in range(n):
        a = args_list[i % k]
        t = now(); fn(*a); out.append(now() - t)
    return out


class GcClock:
    """Time spent in the garbage collector, from `gc.callbacks` (installed on creation): `ns` so far. A full
    collection of a big heap (the pyfunc worker holds ~400 MB) takes tens to hundreds of ms and lands on whichever
    call allocates when it falls due, so the benchmark counts it apart."""
    def __init__(self):
        self.ns, self._t0 = 0, 0
        gc.callbacks.append(self._tick)

    def _tick(self, phase, info):
        if phase == "start":
            self._t0 = time.perf_counter_ns()
        else:
            self.ns += time.perf_counter_ns() - self._t0


GC = GcClock()


def timed_cpu(fn, args_list, n):
    """`timed(fn, args_list, n)`, the CPU time (ns) this process spent over those n calls, all its threads counted
    (`time.process_time_ns`: a pool of onnxruntime threads spinning beside the caller would show here, and time spent
    preempted would not, unlike each call's wall time), and the wall time (ns) the garbage collector took in them."""
    c, g = time.process_time_ns(), GC.ns
    out = timed(fn, args_list, n)
    return out, time.process_time_ns() - c, GC.ns - g


class Turns:
    """Two workers taking turns, through two FIFOs made by run.py: `take()` waits for this worker's turn, `give()`
    hands it over. The Lambda worker and the pyfunc worker alternate short blocks of requests this way, so both
    sample the same seconds of the machine (this VM's speed changes by up to ~2x, in bursts of under a second to
    minutes). With no FIFOs, both are no-ops."""
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
