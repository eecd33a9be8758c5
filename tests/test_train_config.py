"""Training configs: presets, JSON/YAML files, and clear errors for bad keys."""
import pytest

from lacy_mlx.errors import InputError
from lacy_mlx.train.config import load_config, preset


def test_yaml_and_json_files_start_from_a_preset(tmp_path):
    (tmp_path / "c.yaml").write_text("preset: tiny\nsteps: 7\nobjective: loss\n")
    (tmp_path / "c.json").write_text('{"preset": "demo", "q": 0.5}')
    y, j = load_config(tmp_path / "c.yaml"), load_config(tmp_path / "c.json")
    assert (y.steps, y.objective, y.hidden_size) == (7, "loss", preset("tiny").hidden_size)
    assert (j.q, j.hidden_size) == (0.5, preset("demo").hidden_size)


@pytest.mark.parametrize("values, match", [
    ({"stepz": 3}, "unknown training config keys"),
    ({"objective": "magic"}, "objective"),
    ({"objective": "rho1"}, "reference_model"),
    ({"q": 1.5}, "q and budget"),
])
def test_bad_configs_say_what_to_fix(tmp_path, values, match):
    import json

    path = tmp_path / "bad.json"
    path.write_text(json.dumps(values))
    with pytest.raises(InputError, match=match):
        load_config(path)


def test_unknown_preset():
    with pytest.raises(InputError, match="unknown preset"):
        preset("huge")
