"""Behaviour unchanged by refactoring: the same commands write what they wrote before it
(tests/data/reference.json, from scripts/reference_outputs.py run on commit 46c41a1, before the
layout, settings and entry-point changes; its report page re-recorded after issue 33, whose
one walk names what it removed as units: the same two heads, the pruning's caption and curve
axis reworded, the top-units table's column called unit). Weights, the GGUF file and the report page (its folder
name aside) are compared byte for byte (sha256); the scan's numbers to 1e-6 relative or absolute (the same to
the last bit on the machine that wrote them; the tolerance leaves room for another CPU's
summation order), its kinds exactly."""

import importlib.util
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _produce(tmp_path):
    spec = importlib.util.spec_from_file_location("reference_outputs", ROOT / "scripts" / "reference_outputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import torch

    threads = torch.get_num_threads()
    try:
        return json.loads(json.dumps(module.produce(tmp_path)))  # the same types as the stored file
    finally:
        torch.set_num_threads(threads)


def _same_table(now: dict, before: dict, what: str) -> None:
    assert sorted(now) == sorted(before), (what, sorted(now), sorted(before))
    for column, values in before.items():
        if isinstance(values[0], str):
            assert now[column] == values, (what, column)
        else:
            # atol: float32 rounding of a ~5-nat NLL is ~1e-6 nats, and scores are differences of two
            # (a 1.6e-5 relative gap in a 0.0046 interval end was seen on another Xeon: 7e-8 absolute)
            np.testing.assert_allclose(now[column], values, rtol=1e-6, atol=1e-6, err_msg=f"{what}.{column}")


def test_the_commands_write_what_they_wrote_before(tmp_path):
    before = json.loads((ROOT / "tests" / "data" / "reference.json").read_text())
    now = _produce(tmp_path)
    # the intended changes since: scores.csv says which component each row is (issue 17) and
    # names each unit (issue 33)
    assert now["columns"][0] == before["columns"][0] + ["component", "unit"]
    assert set(now["scores"].pop("component")) == {"head"}
    assert now["scores"].pop("unit") == [
        f"L{l}H{h}" for l, h in zip(before["scores"]["layer"], before["scores"]["head"])
    ]
    assert now["columns"][1] == before["columns"][1]  # per_text.parquet, in the same order
    _same_table(now["scores"], before["scores"], "scores.csv")
    _same_table(now["per_text"], before["per_text"], "per_text.parquet")
    assert now["kinds"] == before["kinds"]
    assert now["pruned"] == before["pruned"] and now["pruned"], "pruned weights differ"
    assert now["trimmed"] == before["trimmed"] and now["trimmed"], "trimmed weights differ"
    assert now["gguf"] == before["gguf"], "the GGUF export differs"
    assert now["report"] == before["report"], "the report page differs"


def test_the_comparison_sees_a_changed_number():
    before = {"score": [0.1, 0.2], "language": ["en", "fr"]}
    _same_table({"score": [0.1, 0.2], "language": ["en", "fr"]}, before, "x")
    try:
        _same_table({"score": [0.1, 0.2001], "language": ["en", "fr"]}, before, "x")
    except AssertionError:
        return
    raise AssertionError("a changed score passed")
