"""The committed sets and the work folder (book: README, reference results): checking a committed set
(:func:`check_set`), listing them (:func:`committed_sets`), the progress of sets still training
(:func:`set_status`, :func:`latest_metrics`) with the command that continues each (:func:`continue_command`), and the
README's provenance table (:func:`provenance_table`)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..sae.config import SAEConfig
from .records import read_result
from .ledger import DEFAULT_WORK, checkpointed_member_steps, read_invocations, saved_member_steps
from .spiked_mechanism import MECHANISM_FILE
from .spiked_sets import STUDIES, _study, set_name


PROVENANCE_KEYS = ("record_version", "set", "command", "protocol", "members", "invocations", "wall_seconds",
                   "member_steps", "member_steps_per_s")
INVOCATION_KEYS = ("started", "ended", "commit", "torch", "device", "cpu", "seconds", "member_steps")


def check_set(folder: str | Path) -> dict[str, Any]:
    """Check that a committed reference set is complete and well-formed; return its provenance.

    Raises ``ValueError`` naming the first problem: missing provenance fields, a record count that is not the
    provenance's member count, a record that is not a results record, a member whose history does not reach the
    protocol's last step, or member-steps that do not add up."""
    from .records import load_records

    folder = Path(folder)
    prov_path = folder / "provenance.json"
    if not prov_path.is_file():
        raise ValueError(f"{folder}: no provenance.json; a set is committed only when complete")
    try:
        prov = read_result(prov_path, "provenance")
    except json.JSONDecodeError as e:
        raise ValueError(f"{prov_path} is not valid JSON ({e})") from e
    missing = [k for k in PROVENANCE_KEYS if k not in prov]
    if missing:
        raise ValueError(f"{prov_path} lacks {missing}")
    if not prov["invocations"]:
        raise ValueError(f"{prov_path}: no invocation recorded")
    for i, call in enumerate(prov["invocations"]):
        lacking = [k for k in INVOCATION_KEYS if k not in call]
        if lacking:
            raise ValueError(f"{prov_path}: invocation {i} lacks {lacking}")
    records = load_records(folder, pattern="*-*.json")  # <method>-<hash>.json; provenance.json is not a record
    if len(records) != prov["members"]:
        raise ValueError(f"{folder}: {len(records)} records but provenance.json says {prov['members']} members")
    steps = prov["protocol"]["train"]["steps"]
    for r in records:
        hist = r.get("history") or []
        if not hist or hist[-1].get("step") != steps:
            raise ValueError(f"{folder}: record {r['variant']} has a history that does not reach step {steps}")
        for key in ("l0", "ev", "dead_pct", "dead_pct_window"):
            if key not in r["final"]:
                raise ValueError(f"{folder}: record {r['variant']} lacks final[{key!r}]")
    mech = folder / MECHANISM_FILE
    if mech.is_file():
        want = sorted(r["variant"] for r in records)
        got = sorted(read_result(mech, "mechanism")["members"])
        if got != want:
            raise ValueError(f"{mech}: measures for {got}, but the set's records are {want}; delete it and run "
                             f"`python -m aen_lib.results.reference mechanism {folder}` again")
    names = sorted(p.name for p in folder.glob("*-*.json"))
    for extra, stage, need in (("evaluation.json", "evaluate", ("firing_counts", "spliced", "dead_out_of_reach_heldout_pct")),
                               ("features.json", "features", ("sampled", "alive", "silent"))):  # aen_lib.results.lmref, after training
        path = folder / extra
        if not path.is_file():
            continue
        saes = read_result(path, "evaluation" if stage == "evaluate" else "features")["saes"]
        if sorted(saes) != names:
            raise ValueError(f"{path}: entries for {sorted(saes)}, but the set's records are {names}; move it away "
                             f"and run `python -m aen_lib.results.lmref {stage} {folder}` again")
        for name, entry in saes.items():
            lacking = [k for k in need if k not in entry]
            if lacking:
                raise ValueError(f"{path}: the entry of {name} lacks {lacking}")
            d_sae = read_result(folder / name, "sae")["sae_config"]["d_sae"]
            if "firing_counts" in entry and len(entry["firing_counts"]) != d_sae:
                raise ValueError(f"{path}: {name} has {len(entry['firing_counts'])} firing counts for {d_sae} latents")
    if sum(c["member_steps"] for c in prov["invocations"]) != prov["member_steps"]:
        raise ValueError(f"{prov_path}: member_steps does not add up over the invocations")
    if prov["member_steps"] != prov["members"] * steps:
        raise ValueError(f"{prov_path}: member_steps {prov['member_steps']} is not members × steps "
                         f"({prov['members']} × {steps})")
    return prov


def set_study(folder: str | Path) -> str:
    """The study of a committed set (sets written before studies existed are the paper's)."""
    return read_result(Path(folder) / "provenance.json", "provenance").get("study", "paper")


def committed_sets(root: str | Path, device: str | None = None, study: str | None = "paper",
                   kind: str = "spiked") -> list[Path]:
    """The set folders under ``root`` (each holds a provenance.json) of one study (default: the paper's grid;
    ``None``: every study); with ``device`` ("cpu", "cuda"), only the sets whose last invocation trained on that
    device type. ``kind`` is ``"spiked"`` (the synthetic sets, the default), ``"language_model"`` (the
    :mod:`aen_lib.results.lmref` sets, whose studies are :data:`aen_lib.results.lm_sets.LM_STUDIES`) or ``"any"``."""
    if kind not in ("spiked", "language_model", "any"):
        raise ValueError(f"kind={kind!r}; allowed: 'spiked', 'language_model', 'any'")
    root = Path(root)
    if study is not None and kind == "spiked":
        _study(study)
    sets = sorted(p.parent for p in root.glob("*/provenance.json")) if root.is_dir() else []
    if kind != "any":
        sets = [f for f in sets
                if read_result(f / "provenance.json", "provenance").get("kind", "spiked") == kind]
    if study is not None:
        sets = [f for f in sets if set_study(f) == study]
    if device is None:
        return sets
    want = torch.device(device).type
    return [f for f in sets
            if torch.device(read_result(f / "provenance.json", "provenance")["invocations"][-1]["device"]).type == want]


def _parts(work: Path) -> list[Path]:
    return sorted(p.parent.parent for p in work.glob("part*of*/sweep/sweep.json"))


def set_status(work: str | Path, *, now: dt.datetime | None = None, every_s: float = 60.0) -> dict[str, Any]:
    """:func:`_set_status` of a set, summed over its parts when it was split over processes (``--workers``)."""
    work = Path(work)
    parts = _parts(work)
    if not parts:
        return _set_status(work, now=now, every_s=every_s)
    each = [_set_status(p, now=now, every_s=every_s) for p in parts]
    rates = [s["member_steps_per_s"] for s in each]
    out = {"set": work.name, "member_steps": sum(s["member_steps"] for s in each),
           "total": sum(s["total"] for s in each), "members": sum(s["members"] for s in each),
           "steps": min(s["steps"] for s in each), "of_steps": each[0]["of_steps"],
           "invocations": max(s["invocations"] for s in each), "running": any(s["running"] for s in each),
           "threads": 1, "wall_hours": max(s["wall_hours"] for s in each),
           "member_steps_per_s": sum(rates) if all(r for r in rates) else None,
           "hours_left": max(s["hours_left"] for s in each) if all(s["hours_left"] is not None for s in each) else None,
           "parts": len(parts)}
    plan = json.loads((parts[0] / "sweep" / "sweep.json").read_text())
    out["continue"] = continue_command(work, plan) + f" --workers {len(parts)}"
    return out


def _set_status(work: str | Path, *, now: dt.datetime | None = None, every_s: float = 60.0) -> dict[str, Any]:
    """Where a set in its work folder stands: member-steps saved of the total, invocations, whether one is running
    (its heartbeat is younger than two beats), its saved member-steps per wall second, and the hours left at that
    speed (None when no invocation has saved progress yet)."""
    work = Path(work)
    manifest = work / "sweep" / "sweep.json"
    if not manifest.is_file():
        raise ValueError(f"{work} holds no started set (no sweep/sweep.json); start one with "
                         "python -m aen_lib.results.reference spiked --rho R")
    plan = json.loads(manifest.read_text())
    total = sum(len(c) for c in plan["chunks"]) * int(plan["train"]["steps"])
    held = checkpointed_member_steps(work / "sweep")
    calls = read_invocations(work / "invocations")
    now = now or dt.datetime.now(dt.timezone.utc)
    last = calls[-1] if calls else None
    running = bool(last and not last.get("completed") and last.get("ended")
                   and (now - dt.datetime.fromisoformat(last["ended"])).total_seconds() < 2 * every_s)
    # saved member-steps per wall second of the latest invocation that saved any (the running one, else the last
    # one before it; an invocation's saved progress runs to the next one's start)
    rate = None
    for call, gained in reversed(list(zip(calls, saved_member_steps(calls, held)))):
        seconds = call.get("seconds")
        if gained > 0 and seconds:
            rate = gained / seconds
            break
    return {"set": work.name, "member_steps": held, "total": total, "members": total // int(plan["train"]["steps"]),
            "steps": held // max(1, total // int(plan["train"]["steps"])), "of_steps": int(plan["train"]["steps"]),
            "invocations": len(calls), "running": running,
            "threads": last.get("torch_threads") if last else None,
            "wall_hours": sum(c.get("seconds") or 0 for c in calls) / 3600,
            "member_steps_per_s": rate, "hours_left": (total - held) / rate / 3600 if rate else None,
            "continue": continue_command(work, plan)}


def latest_metrics(work: str | Path) -> pd.DataFrame:
    """The last logged metrics of every SAE of a set in its work folder, finished or not: one row per SAE with its
    label, the step of its last log line, L0, EV, dead % and how full the current dead window was (the dead % of a
    window that is not full covers fewer steps than the paper's 10,000). Interim numbers, to watch a long run; the
    records written at the end are what the book reads."""

    work = Path(work)
    if _parts(work):  # a set split over processes: every part's SAEs
        return pd.concat([latest_metrics(p) for p in _parts(work)], ignore_index=True)
    manifest = work / "sweep" / "sweep.json"
    if not manifest.is_file():
        raise ValueError(f"{work} holds no started set (no sweep/sweep.json)")
    plan = json.loads(manifest.read_text())
    if not isinstance(plan.get("configs"), list):
        raise ValueError(f"{manifest} lists no configs; it was written by an older version (see the set's notes.md)")
    rows = []
    for c_i, idx in enumerate(plan["chunks"]):
        last: dict[int, dict[str, Any]] = {}
        log = work / "sweep" / f"chunk_{c_i:03d}" / "metrics.jsonl"
        for line in log.read_text().splitlines() if log.is_file() else []:
            if line.strip():
                rec = json.loads(line)
                last[int(rec.get("member", 0))] = rec
        for j, i in enumerate(idx):
            rec = last.get(j, {})
            rows.append({"SAE": SAEConfig.from_dict(plan["configs"][i]).label, "step": rec.get("step"),
                         "L0": rec.get("l0"), "EV": rec.get("ev"), "dead %": rec.get("dead_pct"),
                         "dead window full": rec.get("dead_window_fill")})
    return pd.DataFrame(rows)


def continue_command(work: Path, plan: dict[str, Any]) -> str:
    """The command that continues the set in ``work`` (from its manifest: ρ, seed, device, a smoke run's steps; a
    language-model set, ``lm_...``, is continued by :mod:`aen_lib.results.lmref`)."""
    if work.name.startswith("lm_"):
        import re

        m = re.fullmatch(r"lm_smollm2_(.+?)_seed(\d+)(?:_steps(\d+))?(?:_windows(\d+))?", work.name)
        if m is None:
            return f"(unknown language-model set {work.name}; see python -m aen_lib.results.lmref train --help)"
        words = ["python -m aen_lib.results.lmref train", f"--study {m.group(1)}", f"--seed {m.group(2)}"]
        if m.group(3):
            words.append(f"--steps {m.group(3)}")
        if work.parent != DEFAULT_WORK:
            words.append(f"--work {work.parent}")
        return " ".join(words)
    data = plan["data"] if isinstance(plan.get("data"), dict) else {}
    if isinstance(data.get("source"), dict):  # a wrapped source (e.g. centred inputs) names the spiked config inside
        data = data["source"]
    study = work.name.removeprefix("spiked_").split("_rho")[0]
    study = study if study in STUDIES else "paper"
    words = ["python -m aen_lib.results.reference spiked", f"--rho {data.get('rho', '?')}", f"--seed {data.get('seed', '?')}"]
    if study != "paper":
        words.append(f"--study {study}")
    rest = work.name.removeprefix(set_name(float(data.get("rho", 0.0)), int(data.get("seed", 0)), study=study))
    device = rest.split("_")[1] if rest.startswith("_") and not rest.startswith("_steps") else ""
    if device:
        words.append(f"--device {device}")  # off-CPU sets carry the device type in their name
    if "_steps" in work.name:
        words.append(f"--steps {plan['train']['steps']}")
    if work.parent != DEFAULT_WORK:
        words.append(f"--work {work.parent}")
    return " ".join(words)
