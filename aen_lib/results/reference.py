"""Reference results: paper-size runs, resumable over days, stored as small JSON records with provenance.

A *set* is one sweep (one grid, one data configuration, one seed) at the paper's size. Its records live in the
repository under ``reference/<set>/``: ``provenance.json`` (the exact command; for every invocation, killed ones included, its git commit,
torch version, device and CPU/GPU model, dates, wall and CPU time and saved member-steps) and one ``<variant>.json`` per trained SAE
(config, data config, final metrics, the logged history; no weights). The training state lives in a work folder
outside the repository (default ``~/.cache/aen_lib/reference_runs/<set>``); the command can be killed at any moment
and run again: it continues from the last checkpoint (:func:`aen_lib.training.sweep.train_sweep`), and the records are only
written once every member has finished. A ``notes.md`` in the work folder (anything a person noted about the run)
is copied next to the records.

    python -m aen_lib.results.reference spiked --rho 0.0            # the paper's synthetic protocol at ρ = 0 (issue grid)
    python -m aen_lib.results.reference spiked --rho 0.9 --device cuda
    python -m aen_lib.results.reference status                      # progress and hours left of every set in the work folder
    python -m aen_lib.results.reference status --members            # ... and the last logged metrics of every SAE
    python -m aen_lib.results.reference check                       # every committed set complete and well-formed
    python -m aen_lib.results.reference table                       # the committed sets' provenance (the README's table)
    python -m aen_lib.results.reference studies                     # every study beside the paper grid (the README's table)
    python -m aen_lib.results.reference spiked --study biasmean --rho 0.9   # a study's set (spiked_<study>_rho<ρ>_seed<s>)

The code lives in five modules: :mod:`.spiked_sets` (protocol, studies, training a set), :mod:`.ledger` (what every
set records of its invocations), :mod:`.spiked_mechanism`, :mod:`.sets` (checking and listing committed sets, the
status of running ones) and :mod:`.spiked_frames` (frames for the chapters); this module is their command line and
re-exports their names.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Sequence

if __name__ == "__main__":  # python -m aen_lib.results.reference: before torch loads, or it has no effect
    from aen_lib import configure_openmp

    configure_openmp()

from ..evaluation.metrics import outlier_severity
from ..theory.mechanism import MECHANISM_SAMPLES
from .ledger import (DEFAULT_WORK, InvocationLedger, checkpointed_member_steps,
                     machine_facts, read_invocations, saved_member_steps, settled_invocations)
from .sets import (INVOCATION_KEYS, PROVENANCE_KEYS, check_set, committed_sets, continue_command, latest_metrics,
                   set_status, set_study)
from .spiked_frames import (MEAN_TREATMENTS, REPOSITORY_SETS, bias_centring_equivalence, centring_at_size,
                            centring_histories, centring_missing, initial_reach, outlier_at_init, outlier_frame, outlier_frames,
                            provenance_table, seed_ranges, seeds_frame, set_frames)
from .spiked_mechanism import MECHANISM_FILE, mechanism_set, trained_members
from .spiked_sets import (EVAL_SAMPLES, EVAL_SEED_OFFSET, FACTORIAL_BRACKET_L1, FACTORIAL_L1, FACTORIAL_TARGET_L0,
                          FACTORIAL_TOLERANCE, LEGACY_RECOVERY_THRESHOLD, OUTLIER_GRID, PAPER_ADAPTIVE_RULE,
                          REFERENCE_SPIKED_GRID, SEEDS_GRID, SENSITIVITY_ADALASSO_GRID, SENSITIVITY_AEN_GRID,
                          SENSITIVITY_AXES, SPIKED_PAPER_SAE, SPIKED_PAPER_TRAIN, STUDIES, Study, eval_samples,
                          part_folder, run_spiked, set_name, step0_sae,
                          studies_table)

__all__ = ["DEFAULT_WORK", "InvocationLedger", "checkpointed_member_steps", "machine_facts", "read_invocations",
           "saved_member_steps", "settled_invocations", "INVOCATION_KEYS", "PROVENANCE_KEYS", "check_set",
           "committed_sets", "continue_command", "latest_metrics", "set_status", "set_study", "REPOSITORY_SETS",
           "bias_centring_equivalence", "centring_at_size", "centring_histories", "centring_missing", "MEAN_TREATMENTS", "initial_reach", "outlier_at_init", "outlier_frame", "outlier_frames", "provenance_table",
           "seed_ranges", "seeds_frame", "set_frames", "MECHANISM_FILE", "mechanism_set", "trained_members",
           "EVAL_SAMPLES", "EVAL_SEED_OFFSET", "FACTORIAL_BRACKET_L1", "FACTORIAL_L1", "FACTORIAL_TARGET_L0",
           "FACTORIAL_TOLERANCE", "LEGACY_RECOVERY_THRESHOLD", "OUTLIER_GRID", "PAPER_ADAPTIVE_RULE",
           "REFERENCE_SPIKED_GRID", "SEEDS_GRID", "SENSITIVITY_ADALASSO_GRID", "SENSITIVITY_AEN_GRID",
           "SENSITIVITY_AXES", "SPIKED_PAPER_SAE", "SPIKED_PAPER_TRAIN", "STUDIES", "Study", "eval_samples",
           "part_folder", "run_spiked", "set_name", "step0_sae", "studies_table", "outlier_severity", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aen_lib.results.reference", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="kind", required=True)
    sp = sub.add_parser("spiked", help="the paper's synthetic protocol at its size (n 256, m 1024, k 16, 50k steps)")
    sp.add_argument("--rho", type=float, required=True)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--study", default="paper", choices=sorted(STUDIES),
                    help="which grid and input treatment: " + "; ".join(f"{k}: {v.doc}" for k, v in STUDIES.items()))
    sp.add_argument("--device", default="cpu")
    sp.add_argument("--workers", type=int, default=1,
                    help="split the SAEs over this many one-thread processes (a set keeps the number it started with)")
    sp.add_argument("--part", default=None, help=argparse.SUPPRESS)  # set by --workers in the processes it starts
    sp.add_argument("--steps", type=int, default=None, help="override the 50,000 steps (a smoke run; named apart)")
    sp.add_argument("--out", default="reference", help="where the records go (default: reference/)")
    sp.add_argument("--work", default=str(DEFAULT_WORK), help="checkpoints (outside the repository)")
    sp.add_argument("--no-progress", action="store_true")
    cp = sub.add_parser("check", help="check that every committed set under a folder is complete and well-formed")
    cp.add_argument("root", nargs="?", default="reference")
    st = sub.add_parser("status", help="how far each set in the work folder has come, and the time left")
    st.add_argument("--work", default=str(DEFAULT_WORK))
    st.add_argument("--members", action="store_true", help="also the last logged L0, EV and dead %% of every SAE")
    tp = sub.add_parser("table", help="the committed sets' provenance as the Markdown table the README shows")
    tp.add_argument("root", nargs="?", default="reference")
    mp = sub.add_parser("mechanism", help="write each set's mechanism.json (encoder Lipschitz constant, amortisation "
                        "gap, weights against firing) from its trained SAEs in the work folder")
    mp.add_argument("sets", nargs="+", help="set folders, e.g. reference/spiked_factorial_rho0_seed1")
    mp.add_argument("--work", default=str(DEFAULT_WORK))
    mp.add_argument("--samples", type=int, default=MECHANISM_SAMPLES)
    sub.add_parser("studies", help="every study (grid, treatment, purpose) as the Markdown table the README shows")
    args = ap.parse_args(argv)
    if args.kind == "studies":
        print(studies_table())
        return 0
    if args.kind == "status":
        folders = sorted({p.parent.parent for p in Path(args.work).glob("*/sweep/sweep.json")}
                         | {p.parent.parent.parent for p in Path(args.work).glob("*/part*of*/sweep/sweep.json")})
        for folder in folders:
            s = set_status(folder)
            speed = (f"{s['member_steps_per_s']:.1f} member-steps/s, about {s['hours_left']:.1f} h left at that speed"
                     if s["member_steps_per_s"] else "no speed yet")
            threads = s["threads"]
            state = f"running ({threads} thread{'' if threads == 1 else 's'})" if s["running"] else "not running"
            print(f"{s['set']}: step {s['steps']:,} of {s['of_steps']:,} ({100 * s['member_steps'] / s['total']:.0f}%), "
                  f"{s['members']} SAEs; {state}; {speed}; {s['invocations']} invocations, {s['wall_hours']:.1f} h so far")
            if not s["running"] and s["member_steps"] < s["total"]:
                print(f"  continue it with: {s['continue']}")
            if args.members:
                print(latest_metrics(folder).to_string(index=False, float_format=lambda v: f"{v:.3g}", na_rep="-"))
        print(f"{len(folders)} set(s) under {args.work}")
        return 0
    if args.kind == "mechanism":
        for folder in args.sets:
            had = (Path(folder) / MECHANISM_FILE).is_file()
            res = mechanism_set(folder, work_root=args.work, samples=args.samples, progress=True)
            print(f"{folder}: {'kept the existing' if had else 'wrote'} {MECHANISM_FILE} "
                  f"({len(res['members'])} SAEs, {res['seconds']} s)")
        return 0
    if args.kind == "table":
        sets = committed_sets(args.root, study=None)
        if not sets:
            print(f"no committed set under {args.root}")
            return 1
        print(provenance_table(sets))
        return 0
    if args.kind == "check":
        sets = committed_sets(args.root, study=None, kind="any")
        for folder in sets:
            prov = check_set(folder)
            print(f"{folder.name}: {prov['members']} SAEs, {prov['wall_seconds'] / 3600:.1f} h, "
                  f"{prov['member_steps_per_s']} member-steps/s — ok")
        print(f"{len(sets)} set(s) checked under {args.root}")
        return 0
    words = list(argv if argv is not None else sys.argv[1:])
    for i, a in enumerate(words):  # the work folder is machine-specific: not part of the recorded command
        if a == "--work" and i + 1 < len(words):
            words[i + 1] = ""
    command = "python -m aen_lib.results.reference " + " ".join(shlex.quote(a) for a in words if a and a != "--work"
                                                        and not a.startswith("--work="))
    part = None
    if args.part is not None:
        i, w = (int(v) for v in args.part.split("/"))
        part = (i, w)
    argv_parts = list(argv if argv is not None else sys.argv[1:])
    out = run_spiked(args.rho, args.seed, out_root=Path(args.out), work_root=Path(args.work), device=args.device,
                     steps=args.steps, command=command, progress=not args.no_progress and args.workers == 1,
                     study=args.study, workers=args.workers, part=part, argv=argv_parts)
    if part is not None:
        print(f"part {part[0]} of {part[1]} trained")
        return 0
    print(f"records written to {out}" if out else "the set already exists; delete its folder to regenerate it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
