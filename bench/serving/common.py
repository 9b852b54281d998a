"""Shared by the serving benchmark's processes: the Lambda event they send and the timing loop.

Standard library only: the workers import it from a bare interpreter (`python -I -S`) inside the unzipped package.
"""
import time


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
