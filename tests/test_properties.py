"""Property-based tests of the request parser and schema validator: any JSON gives columns or an InputError."""
import json, math

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from nutrino_ml.runtime.errors import InputError
from nutrino_ml.runtime.protocols import decode_json, native_rows
from nutrino_ml.runtime.schema import validate_rows

SCHEMA = [{"name": "user_id", "type": "string"}, {"name": "glucose_mgdl", "type": "double"},
          {"name": "glucose_trend", "type": "double", "nullable": True}]
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                           lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)
good_rows = st.lists(st.fixed_dictionaries(
    {"user_id": st.text(min_size=1), "glucose_mgdl": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-10**6, 10**6)},
    optional={"glucose_trend": st.none() | st.floats(allow_nan=False, allow_infinity=False)}), min_size=1, max_size=20)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_gives_columns_or_an_input_error(body):
    try:
        cols = validate_rows(native_rows(body)[0], SCHEMA)
    except InputError as e:
        assert str(e)
        return
    assert set(cols) == {f["name"] for f in SCHEMA} and len({len(c) for c in cols.values()}) == 1


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64) | st.text(max_size=64))
def test_any_raw_body_gives_rows_or_an_input_error(raw):
    try:
        body = decode_json(raw)
        rows, fields = native_rows(body)
    except InputError as e:
        assert str(e), f"an InputError without a message for {raw!r}"
        return
    # the rows are what the body carries: the body itself (a list), its "rows", or its one "row"
    carried = (rows is body) if type(body) is list else (rows is body["rows"]) if "rows" in body else (len(rows) == 1 and rows[0] is body["row"])
    assert carried, f"{raw!r}: rows {rows!r} are not what the body {body!r} carries"
    assert fields is None or isinstance(fields, dict), f"{raw!r}: fields beside the rows are {fields!r}"


@settings(max_examples=200, deadline=None)
@given(good_rows)
def test_valid_rows_round_trip(rows):
    cols = validate_rows(json.loads(json.dumps({"rows": rows}))["rows"], SCHEMA)
    assert list(cols["user_id"]) == [r["user_id"] for r in rows]
    np.testing.assert_array_equal(cols["glucose_mgdl"], [float(r["glucose_mgdl"]) for r in rows])
    for r, t in zip(rows, cols["glucose_trend"]):
        assert (math.isnan(t) and r.get("glucose_trend") is None) or t == r.get("glucose_trend")


@settings(max_examples=200, deadline=None)
@given(good_rows, st.integers(0, 19), st.sampled_from(["glucose_mgdl", "user_id"]), st.sampled_from([True, [], {}, "x", 1.5]))
def test_a_wrong_value_is_reported_with_row_and_field(rows, i, field, bad):
    i = i % len(rows)
    # a value of the field's own type is not a wrong value: hypothesis draws another example instead
    assume(not (field == "user_id" and isinstance(bad, str)) and not (field == "glucose_mgdl" and isinstance(bad, float)))
    rows[i] = {**rows[i], field: bad}
    with pytest.raises(InputError) as e:
        validate_rows(rows, SCHEMA)
    assert e.value.field == field and f"row {i}: field '{field}'" in str(e.value), str(e.value)
