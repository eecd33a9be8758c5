"""blas_threads: OpenBLAS's thread count inside the block, the old one restored after."""
from __future__ import annotations

import pytest

from lacy_mlx.platform import _openblas_threads_api, blas_threads, usable_cores


def test_usable_cores_is_positive() -> None:
    assert usable_cores() >= 1


def test_blas_threads_sets_and_restores() -> None:
    api = _openblas_threads_api()
    if api is None:
        pytest.skip("no OpenBLAS loaded in this process (run with LD_PRELOAD, as make test does)")
    get, set_ = api
    before = get()
    set_(2)
    two = get()  # OpenBLAS caps the count at the cores it found
    try:
        with blas_threads(1):
            assert get() == 1
        assert get() == two
        with pytest.raises(RuntimeError):
            with blas_threads(1):
                raise RuntimeError("boom")  # restored on the way out of an error too
        assert get() == two
    finally:
        set_(before)


def test_blas_threads_without_openblas_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    import lacy_mlx.platform as plat

    monkeypatch.setattr(plat, "_openblas_threads_api", lambda: None)
    with blas_threads(1):
        pass
