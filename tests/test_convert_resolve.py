"""decoder.build_model resolves model_type the way mlx_lm.load does (remapping included)."""
from __future__ import annotations

import pytest

from lacy_mlx.convert import UnknownArchitectureError
from lacy_mlx.convert.decoder import build_model, mlx_module

_TINY = dict(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
             num_attention_heads=2, num_key_value_heads=1, rms_norm_eps=1e-5)


@pytest.mark.parametrize("model_type,module", [("llama", "llama"), ("mistral", "llama"), ("xverse", "llama"),
                                               ("qwen2", "qwen2")])
def test_model_type_remapping_follows_mlx_lm(model_type, module):
    from mlx_lm.utils import MODEL_REMAPPING

    assert MODEL_REMAPPING.get(model_type, model_type) == module
    model = build_model({"model_type": model_type, **_TINY}, "config.json")
    assert mlx_module(model) == module


def test_resolution_is_mlx_lm_s_own():
    from mlx_lm.utils import _get_classes

    config = {"model_type": "mistral", **_TINY}
    assert type(build_model(config, "config.json")) is _get_classes(config)[0]


def test_unknown_type_is_one_clear_line():
    with pytest.raises(UnknownArchitectureError) as err:
        build_model({"model_type": "gpt_bigcod", **_TINY}, "/x/config.json")
    msg = str(err.value)
    assert msg.startswith("/x/config.json: model_type 'gpt_bigcod'") and "\n" not in msg
    assert "close: gpt_bigcode" in msg and "pip install -U mlx-lm" in msg


def test_config_mlx_lm_cannot_build_names_the_file():
    from lacy_mlx.convert import MissingConfigError

    with pytest.raises(MissingConfigError, match="/x/config.json: cannot build the mlx-lm llama model"):
        build_model({"model_type": "llama", "vocab_size": 32}, "/x/config.json")


def test_family_rows_are_exceptions_that_say_why():
    from lacy_mlx.convert import FAMILIES

    assert all(f.why and f.example for f in FAMILIES.values())
    assert not {"llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text"} & set(FAMILIES)
