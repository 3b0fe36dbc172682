"""After training, a language-model set on the held-out split (book: the language-model chapters): firing counts,
dead % silent and out of reach, the spliced evaluation (:func:`evaluate_lm_set`), and a sample of alive latents
with their contexts and logit tokens (:func:`latent_samples`). The command line is :mod:`aen_lib.results.lmref`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data.activation_cache import ActivationCache, activation_cache_dir
from ..store import CHECKOUT
from .lm_harvest import (DEFAULT_CACHE_ROOT, DEFAULT_CORPUS, LM_WINDOW, corpus_documents, harvest_config,
                         load_harvest_lm)
from .lm_sets import LM_STUDIES, _set_mean
from .records import read_result, write_result

EVAL_WINDOWS = 512
"""Held-out windows of the spliced evaluation (65,536 tokens): on one CPU core the LM's full forward passes (clean,
mean- and zero-ablated, one per SAE) take about a minute per 10,000 tokens each."""
EVALUATION_NAME = "evaluation.json"


class _CentredSAE(torch.nn.Module):
    """An SAE trained on mean-centred rows, seen from outside: ``x -> SAE(x - mean) + mean`` (and its codes)."""

    def __init__(self, sae: Any, mean: Tensor) -> None:
        super().__init__()
        self.sae = sae
        self.register_buffer("mean", mean.float())

    @property
    def W_enc(self) -> Tensor:
        return self.sae.W_enc

    def encode(self, x: Tensor) -> Tensor:
        return self.sae.encode(x - self.mean.to(x.dtype))

    def pre_activation(self, x: Tensor) -> Tensor:
        return self.sae.pre_activation(x - self.mean.to(x.dtype))

    def forward(self, x: Tensor) -> Tensor:
        out = self.sae(x - self.mean.to(x.dtype))
        return out.x_hat + self.mean.to(x.dtype)


def trained_saes(work: str | os.PathLike[str]) -> dict[str, Any]:
    """The trained SAEs of a finished set, by record name (``<variant id>.json``), from its work folder's finished
    chunks (``sweep/chunk_*/done.pt``). Raises ``FileNotFoundError`` when the folder holds no finished chunk (the
    checkpoints live outside the repository: a set trained on another machine must be trained again here)."""
    from ..sae.config import SAEConfig
    from ..sae.model import SAE
    from .records import variant_id
    from ..training.train import load_checkpoint

    done = sorted(Path(work).glob("sweep/chunk_*/done.pt"))
    if not done:
        raise FileNotFoundError(f"no finished chunk under {work}/sweep: the trained SAEs are not on this machine")
    out = {}
    for path in done:
        state = load_checkpoint(path)
        cfgs = [SAEConfig.from_dict(c) for c in state["sae_cfgs"]]
        stack = SAE(cfgs)
        stack.load_state_dict(state["sae"])
        for j, cfg in enumerate(cfgs):
            out[f"{variant_id(cfg)}.json"] = stack.member(j).eval()
    return out


def heldout_windows(corpus: str | os.PathLike[str], tokenizer: Any, cache: ActivationCache,
                    max_windows: int) -> Tensor:
    """``[n, 128]`` token ids of the first ``max_windows`` held-out windows, packed as the harvest packed them, and
    checked against the held-out cache's stored tokens (positions 1..127), so the spliced evaluation scores the
    very tokens the held-out metrics use."""
    from ..data.text import iter_windows

    wins = []
    for w in iter_windows(corpus_documents(corpus, "heldout"), tokenizer, LM_WINDOW, eos_token_id=tokenizer.eos_token_id):
        wins.append(w)
        if len(wins) >= max_windows:
            break
    ids = torch.stack(wins)
    stored = cache.load_shard(0)
    for i in range(min(ids.shape[0], int(stored.window_index.max()) + 1)):
        rows = stored.window_index == i
        if not torch.equal(stored.token_ids[rows], ids[i, stored.position[rows]]):
            raise ValueError(f"held-out window {i} packs differently from the held-out cache at {cache.path}: the "
                             "corpus or the tokenizer changed since the harvest; harvest the held-out split again")
    return ids


def _lm_set(folder: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """A committed set's folder and provenance; ``ValueError`` when it is not a language-model set."""
    folder = Path(folder)
    prov = read_result(folder / "provenance.json", "provenance")
    if prov.get("kind") != "language_model":
        raise ValueError(f"{folder} is not a language-model set (its provenance says kind={prov.get('kind')!r})")
    return folder, prov


def evaluate_lm_set(folder: str | os.PathLike[str], *, work_root: str | os.PathLike[str] | None = None,
                    corpus: str | os.PathLike[str] = DEFAULT_CORPUS,
                    cache_root: str | os.PathLike[str] = DEFAULT_CACHE_ROOT, max_windows: int = EVAL_WINDOWS,
                    batch_size: int = 8, progress: bool = True, command: str = "", lm: Any = None) -> Path | None:
    """Evaluate a finished language-model set's SAEs after training and write ``evaluation.json`` beside its records
    (returns its path, or None when it exists: nothing is overwritten). Per SAE, on the held-out split:

    * every latent's firing count over the held-out rows, their density histogram, and the dead % by the
      definitions a training window cannot give: silent on every held-out row, and out of reach (pre-activation
      ``<= 0`` on every held-out row);
    * the spliced evaluation (:func:`aen_lib.evaluation.splice.spliced_evaluation_many`) on the first ``max_windows``
      held-out windows: clean, patched, mean- and zero-ablated CE, CE recovered against both, KL.

    The trained SAEs come from the set's work folder (:func:`trained_saes`); the file records the commit, command,
    seconds, threads and the LM's dtype. ``lm`` = ``(model, tokenizer, layer)`` replaces the registry's model (tests)."""
    import time

    from ..evaluation.splice import spliced_evaluation_many
    from ..evaluation.features import firing_statistics
    from ..evaluation.metrics import DEAD_THRESHOLD, firing_density_histogram, latent_reach
    from .ledger import DEFAULT_WORK, _git_state

    folder, prov = _lm_set(folder)
    target = folder / EVALUATION_NAME
    if target.exists():
        return None
    if isinstance(max_windows, bool) or not isinstance(max_windows, int) or max_windows < 1:
        raise ValueError(f"max_windows must be an int >= 1, got {max_windows!r}")
    t0 = time.perf_counter()
    spec = LM_STUDIES.get(prov["study"])
    inputs = prov["protocol"].get("inputs", "raw")
    work = (Path(work_root) if work_root else DEFAULT_WORK) / prov["set"]
    saes = trained_saes(work)
    missing = sorted(p.name for p in folder.glob("*-*.json") if not p.name.startswith("harvest_") and p.name not in saes)
    if missing:
        raise ValueError(f"the work folder {work} has no trained SAE for {missing}: it holds another set")
    saes = {k: v for k, v in saes.items() if (folder / k).exists()}
    lm_model, tok, layer = lm if lm is not None else load_harvest_lm()
    hcfg = harvest_config(lm_model, tok, corpus, layer=layer, split="heldout")
    hold_dir = activation_cache_dir(hcfg, Path(cache_root).expanduser())
    if hcfg.to_dict() != prov["harvest"]["heldout"]["config"]:
        raise ValueError(f"the held-out cache this machine would use ({hold_dir}) has another key than the set's "
                         "harvest record: the model, tokenizer or corpus differ")
    cache = ActivationCache(hold_dir)
    x = cache.load().acts.float()
    if inputs == "centred":
        mean = _set_mean(work, ActivationCache(activation_cache_dir(
            harvest_config(lm_model, tok, corpus, layer=layer, split="train"), Path(cache_root).expanduser())),
            prov["protocol"]["train_windows"])
        saes = {k: _CentredSAE(v, mean) for k, v in saes.items()}
    per: dict[str, Any] = {}
    for name, sae in saes.items():
        stats = firing_statistics(sae, x)
        reach = latent_reach(sae, x, thresh=DEAD_THRESHOLD)
        per[name] = {"heldout_tokens": stats.n_tokens, "firing_counts": [int(c) for c in stats.counts.tolist()],
                     "density_histogram": firing_density_histogram(stats.counts, stats.n_tokens),
                     "dead_silent_heldout_pct": reach["eval_dead_pct"],
                     "dead_out_of_reach_heldout_pct": reach["eval_negative_pct"]}
    ids = heldout_windows(corpus, tok, cache, max_windows)
    spliced = spliced_evaluation_many(lm_model, saes, ids, layer, batch_size=batch_size, progress=progress)
    for name, r in spliced.items():
        per[name]["spliced"] = r.to_dict()
    commit, dirty = _git_state(CHECKOUT)
    calls = {"commit": commit, "uncommitted": dirty, "command": command, "seconds": round(time.perf_counter() - t0, 1),
             "threads": torch.get_num_threads(),
             "lm_dtype": str(next(lm_model.parameters()).dtype).removeprefix("torch."), "windows": int(ids.shape[0]),
             "tokens_scored": int(ids.shape[0] * (LM_WINDOW - 2)), "study_known": spec is not None}
    write_result(target, "evaluation", {"set": prov["set"], "provenance": calls, "saes": per})
    return target


FEATURES_NAME = "features.json"
SAMPLED_LATENTS = 12
"""Alive latents sampled per SAE for the set's features file."""
DENSE_SHARE = 0.1
"""A latent firing on more than this share of held-out tokens counts as dense (SAEBench's ``freq_over_10_percent``)."""


def latent_samples(folder: str | os.PathLike[str], *, work_root: str | os.PathLike[str] | None = None,
                   corpus: str | os.PathLike[str] = DEFAULT_CORPUS,
                   cache_root: str | os.PathLike[str] = DEFAULT_CACHE_ROOT, n: int = SAMPLED_LATENTS,
                   contexts: int = 6, logit_tokens: int = 8, seed: int = 0, lm: Any = None,
                   command: str = "") -> Path | None:
    """What a finished set's latents respond to, as small text beside its records (``features.json``; returns its
    path, or None when it exists: nothing is overwritten). Per SAE: ``n`` latents drawn at random (``seed``) among
    those that fire on the held-out tokens, each with its held-out firing count, its ``contexts`` strongest held-out
    contexts (text, the firing token in ``[[...]]``) and the ``logit_tokens`` tokens its decoder atom promotes and
    suppresses most through the unembedding (:func:`aen_lib.evaluation.features.logit_effect`); and the counts of dense latents
    (firing on more than :data:`DENSE_SHARE` of held-out tokens) and of silent ones."""
    from ..evaluation.features import (feature_contexts, firing_statistics, logit_effect, render_contexts_text,
                           top_activations, top_logit_tokens, unembedding_directions)
    from .ledger import DEFAULT_WORK, _git_state

    folder, prov = _lm_set(folder)
    target = folder / FEATURES_NAME
    if target.exists():
        return None
    for name, value, low in (("n", n, 1), ("contexts", contexts, 1), ("logit_tokens", logit_tokens, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    work = (Path(work_root) if work_root else DEFAULT_WORK) / prov["set"]
    saes = {k: v for k, v in trained_saes(work).items() if (folder / k).exists()}
    lm_model, tok, layer = lm if lm is not None else load_harvest_lm()
    hcfg = harvest_config(lm_model, tok, corpus, layer=layer, split="heldout")
    if hcfg.to_dict() != prov["harvest"]["heldout"]["config"]:
        raise ValueError("the held-out cache this machine would use has another key than the set's harvest record: "
                         "the model, tokenizer or corpus differ")
    data = ActivationCache(activation_cache_dir(hcfg, Path(cache_root).expanduser())).load()
    if prov["protocol"].get("inputs", "raw") == "centred":
        mean = _set_mean(work, ActivationCache(activation_cache_dir(
            harvest_config(lm_model, tok, corpus, layer=layer, split="train"), Path(cache_root).expanduser())),
            prov["protocol"]["train_windows"])
        saes = {k: _CentredSAE(v, mean) for k, v in saes.items()}
    x = data.acts.float()
    unembed = unembedding_directions(lm_model)
    gen = torch.Generator().manual_seed(seed)
    per: dict[str, Any] = {}
    for name, sae in saes.items():
        stats = firing_statistics(sae, x)
        alive = torch.nonzero(stats.counts > 0).flatten()
        pick = alive[torch.randperm(alive.numel(), generator=gen)[:n]].sort().values
        inner = sae.sae if isinstance(sae, _CentredSAE) else sae
        effects = logit_effect(inner.W_dec[pick].detach(), unembed)
        logits = top_logit_tokens(effects, tok, k=logit_tokens)
        vals, rows = top_activations(sae, x, pick, k=contexts)
        latents = []
        for j, f in enumerate(pick.tolist()):
            ctx = feature_contexts(sae, data, f, rows[j], tok, values=vals[j])
            latents.append({"latent": f, "heldout_count": int(stats.counts[f]),
                            "max_activation": float(stats.max[f]),
                            "contexts": render_contexts_text(ctx).splitlines(),
                            "promotes": [[t, round(v, 4)] for t, v in logits[j]["up"]],
                            "suppresses": [[t, round(v, 4)] for t, v in logits[j]["down"]]})
        per[name] = {"alive": int(alive.numel()), "silent": int((stats.counts == 0).sum()),
                     "dense": int((stats.counts > DENSE_SHARE * stats.n_tokens).sum()),
                     "heldout_tokens": stats.n_tokens, "sampled": latents}
    commit, dirty = _git_state(CHECKOUT)
    body = {"set": prov["set"],
            "provenance": {"commit": commit, "uncommitted": dirty, "command": command, "seed": seed,
                           "dense_share": DENSE_SHARE},
            "saes": per}
    write_result(target, "features", body)
    return target
