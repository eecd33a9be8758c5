"""The wheel ships kernels/ and convert/ as lacy_mlx.kernels and lacy_mlx.convert, and installs cleanly."""
from __future__ import annotations

import shutil
import site
import subprocess
import sys
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# What a build reads; setuptools writes build/ and *.egg-info/ beside it, so it builds from a copy.
_SOURCES = ("setup.py", "pyproject.toml", "README.md", "lacy_mlx", "kernels", "convert")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in _SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=skip)
        else:
            shutil.copy2(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(src)], check=True, timeout=600, capture_output=True)
    (whl,) = out.glob("lacy_mlx-*.whl")
    return whl


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"lacy_mlx"}, f"top-level names besides lacy_mlx would collide on PyPI: {tops}"
    for src_dir, pkg in (("kernels", "lacy_mlx/kernels"), ("convert", "lacy_mlx/convert")):
        shipped = {n[len(pkg) + 1:] for n in names if n.startswith(pkg + "/")}
        local = {str(p.relative_to(ROOT / src_dir)) for p in (ROOT / src_dir).rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts}
        assert local <= shipped, f"{src_dir}/ files missing from the wheel: {sorted(local - shipped)}"
    assert "lacy_mlx/py.typed" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "lacy-mlx = lacy_mlx.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_installs_into_fresh_venv(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    fresh_site = Path(subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                              text=True).strip())
    with zipfile.ZipFile(wheel) as zf:  # a wheel install is an unzip (no pip in the fresh venv: offline)
        zf.extractall(fresh_site)
    # Dependencies (mlx, numpy, ...) come from this venv, appended after the fresh site: lacy_mlx itself must
    # resolve from the fresh install, not from the editable checkout.
    (fresh_site / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    script = textwrap.dedent("""
        import lacy_mlx, lacy_mlx.kernels as k, lacy_mlx.convert as c
        from importlib import resources
        print(lacy_mlx.__file__); print(k.__file__); print(c.__file__)
        sources = sorted(p.name for p in resources.files("lacy_mlx.kernels").iterdir() if p.suffix in (".metal", ".cu"))
        print("sources", sources)
        for name in sources:
            assert k.kernel_source(name).strip()
        from lacy_mlx.cli import build_parser
        build_parser()
    """)
    out = subprocess.run([str(py), "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert all(line.startswith(str(fresh_site)) for line in lines[:3]), lines
    local_sources = sorted(p.name for p in (ROOT / "kernels").iterdir() if p.suffix in (".metal", ".cu"))
    assert lines[3] == f"sources {local_sources}"


def test_editable_install_maps_kernels_and_convert():
    import lacy_mlx.convert
    import lacy_mlx.kernels

    assert Path(lacy_mlx.kernels.__file__).resolve().parent == ROOT / "kernels"
    assert Path(lacy_mlx.convert.__file__).resolve().parent == ROOT / "convert"


def test_kernels_import_from_a_source_checkout():
    """kernels/ also imports as the checkout's top-level package, without the lacy_mlx.kernels mapping
    (its modules import their folder relatively)."""
    script = "import kernels.cpu_build as b, kernels.dispatch as d; print(b.KERNEL_DIR, d.__name__)"
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(ROOT / "kernels"), "kernels.dispatch"]
