"""The quality gate of the register tasks: a model that loses to a naive forecast on its held-out rows is not registered,
the build fails saying by how much, and `--env--min_improvement null` turns the gate off. A failed evaluation registers nothing.

The lake is the tiny one (5 users, 5 days) with its last day's glucose readings 40 mg/dL higher (a new sensor that
reads high): the forecaster learned each user's level from the first days and pulls its forecasts back towards it,
so on the held-out rows (the last day and a quarter) it loses to "glucose stays where it is". The meal response
model (a rise, not a level) still beats its baselines and is registered. The tests run in order on one registry.
"""
import json

import pytest
from mlflow.tracking import MlflowClient

from helpers import BIN, build, local_env, run
from nutrino_ml.datalake import Lake

SHIFT = 40.0  # mg/dL the last day's readings are raised by


@pytest.fixture(scope="module")
def shifted(tmp_path_factory):
    """The lake with its last day of glucose shifted, built once with the gate on (env.yaml's min_improvement)."""
    tmp = tmp_path_factory.mktemp("gate")
    env = local_env(tmp)
    run([BIN / "nutrino-ml", "datalake", "simulate", "--users", "5", "--days", "5", "--seed", "11"], env=env)
    lake = Lake(env["NUTRINO_DATALAKE_ROOT"])
    day = lake.partitions("glucose")[-1]
    g = lake.read_partition("glucose", day)
    lake.write_partition("glucose", day, g.assign(glucose_mgdl=g.glucose_mgdl + SHIFT))
    out = build(env, tmp / "products", check=False)
    return {"tmp": tmp, "env": env, "products": tmp / "products", "out": out, "client": MlflowClient(env["NUTRINO_MLFLOW_TRACKING_URI"])}


def metrics(products, name):
    return json.loads((products / "metrics" / f"{name}.json").read_text())


def versions(client, name):
    return sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))


def test_a_forecaster_worse_than_persistence_is_not_registered(shifted):
    out, m = shifted["out"], metrics(shifted["products"], "glucose-forecast")
    assert m["mae"] > m["baseline_persistence_mae"] == m["best_baseline_mae"], m  # it genuinely loses
    assert out.returncode != 0
    loss = m["mae"] / m["baseline_persistence_mae"] - 1
    assert (f"quality gate: glucose-forecast is not registered: its held-out MAE {m['mae']:.2f} is {loss:.1%} above its best "
            f"baseline, persistence (MAE {m['baseline_persistence_mae']:.2f}), and must be at least 2% below it") in out.stdout, out.stdout[-3000:]
    assert "turn the gate off with `ploomber build --env--min_improvement null`" in out.stdout
    assert versions(shifted["client"], "glucose-forecast") == []
    assert not (shifted["products"] / "registered" / "glucose-forecast.json").exists()
    # the other model beat its baselines and was registered, with its evaluation's pictures
    assert versions(shifted["client"], "glucose-response") == [1]
    run_id = json.loads((shifted["products"] / "registered" / "glucose-response.json").read_text())["run_id"]
    figures = {a.path for a in shifted["client"].list_artifacts(run_id, "figures")}
    assert figures == {f"figures/{s}.png" for s in ("predicted_vs_actual", "residuals_by_hour", "residuals_by_user", "user_curves")}
    assert shifted["client"].get_run(run_id).data.params["min_improvement"] == "0.02"


def test_a_margin_the_model_does_not_reach_refuses_it_too(shifted):
    m = metrics(shifted["products"], "glucose-response")
    assert 0.02 < m["improvement_over_best_baseline"] < 0.99, m
    out = build(shifted["env"], shifted["products"], "--env--min_improvement", "0.99", "--partially", "register-glucose-response", check=False)
    assert out.returncode != 0
    assert "quality gate: glucose-response is not registered" in out.stdout and "must be at least 99% below it" in out.stdout, out.stdout[-3000:]
    assert versions(shifted["client"], "glucose-response") == [1]


def test_turning_the_gate_off_registers_it(shifted):
    out = build(shifted["env"], shifted["products"], "--env--min_improvement", "null", "--partially", "register-glucose-forecast")
    assert versions(shifted["client"], "glucose-forecast") == [1], out.stdout[-3000:]
    reg = json.loads((shifted["products"] / "registered" / "glucose-forecast.json").read_text())
    assert shifted["client"].get_run(reg["run_id"]).data.params["min_improvement"] == "None"
    assert shifted["client"].get_run(reg["run_id"]).data.metrics["improvement_over_best_baseline"] < 0


def test_a_failed_evaluation_registers_nothing(shifted):
    # a held-out share so small that its rows are the lake's last readings, which have no reading 30 minutes later
    products = shifted["tmp"] / "products-tiny-test"
    out = build(shifted["env"], products, "--env--test_fraction", "0.0005", "--partially", "register-glucose-forecast", check=False)
    assert out.returncode != 0
    assert "evaluate glucose-forecast: no held-out rows with a target" in out.stdout, out.stdout[-3000:]
    assert "0 sample" not in out.stdout
    assert not (products / "metrics" / "glucose-forecast.json").exists() and not (products / "registered").exists()
    assert versions(shifted["client"], "glucose-forecast") == [1]
