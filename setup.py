"""Package layout that pyproject.toml cannot express on its own.

kernels/ and convert/ sit at the top of the repository (where readers look for them) but ship
inside the wheel as lacy_mlx.kernels and lacy_mlx.convert: top-level packages named `kernels`
or `convert` would collide with unrelated PyPI distributions. Sub-packages are found, not listed,
so adding one needs no edit here.
"""
from setuptools import find_packages, setup

packages = find_packages(include=["lacy_mlx", "lacy_mlx.*"])
package_dir = {"lacy_mlx": "lacy_mlx"}
for top in ("kernels", "convert"):
    for sub in find_packages(include=[top, f"{top}.*"]):
        packages.append(f"lacy_mlx.{sub}")
        package_dir[f"lacy_mlx.{sub}"] = sub.replace(".", "/")

setup(packages=packages, package_dir=package_dir)
