"""The language-model reference sets: SmolLM2-135M activations harvested from the offline corpus into a cache, and
SAEs of 8 x d_model trained on it with the same machinery and provenance as the synthetic sets
(:mod:`aen_lib.results.reference`). Book: the language-model chapters and the README's reference results.

The pipeline, one command per stage (``python -m aen_lib.results.lmref <stage>``):

* ``harvest``: the corpus's training split (:func:`aen_lib.data.corpus.split_file`), packed as the paper packs the Pile
  (one EOS after each document, 128-token windows that cross documents, no BOS), through the registry's model to
  the output of its middle block (:data:`aen_lib.data.lm.REGISTRY`; block 15 of 30 for SmolLM2-135M), position 0 of
  each window dropped (the attention sink), every token rescaled to norm sqrt(d), stored in 16 bits. Resumable:
  a second call continues where the first stopped and refuses a cache whose key differs. It ends by writing the
  cache's *harvest record*: the cache key, its checksum (sha256 over the shards' own checksums, in order), per-shard
  moments and two probe rows. A re-harvest on another machine compares itself with a recorded one
  (:func:`compare_harvests`): whether the checksums match, and if not, the largest difference of the probe rows and
  of the shard moments.
* ``train``: one set of SAEs (a study of :data:`LM_STUDIES`) on the first windows of that cache, resumably, with
  the set's provenance (commit, command, invocations with wall and CPU seconds, threads, device, the harvest record).
  Each record holds held-out L0/EV/dead %, the dead-latent window in tokens, and every latent's firing count over
  the window training ended in with its density histogram (the adaptive weights' mean and shares at w_max / w_min
  are in the history).
* ``evaluate``: after training, the set's SAEs on the held-out split (:func:`evaluate_lm_set`): firing counts,
  dead % silent and out of reach, and the spliced evaluation (CE clean, patched, mean- and zero-ablated, KL), into
  the set's ``evaluation.json``.
* ``features``: after training, a random sample of each SAE's alive latents with their strongest held-out contexts
  and the tokens their atoms promote and suppress (:func:`latent_samples`), into the set's ``features.json``.

The model here is SmolLM2-135M-Instruct from a Q4_1 GGUF file dequantised to floating point (the offline stand-in,
:mod:`aen_lib.data.lm`), run in bfloat16 on CPUs with native bf16 instructions (3.5x the float32 rate there, activations
within about 1% of float32; README, performance); the paper's Pythia-70M and Llama-3.1-8B cannot be loaded offline.

The code lives in four modules, one per stage: :mod:`.lm_harvest`, :mod:`.lm_sets`, :mod:`.lm_evaluate` and
:mod:`.lm_tables`; this module is their command line and re-exports their public names.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

if __name__ == "__main__":  # python -m aen_lib.results.lmref: before torch loads, or it has no effect
    from aen_lib import configure_openmp

    configure_openmp()

from .lm_evaluate import (DENSE_SHARE, EVAL_WINDOWS, EVALUATION_NAME, FEATURES_NAME, SAMPLED_LATENTS, evaluate_lm_set,
                          heldout_windows, latent_samples, trained_saes)
from .lm_harvest import (DEFAULT_CACHE_ROOT, DEFAULT_CORPUS, HARVEST_LM_DTYPE, HARVEST_STORAGE, LM_NAME, LM_WINDOW,
                         PROBE_ROWS, RECORD_NAME, compare_harvests, corpus_documents, harvest, harvest_config,
                         harvest_record, load_harvest_lm)
from .lm_sets import (LM_ADAPTIVE_BETA, LM_CHECKPOINT_EVERY, LM_SAE, LM_SEEDS, LM_STUDIES, LM_TRAIN, LM_TRAIN_WINDOWS,
                      LMStudy, dead_curve_settled, final_window_record, heldout_metrics, lm_planned_sets, lm_set_name,
                      lm_untrained, run_lm_set, training_mean)
from .lm_tables import (MATCH_TOLERANCE, PAPER_WINDOW_TOKENS, lm_dead_windows, lm_frame, lm_matched_table, lm_table,
                        sae_names, training_split_label, treatment)
from .records import read_result

__all__ = ["LM_NAME", "LM_WINDOW", "LM_SAE", "LM_TRAIN", "LM_TRAIN_WINDOWS", "LM_STUDIES", "LM_SEEDS", "lm_planned_sets", "lm_untrained", "sae_names", "LM_ADAPTIVE_BETA", "LMStudy",
           "harvest_config", "harvest", "harvest_record", "compare_harvests", "corpus_documents", "heldout_metrics",
           "dead_curve_settled", "run_lm_set", "lm_set_name", "training_mean", "final_window_record",
           "evaluate_lm_set", "trained_saes", "heldout_windows", "latent_samples", "EVAL_WINDOWS", "EVALUATION_NAME",
           "FEATURES_NAME", "SAMPLED_LATENTS", "DENSE_SHARE", "lm_frame", "lm_matched_table", "lm_table",
           "lm_dead_windows", "treatment", "training_split_label", "MATCH_TOLERANCE", "PAPER_WINDOW_TOKENS",
           "DEFAULT_CACHE_ROOT", "DEFAULT_CORPUS", "HARVEST_LM_DTYPE", "HARVEST_STORAGE", "PROBE_ROWS", "RECORD_NAME",
           "LM_CHECKPOINT_EVERY", "load_harvest_lm", "recorded_command", "main"]


def _describe(record: dict[str, Any]) -> str:
    c = record["config"]
    return (f"{record['windows']:,} windows, {record['rows']:,} rows of {c['d_model']} ({c['model']} block "
            f"{c['layer']}, LM in {c['lm_dtype']}, stored {c['dtype']}), {record['shards']} shards, "
            f"{'complete' if record['complete'] else 'stopped at the window limit'}; checksum {record['checksum'][:16]}")


_MACHINE_FLAGS = ("--corpus", "--cache-root", "--work")


def recorded_command(argv: Sequence[str]) -> str:
    """A command as a record keeps it: folders are this machine's, so ``--corpus``, ``--cache-root`` and ``--work``
    (either spelling) are left out, and an absolute path inside the checkout (a set folder given to ``evaluate`` or
    ``features``) is written relative to it."""
    import shlex

    from ..store import shown_path

    words, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in _MACHINE_FLAGS:
            skip = True
        elif not a.startswith(tuple(f + "=" for f in _MACHINE_FLAGS)):
            words.append(shown_path(a) if Path(a).is_absolute() else a)
    return "python -m aen_lib.results.lmref " + " ".join(shlex.quote(a) for a in words)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aen_lib.results.lmref", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="stage", required=True)
    h = sub.add_parser("harvest", help="harvest the corpus's training split into an activation cache (resumable)")
    h.add_argument("--corpus", default=str(DEFAULT_CORPUS), help="a corpus built by python -m aen_lib.data.corpus build")
    h.add_argument("--cache-root", default=str(DEFAULT_CACHE_ROOT), help="where the cache folder goes")
    h.add_argument("--windows", type=int, default=None, help="harvest the first N windows only (default: all)")
    h.add_argument("--split", default="train", choices=["train", "heldout"])
    h.add_argument("--lm-dtype", default=HARVEST_LM_DTYPE, choices=["bfloat16", "float32"])
    h.add_argument("--batch-size", type=int, default=16, help="windows per LM forward")
    h.add_argument("--compare", default=None, help="a recorded harvest_record.json to compare this harvest with")
    h.add_argument("--no-progress", action="store_true")
    t = sub.add_parser("train", help="train (or continue) one language-model set on the harvested cache")
    t.add_argument("--study", default="pilot", choices=sorted(LM_STUDIES))
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--steps", type=int, default=None, help="fewer steps (a smoke run; the set's name says so)")
    t.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    t.add_argument("--cache-root", default=str(DEFAULT_CACHE_ROOT))
    t.add_argument("--out", default="reference", help="where the finished set's records go")
    t.add_argument("--work", default=None, help="checkpoints (default: ~/.cache/aen_lib/reference_runs)")
    t.add_argument("--no-progress", action="store_true")
    ev = sub.add_parser("evaluate", help="after training: held-out firing counts, dead %% by definition and the "
                        "spliced evaluation of a finished set's SAEs, into evaluation.json beside its records")
    ev.add_argument("folder", help="a committed set, e.g. reference/lm_smollm2_pilot_seed0")
    ev.add_argument("--max-windows", type=int, default=EVAL_WINDOWS, help="held-out windows the LM is run on")
    ev.add_argument("--batch-size", type=int, default=8, help="windows per LM forward")
    ev.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    ev.add_argument("--cache-root", default=str(DEFAULT_CACHE_ROOT))
    ev.add_argument("--work", default=None, help="checkpoints (default: ~/.cache/aen_lib/reference_runs)")
    ev.add_argument("--no-progress", action="store_true")
    fe = sub.add_parser("features", help="after training: a random sample of each SAE's alive latents with their "
                        "strongest held-out contexts and logit tokens, into features.json beside its records")
    fe.add_argument("folder", help="a committed set, e.g. reference/lm_smollm2_pilot_seed0")
    fe.add_argument("--latents", type=int, default=SAMPLED_LATENTS, help="alive latents sampled per SAE")
    fe.add_argument("--seed", type=int, default=0)
    fe.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    fe.add_argument("--cache-root", default=str(DEFAULT_CACHE_ROOT))
    fe.add_argument("--work", default=None, help="checkpoints (default: ~/.cache/aen_lib/reference_runs)")
    tb = sub.add_parser("table", help="the committed language-model sets as a markdown table (one row per SAE)")
    tb.add_argument("root", nargs="?", default="reference")
    st = sub.add_parser("status", help="how far a language-model set has come: steps, speed, hours left, last metrics")
    st.add_argument("--study", default="pilot", choices=sorted(LM_STUDIES))
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--steps", type=int, default=None)
    st.add_argument("--work", default=None, help="checkpoints (default: ~/.cache/aen_lib/reference_runs)")
    args = ap.parse_args(argv)
    if args.stage == "table":
        from .sets import committed_sets

        sets = committed_sets(args.root, study=None, kind="language_model")
        if not sets:
            print(f"no committed language-model set under {args.root}")
            return 1
        print(lm_table(sets))
        return 0
    if args.stage == "status":
        from .ledger import DEFAULT_WORK
        from .sets import latest_metrics, set_status

        work = (Path(args.work) if args.work else DEFAULT_WORK) / lm_set_name(args.study, args.seed, args.steps)
        try:
            state = set_status(work)
        except ValueError as e:
            print(f"aen_lib.results.lmref: {e}", file=sys.stderr)
            return 2
        left = f", {state['hours_left']:.2f} h left" if state["hours_left"] is not None else ""
        print(f"{state['set']}: step {state['steps']:,} of {state['of_steps']:,} saved, "
              f"{'running' if state['running'] else 'not running'}, {state['invocations']} invocation(s){left}; "
              f"continue with: {state['continue']}")
        print(latest_metrics(work).to_string(index=False))
        return 0
    from .. import configure_openmp

    configure_openmp()
    if args.stage == "harvest":
        # read before harvesting: the harvest rewrites its own folder's record
        recorded = read_result(args.compare, "harvest") if args.compare else None
        try:
            cache, record = harvest(args.corpus, args.cache_root, windows=args.windows, lm_dtype=args.lm_dtype,
                                    batch_size=args.batch_size, progress=not args.no_progress, split=args.split)
        except (FileNotFoundError, ValueError) as e:
            print(f"aen_lib.results.lmref: {e}", file=sys.stderr)
            return 2
        print(f"{cache.path}: {_describe(record)}")
        if recorded is not None:
            cmp = compare_harvests(recorded, record)
            print("matches the recorded harvest" if cmp["match"] else f"differs from the recorded harvest: {cmp}")
            return 0 if cmp["match"] else 1
    if args.stage == "evaluate":
        cmd = recorded_command(argv if argv is not None else sys.argv[1:])
        try:
            path = evaluate_lm_set(args.folder, work_root=args.work, corpus=args.corpus, cache_root=args.cache_root,
                                   max_windows=args.max_windows, batch_size=args.batch_size,
                                   progress=not args.no_progress, command=cmd)
        except (FileNotFoundError, ValueError) as e:
            print(f"aen_lib.results.lmref: {e}", file=sys.stderr)
            return 2
        print(f"evaluation written to {path}" if path else f"{args.folder}/{EVALUATION_NAME} exists; nothing was "
              "overwritten")
        return 0
    if args.stage == "features":
        cmd = recorded_command(argv if argv is not None else sys.argv[1:])
        try:
            path = latent_samples(args.folder, work_root=args.work, corpus=args.corpus, cache_root=args.cache_root,
                                  n=args.latents, seed=args.seed, command=cmd)
        except (FileNotFoundError, ValueError) as e:
            print(f"aen_lib.results.lmref: {e}", file=sys.stderr)
            return 2
        print(f"features written to {path}" if path else f"{args.folder}/{FEATURES_NAME} exists; nothing was "
              "overwritten")
        return 0
    if args.stage == "train":
        cmd = recorded_command(argv if argv is not None else sys.argv[1:])
        try:
            out = run_lm_set(args.study, args.seed, cache_root=args.cache_root, corpus=args.corpus, out_root=args.out,
                             work_root=args.work, steps=args.steps, progress=not args.no_progress, command=cmd)
        except (FileNotFoundError, ValueError) as e:
            print(f"aen_lib.results.lmref: {e}", file=sys.stderr)
            return 2
        print(f"records written to {out}" if out else f"{lm_set_name(args.study, args.seed, args.steps)} exists "
              f"under {args.out}; nothing was overwritten")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
