"""The GPU check: the CUDA tests and the training benchmark on the GPU, or one line saying why not.

    make gpu-check        # on a machine without CUDA: one line, exit 0

On a CUDA machine it runs tests/test_cuda.py (a cuda run, fp16 and bf16 autocast, exact resume), then
benchmarks/bench_train.py --device cuda (the engine against a hand-written loop on the same GPU, same run), and
prints the device, torch and CUDA versions first so the figures can be quoted with their machine.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        build = "a CPU build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, but no device visible"
        print(f"gpu-check: skipped, no CUDA device (torch {torch.__version__}, {build}); nothing to check here")
        return 0
    name = torch.cuda.get_device_name(0)
    print(f"gpu-check: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                            str(ROOT / "tests" / "test_cuda.py")], cwd=ROOT)
    bench = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--device", "cuda",
                            "--rounds", "2", "--epochs", "3"], cwd=ROOT)
    return 0 if tests.returncode == 0 and bench.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
