"""After training, the mechanism measures of a synthetic set's SAEs (book: chapter 7): the trained members rebuilt
from the work folder (:func:`trained_members`) and :func:`mechanism_set`, which writes the set's ``mechanism.json``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import torch

from ..data.synthetic import SpikedDictionaryConfig, SpikedDictionaryData
from ..store import CHECKOUT
from ..theory.mechanism import MECHANISM_SAMPLES, mechanism_measures
from .records import read_result, variant_id, write_result
from .ledger import DEFAULT_WORK, _git_state, checkpointed_member_steps
from .spiked_sets import EVAL_SEED_OFFSET, _study, eval_samples, part_folder, study_source
from ..training.sweep import expand_grid, train_sweep
from ..training.train import TrainConfig


MECHANISM_FILE = "mechanism.json"
"""Per set, the mechanism measures of every trained SAE (:mod:`aen_lib.theory.mechanism`), keyed like the record files."""


def _set_protocol(prov: dict[str, Any]) -> tuple[list[Any], TrainConfig, SpikedDictionaryConfig]:
    """The configs, training config and data config of a committed set, rebuilt from its own provenance (not from
    today's constants, which may have changed since it was trained)."""
    proto = prov["protocol"]
    data_cfg = SpikedDictionaryConfig.from_dict(proto["data"])
    tcfg = TrainConfig.from_dict({**proto["train"], "progress": False})
    configs = expand_grid(dict(proto["sae"]), proto["grid"], seeds=[data_cfg.seed])
    return configs, tcfg, data_cfg


def trained_members(folder: str | Path, work_root: str | Path = DEFAULT_WORK, device: str = "cpu") -> list[Any]:
    """The trained SAEs of a committed set, loaded from its finished checkpoints (``done.pt``) in ``work_root``, in
    the order of its configs (each has ``.cfg`` and ``.sae``).

    Checkpoints live outside the repository and stay on the machine that trained the set: where they are missing or
    unfinished this raises ``FileNotFoundError`` naming the command that trains the set again (it never trains)."""
    folder = Path(folder)
    prov = read_result(folder / "provenance.json", "provenance")
    configs, tcfg, data_cfg = _set_protocol(prov)
    study, workers = prov.get("study", "paper"), int(prov.get("workers", 1))
    work = Path(work_root) / prov["set"]
    layout = [(work / "sweep", list(range(len(configs))))] if workers == 1 else \
        [(part_folder(work, i, workers) / "sweep", list(range(len(configs)))[i::workers]) for i in range(workers)]
    for sweep_dir, idx in layout:
        if checkpointed_member_steps(sweep_dir) != len(idx) * tcfg.steps:
            raise FileNotFoundError(
                f"the trained SAEs of {prov['set']} are not (all) in {sweep_dir}: checkpoints stay on the machine that "
                f"trained the set. Train it again with `{prov['command'].replace(' --no-progress', '')}` "
                f"(--work {work_root}); the records it writes must equal the committed ones")
    spec = _study(study)
    dev = torch.device(device)
    source, mean = study_source(spec, data_cfg, dev)  # the stream the set trained on (centred for a centred study)
    b_dec = mean if spec.b_dec_init == "mean" else None
    members: list[Any] = [None] * len(configs)
    for sweep_dir, idx in layout:  # every chunk is finished: this loads the SAEs without training
        res = train_sweep([configs[j] for j in idx], source, tcfg, device=dev,
                          checkpoint_dir=sweep_dir, b_dec_init=b_dec)
        for j, m in zip(idx, res.members):
            members[j] = m
    want = sorted(p.stem for p in folder.glob("*-*.json"))
    have = sorted(variant_id(m.cfg) for m in members)
    if want != have:
        raise ValueError(f"{folder}: the checkpoints in {work} hold SAEs {have}, the records are {want}")
    return members


def mechanism_set(folder: str | Path, *, work_root: str | Path = DEFAULT_WORK, device: str = "cpu",
                  samples: int = MECHANISM_SAMPLES, members: Sequence[Any] | None = None,
                  progress: bool = False) -> dict[str, Any]:
    """Write ``<set>/mechanism.json``: :func:`aen_lib.theory.mechanism.mechanism_measures` of every SAE of a committed set
    on ``samples`` fresh samples of its evaluation stream (centred for a centred study), with the commit that
    computed them. ``members`` are the trained SAEs when the caller has them (otherwise :func:`trained_members`).
    An existing file is kept and returned (delete it to recompute)."""
    folder = Path(folder)
    path = folder / MECHANISM_FILE
    if path.is_file():
        return read_result(path, "mechanism")
    prov = read_result(folder / "provenance.json", "provenance")
    _, _, data_cfg = _set_protocol(prov)
    started = time.time()
    members = list(members) if members is not None else trained_members(folder, work_root, device)
    dev = torch.device(device)
    _, x, _ = eval_samples(data_cfg, samples=samples, device=dev)
    spec = _study(prov.get("study", "paper"))
    if spec.inputs == "centred":
        x = x - SpikedDictionaryData(data_cfg, device=dev).population_mean()
    commit, dirty = _git_state(CHECKOUT)
    out: dict[str, Any] = {"set": prov["set"], "commit": commit,
                           "uncommitted": dirty, "samples": samples, "eval_seed": EVAL_SEED_OFFSET + data_cfg.seed,
                           "inputs": spec.inputs, "torch_threads": torch.get_num_threads(), "members": {}}
    for i, m in enumerate(members):
        out["members"][variant_id(m.cfg)] = mechanism_measures(m.sae.to(dev).eval(), x)
        if progress:
            print(f"  {prov['set']}: {i + 1}/{len(members)} {variant_id(m.cfg)}", flush=True)
    out["seconds"] = round(time.time() - started, 1)
    return read_result(write_result(path, "mechanism", out), "mechanism")
