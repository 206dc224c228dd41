#!/usr/bin/env python
"""Download the wheels lcfin needs on the project's GPU test machine, for carrying there.

Usage (here, with network; the folder is git-ignored)::

    python scripts/prepare_gpu_wheels.py [--dest .gpu-wheels]

That machine (Python 3.12, torch 2.11 + CUDA 13, transformers 5.17) has no network and takes at
most 64 MiB of working tree and carried files. It already has torch, transformers and their
dependencies, and the other packages of its image (`DEVICE_PACKAGES`, from the device notes'
package list). This script carries the rest of lcfin's runtime dependencies: it downloads each
one with `pip download --no-deps` for CPython 3.12 on manylinux x86_64, reads the wheel's own
requirements, and follows them (never into a package the machine has, so a wheel that requires
torch never pulls a CUDA build here). It prints the total and fails if the wheels plus the
repository's tracked files exceed 64 MiB. scripts/gpu_check_transformers.py --wheels DIR
installs them there offline (`pip install --no-index --no-deps --target`).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import zipfile
from pathlib import Path

CAP_BYTES = 64 * 2**20
ROOT = Path(__file__).resolve().parents[1]
#: The machine's packages ("Python packages already there", read on 2026-11-17; versions seen:
#: torch 2.11.0, transformers 5.17.0, huggingface_hub 1.33.0, numpy 2.5.2, safetensors 0.8.0,
#: tokenizers 0.23.2). torch and transformers and all their dependencies are among them.
DEVICE_PACKAGES = frozenset(
    """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
    botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
    coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython
    diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
    frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
    hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib
    jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator
    lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
    mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx
    ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
    nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand
    nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13
    nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
    opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging
    pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache
    protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks
    pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
    python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
    scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
    sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels
    sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile
    tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
    torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect
    urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp""".split()  # noqa: SIM905  (the notes' list, pasted)
)
#: Where requirement markers are evaluated: the machine's interpreter and platform.
TARGET_ENV = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "implementation_name": "cpython",
    "os_name": "posix",
    "extra": "",
}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def canonical(name: str) -> str:
    """A distribution name as pip compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_requirements(requires: list[str]) -> list[str]:
    """The requirements (strings) that apply on the machine: no extras, markers evaluated."""
    from packaging.requirements import Requirement

    kept = []
    for text in requires:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate(TARGET_ENV):
            kept.append(text)
    return kept


def to_carry(requires: list[str], have: frozenset[str] = DEVICE_PACKAGES) -> list[str]:
    """The runtime requirements whose package the machine does not have."""
    from packaging.requirements import Requirement

    out = []
    for text in runtime_requirements(requires):
        req = Requirement(text)
        if canonical(req.name) not in have:
            out.append(f"{req.name}{req.specifier}")
    return out


def wheel_requires(wheel: Path) -> list[str]:
    """The Requires-Dist lines of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(name).decode()
    lines = text.split("\n\n", 1)[0].splitlines()  # the headers, before the description
    return [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Requires-Dist:")]


def wheel_name(wheel: Path) -> str:
    """The canonical distribution name of a wheel file."""
    return canonical(wheel.name.split("-")[0])


def download(requirement: str, dest: Path) -> Path:
    """`pip download --no-deps` one requirement for the machine; the wheel's path."""
    before = set(dest.glob("*.whl"))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", "3.12", "--implementation", "cp", "--dest", str(dest), "-q"]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run([*cmd, requirement], check=True)
    from packaging.requirements import Requirement

    new = set(dest.glob("*.whl")) - before
    if new:
        return new.pop()
    name = canonical(Requirement(requirement).name)  # pip found it there already
    return next(w for w in dest.glob("*.whl") if wheel_name(w) == name)


def prepare(dest: Path, requires: list[str]) -> list[Path]:
    """Download the closure of `requires` minus the machine's packages into `dest`."""
    from packaging.requirements import Requirement

    dest.mkdir(parents=True, exist_ok=True)
    queue, seen, wheels = to_carry(requires), set(), []
    while queue:
        text = queue.pop(0)
        name = canonical(Requirement(text).name)
        if name in seen:
            continue
        seen.add(name)
        wheel = download(text, dest)
        wheels.append(wheel)
        print(f"  {wheel.name} ({wheel.stat().st_size / 2**20:.1f} MiB)")
        queue += to_carry(wheel_requires(wheel))
    return wheels


def tracked_bytes(root: Path = ROOT) -> int:
    """The size of the repository's tracked files (the working tree that travels too)."""
    done = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True)
    paths = [root / p for p in done.stdout.decode().split("\0") if p]
    return sum(p.stat().st_size for p in paths if p.is_file())


def main(argv: list[str] | None = None) -> int:
    """Prepare the folder; 1 if it would not fit in what the machine takes."""
    import importlib.metadata

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=ROOT / ".gpu-wheels")
    args = parser.parse_args(argv)
    for old in args.dest.glob("*.whl"):
        old.unlink()
    requires = importlib.metadata.requires("lcfin") or []
    print(f"lcfin's runtime dependencies the GPU machine lacks: {to_carry(requires)}")
    wheels = prepare(args.dest, requires)
    size, tree = sum(w.stat().st_size for w in wheels), tracked_bytes()
    print(f"{len(wheels)} wheels, {size / 2**20:.1f} MiB; tracked files {tree / 2**20:.1f} MiB")
    if size + tree > CAP_BYTES:
        print(f"over the {CAP_BYTES / 2**20:.0f} MiB the machine takes", file=sys.stderr)
        return 1
    print(f"ok: carry {args.dest} (run's carry=[...] names it relative to the repository)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
