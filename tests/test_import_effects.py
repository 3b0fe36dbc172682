"""Importing aen_lib has no hidden global effects (``aen_lib/__init__.py``), and ``configure_openmp`` does its job.

Each check runs in a fresh Python process: an import is only a first import there, and torch's OpenMP runtime reads
its settings once per process.
"""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import aen_lib

REPO = Path(__file__).resolve().parent.parent
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")

# Imports each module named on the command line in turn and prints, per module, what its import changed: environment
# variables, torch's initial seed, and the states of torch's, Python's and NumPy's global generators.
CHECK_IMPORTS = r"""
import hashlib, importlib, json, os, pickle, random, sys
import numpy as np
import torch

def snapshot():
    digest = lambda obj: hashlib.sha256(pickle.dumps(obj)).hexdigest()
    return {"env": dict(os.environ), "torch.initial_seed()": torch.initial_seed(),
            "torch RNG": digest(torch.get_rng_state().numpy().tobytes()), "random RNG": digest(random.getstate()),
            "numpy RNG": digest(np.random.get_state())}

changes = {}
before = snapshot()
for name in sys.argv[1:]:
    importlib.import_module(name)
    after = snapshot()
    env_a, env_b = before.pop("env"), after["env"]
    found = [f"env {k}" for k in sorted(set(env_a) | set(env_b)) if env_a.get(k) != env_b.get(k)]
    found += [k for k in before if before[k] != after[k]]
    changes[name] = found
    before = after
print(json.dumps(changes))
"""


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any OpenMP wait setting, with one thread and ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in WAIT_VARIABLES}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO), **extra)
    return env


def import_changes(modules: list[str], path: Path | None = None) -> dict[str, list[str]]:
    env = clean_env()
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(path), str(REPO)])
    proc = subprocess.run([sys.executable, "-c", CHECK_IMPORTS, *modules], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def library_modules() -> list[str]:
    """``aen_lib`` and every module in it (chapters import most of them), the package first."""
    return ["aen_lib", *sorted(m.name for m in pkgutil.walk_packages(aen_lib.__path__, "aen_lib."))]


def test_importing_the_library_changes_no_environment_variable_and_no_global_rng():
    modules = library_modules()
    assert {"aen_lib.book.notebook", "aen_lib.training.train", "aen_lib.training.sweep", "aen_lib.cli"} <= set(modules)
    changes = import_changes(modules)
    assert set(changes) == set(modules)
    assert {m: c for m, c in changes.items() if c} == {}


def test_the_check_catches_a_module_with_global_effects(tmp_path):
    """The check above can fail: modules that set a variable, seed the generators, or only draw from torch's."""
    (tmp_path / "seeds_everything.py").write_text(
        "import os, random\nimport numpy as np\nimport torch\n"
        "os.environ['OMP_WAIT_POLICY'] = 'PASSIVE'\nrandom.seed(1)\nnp.random.seed(1)\ntorch.manual_seed(1)\n")
    (tmp_path / "draws_once.py").write_text("import torch\ntorch.rand(1)\n")
    (tmp_path / "quiet.py").write_text("import torch\nx = torch.rand(1, generator=torch.Generator().manual_seed(0))\n")
    changes = import_changes(["seeds_everything", "draws_once", "quiet"], path=tmp_path)
    assert changes == {
        "seeds_everything": ["env OMP_WAIT_POLICY", "torch.initial_seed()", "torch RNG", "random RNG", "numpy RNG"],
        "draws_once": ["torch RNG"],
        "quiet": [],
    }


def test_importing_the_library_does_not_import_torch():
    """What lets an entry point call configure_openmp() in time: aen_lib, its chapter helpers and the command line
    load torch only when a name that needs it is used."""
    code = ("import sys, aen_lib, aen_lib.book.notebook, aen_lib.cli\n"
            "before = sorted(m for m in sys.modules if m.split('.')[0] == 'torch')\n"
            "from aen_lib import *\n"
            "print(before, SAE.__module__, train.__module__, callable(train), 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]", "aen_lib.sae.model", "aen_lib.training.train", "True", "True"]


def openmp_run(code: str, **extra: str) -> tuple[str, str]:
    """(stdout, the spin count GNU libgomp starts with) of ``code`` in a fresh process; skips without libgomp."""
    return openmp_argv(["-c", code], **extra)


def openmp_argv(argv: list[str], **extra: str) -> tuple[str, str]:
    """(stdout, the spin count GNU libgomp starts with) of ``python *argv`` in a fresh process; skips without libgomp."""
    proc = subprocess.run([sys.executable, *argv], env=clean_env(OMP_DISPLAY_ENV="VERBOSE", **extra),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    spin = [line.split("=", 1)[1].strip(" '") for line in proc.stderr.splitlines() if "GOMP_SPINCOUNT" in line]
    if not spin:
        pytest.skip("torch's OpenMP runtime is not GNU libgomp here: no spin count to read")
    return proc.stdout.strip(), spin[0]


def test_configure_openmp_before_torch_makes_waits_sleep():
    out, spin = openmp_run("import os, aen_lib\nok = aen_lib.configure_openmp()\nimport torch\n"
                           "print(ok, os.environ['OMP_WAIT_POLICY'])")
    assert (out, spin) == ("True PASSIVE", "0")


def test_configure_openmp_after_torch_is_too_late_and_says_so():
    """libgomp read its settings while torch was imported: it keeps its default, spinning 300,000 times before it
    sleeps (what configure_openmp exists to change), and the call returns False."""
    out, spin = openmp_run("import torch, aen_lib\nprint(aen_lib.configure_openmp())")
    assert (out, spin) == ("False", "300000")


def test_configure_openmp_keeps_the_users_choice():
    out, spin = openmp_run("import os, aen_lib\naen_lib.configure_openmp()\nimport torch\n"
                           "print(os.environ['OMP_WAIT_POLICY'])", OMP_WAIT_POLICY="ACTIVE")
    assert (out, spin) == ("ACTIVE", "30000000000")
    out, spin = openmp_run("import os, aen_lib\naen_lib.configure_openmp()\nimport torch\n"
                           "print('OMP_WAIT_POLICY' in os.environ)", GOMP_SPINCOUNT="1000")
    assert (out, spin) == ("False", "1000")


@pytest.mark.parametrize("module", ["aen_lib.reference", "aen_lib.lmref", "aen_lib.results.reference",
                                    "aen_lib.results.lmref"])
def test_the_reference_set_commands_start_openmp_with_sleeping_waits(module):
    """``python -m <module>``, under the committed sets' names (the shims) and the modules': torch loads before the
    flags are parsed (``--help``), and GNU libgomp already starts with sleeping waits (spin count 0, not the 300,000
    of a configure_openmp that came too late)."""
    out, spin = openmp_argv(["-m", module, "--help"])
    assert out.startswith("usage:") and spin == "0"
