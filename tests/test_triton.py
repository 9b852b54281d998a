"""The Open Inference Protocol as clients use it: the real `tritonclient[http]` against `chalice local`, with binary tensor
data (its default) and with JSON, gets the same predictions as the native route; server and model metadata answer."""
import numpy as np
import pytest
import tritonclient.http as triton

from helpers import MODELS
from nutrino_ml.local import ChaliceLocal, http_json


@pytest.fixture(scope="module")
def server(built):
    with ChaliceLocal(built["app"]) as srv:
        yield srv


def inputs_of(example, schema, binary):
    "One tritonclient input per field of the schema, from the rows of the input example."
    out = []
    for f in schema:
        values = [r.get(f["name"]) for r in example]
        if f["type"] == "string": arr, dt = np.array(values, dtype=object), "BYTES"
        else: arr, dt = np.array([np.nan if v is None else v for v in values], dtype=np.float64), "FP64"
        t = triton.InferInput(f["name"], [len(values)], dt)
        t.set_data_from_numpy(arr, binary_data=binary)
        out.append(t)
    return out


@pytest.mark.parametrize("binary", [True, False], ids=["binary tensors", "JSON tensors"])
def test_tritonclient_infers_what_the_native_route_answers(server, binary):
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata()["name"] == "nutrino_ml"
    served = http_json("GET", f"{server.url}/models")[1]["models"]
    for name in MODELS:
        m = next(x for x in served if x["name"] == name and "production" in x["aliases"])
        meta = client.get_model_metadata(name)
        assert [i["name"] for i in meta["inputs"]] == [f["name"] for f in m["inputs"]], name
        example = [r for r in m["input_example"] if all(v is not None for v in r.values())] or m["input_example"]
        result = client.infer(name, inputs_of(example, m["inputs"], binary), outputs=[triton.InferRequestedOutput(m["output"], binary_data=binary)])
        status, native = http_json("POST", f"{server.url}/models/{name}/predict", {"rows": example})
        assert status == 200, (name, native)
        np.testing.assert_allclose(result.as_numpy(m["output"]), native["predictions"], rtol=0, atol=1e-9, err_msg=f"{name}, binary={binary}")
