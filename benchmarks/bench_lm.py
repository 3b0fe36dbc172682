"""Benchmark: activation harvesting with an early exit vs a full forward, spliced-evaluation throughput, and the
harvesting pipeline end to end, stage by stage.

``--mode forward`` prints, in one run on one machine (tokens/s through the LM, best of ``--repeats``):
  * harvesting block L with the early exit (blocks L+1.. and the unembedding skipped, book: paper facts, language-model protocols pipeline);
  * harvesting block L with a full forward pass (every block and the unembedding run, as with
    ``output_hidden_states=True``);
  * the ratio of the two, and the ideal ratio ``(n_layers + head) / (L + 1)`` ignoring the unembedding;
  * spliced evaluation (clean + SAE-patched + mean-ablated passes, book: paper facts, language-model protocols) with an identity SAE;
  * with ``--dtype bfloat16`` or ``float16``: the float32 early-exit rate in the same run, the speed-up over it, and
    how far the low-precision harvest is from float32 (relative Frobenius difference and per-token cosine of the
    SAE's per-token-normalised inputs, one LM batch).

``--mode pipeline`` times what the LM chapters run to fill an activation cache, from text to checksummed shards on
disk: ``write_activation_cache(dir, lm, iter_windows(iter_documents(texts), tokenizer, ...), CacheConfig.for_lm(...))``,
end to end (tokens/s of LM tokens), and each of its stages alone on the same documents (best of ``--repeats``):
  read       the documents out of the ``datasets`` table (:func:`aen_lib.data.text.iter_documents`);
  tokenise   the tokenizer on those documents, in the chunks of 64 that :func:`aen_lib.data.text.iter_windows` uses;
  pack       :func:`aen_lib.data.text.pack_windows` on the already tokenised documents (EOS appended, cut into windows);
  forward    :func:`aen_lib.data.harvest.block_output` to the hook, with the early exit, in LM batches;
  normalise  dropping position 0 and ``normalize_per_token`` on the hooked rows (float32);
  fingerprint the LM identity the cache records (dtype, weight and tokenizer fingerprints), once per call;
  write      the shard as the cache writes it: window hashes, safetensors serialisation, SHA-256, fsync'd atomic
             write, manifest.
The difference between the end-to-end time and the sum of the stages is printed as "other" (Python glue, the
boolean row selection, copies). ``--mode all`` (the default) runs both.

The default model is a random-init Pythia-70M-shaped GPT-NeoX (d 512, 6 blocks, vocab 50,304) hooked at block 3 like
the paper, so nothing is downloaded; ``--mode forward`` feeds it random tokens, ``--mode pipeline`` the offline text
corpus (:func:`aen_lib.data.text.load_text_dataset`) through a byte-level BPE tokenizer of ``--vocab`` tokens trained on
that corpus at start-up (untimed; a stand-in for Pythia's tokenizer, which needs the Hub). ``--model smollm2-135m``
uses the offline SmolLM2 and its own tokenizer; ``--model`` also takes any local folder or hub id. The corpus and the
caches are written under ``--cache-dir`` (default: a temporary folder, removed at the end).

Usage:  python benchmarks/bench_lm.py [--model tiny|smollm2-135m|PATH] [--mode all|forward|pipeline] [--layer L]
                                      [--windows 32] [--batch-size 8] [--window 128] [--repeats 3] [--device cpu]
                                      [--dtype float32] [--threads N] [--cache-dir DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from aen_lib.data.harvest import block_output, harvest_activations, normalize_per_token
from aen_lib.evaluation.splice import spliced_evaluation
from aen_lib.data.lm import d_model, load_lm, lookup_model, num_layers


def pythia70m_shaped(device: str, dtype: torch.dtype) -> nn.Module:
    """Random-init GPT-NeoX with Pythia-70M's shape (book: paper facts, language-model protocols)."""
    from transformers import AutoModelForCausalLM, GPTNeoXConfig

    cfg = GPTNeoXConfig(vocab_size=50_304, hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
                        intermediate_size=2048, max_position_embeddings=2048, rotary_pct=0.25,
                        use_parallel_residual=True, tie_word_embeddings=False)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, dtype=dtype).to(device).eval().requires_grad_(False)


def windows_for(model: nn.Module, tokenizer, n: int, window: int, name: str) -> torch.Tensor:
    if tokenizer is None:
        g = torch.Generator().manual_seed(0)
        return torch.randint(0, model.config.vocab_size, (n, window), generator=g)
    from aen_lib.data.lm import document_separator_id
    from aen_lib.data.text import DocRange, iter_documents, load_text_dataset, pack_windows

    ds = load_text_dataset("offline")
    return pack_windows(iter_documents(ds, DocRange(0)), tokenizer, window, max_windows=n,
                        eos_token_id=document_separator_id(tokenizer, name))


def best_rate(fn, n_tokens: int, repeats: int) -> float:
    return n_tokens / best_seconds(fn, repeats)


def best_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Fastest of ``repeats`` calls of ``fn``, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# --------------------------------------------------------------------------------------------------------------
# The harvesting pipeline, end to end and stage by stage
# --------------------------------------------------------------------------------------------------------------


def corpus_bpe_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on ``texts`` with ``<|endoftext|>`` as EOS (the tiny model's stand-in)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>")


class ReplayTokenizer:
    """Hands back token ids computed earlier, chunk by chunk, so that packing is timed without the tokenizer."""

    def __init__(self, ids: list[list[int]], eos_token_id: int) -> None:
        self.ids, self.eos_token_id, self.pos = ids, eos_token_id, 0

    def __call__(self, texts: list[str], add_special_tokens: bool = False) -> dict[str, list[list[int]]]:
        out = self.ids[self.pos:self.pos + len(texts)]
        self.pos += len(texts)
        return {"input_ids": out}


def pipeline(model: nn.Module, tokenizer: Any, texts: Any, name: str, layer: int, *, n_windows: int, window: int,
             batch_size: int, repeats: int, root: Path) -> dict[str, Any]:
    """Tokens/s of the cache-filling pipeline end to end and of each stage alone (see the module docstring)."""
    from safetensors.torch import save

    from aen_lib.data import activation_cache as ac
    from aen_lib.data.activation_cache import CacheConfig, window_hash, write_activation_cache
    from aen_lib.data.lm import document_separator_id
    from aen_lib.data.text import DocRange, iter_documents, iter_windows, pack_windows

    eos = document_separator_id(tokenizer, name)
    chunk = 64  # iter_windows' tokenize_batch
    need = n_windows * window
    cfg = CacheConfig.for_lm(model, tokenizer, model=name, layer=layer, window=window, dataset="offline")
    drop = cfg.drop_first
    n_tok = n_windows * window

    # which documents the pipeline reads: whole chunks of 64, until the windows are full (as iter_windows reads them)
    docs: list[str] = []
    ids: list[list[int]] = []
    have = 0
    for text in iter_documents(texts, DocRange(0)):
        docs.append(text)
        if len(docs) % chunk == 0:
            out = tokenizer(docs[-chunk:], add_special_tokens=False)["input_ids"]
            ids += out
            have += sum(len(o) + 1 for o in out)
            if have >= need:
                break
    else:
        raise ValueError(f"the corpus holds fewer than {need} tokens; ask for fewer --windows")
    n_docs = len(docs)

    def read() -> None:
        list(islice(iter_documents(texts, DocRange(0)), n_docs))

    def tokenise() -> None:
        for i in range(0, n_docs, chunk):
            tokenizer(docs[i:i + chunk], add_special_tokens=False)

    windows = pack_windows(docs, ReplayTokenizer(ids, eos), window, max_windows=n_windows, eos_token_id=eos)
    assert windows.shape == (n_windows, window)

    def pack() -> None:
        pack_windows(docs, ReplayTokenizer(ids, eos), window, max_windows=n_windows, eos_token_id=eos)

    lm_device = next(model.parameters()).device
    batches = [windows[i:i + batch_size] for i in range(0, n_windows, batch_size)]
    resid = [block_output(model, b.to(lm_device), layer) for b in batches]  # warm-up, and the rows to normalise

    def forward() -> None:
        for b in batches:
            block_output(model, b.to(lm_device), layer)

    def normalise() -> None:
        for r in resid:
            normalize_per_token(r[:, drop:].float().reshape(-1, r.shape[-1]), cfg.eps)

    acts = harvest_activations(model, windows, layer, batch_size=batch_size, drop_first=drop, device="cpu",
                               progress=False)
    shard_dir = root / "write_stage"
    shard_dir.mkdir(parents=True, exist_ok=True)

    def fingerprint() -> None:
        ac.lm_identity(model, tokenizer)

    lm = ac.lm_identity(model, tokenizer)

    def write() -> None:  # what write_activation_cache's flush does for one shard
        tensors = {k: v.contiguous().cpu() for k, v in acts.to_tensors().items()}
        tensors["window_hash"] = torch.tensor([window_hash(w) for w in windows], dtype=torch.int64)
        data = save(tensors)
        ac._atomic_write(shard_dir / "shard_00000.safetensors", data)
        shard = {"file": "shard_00000.safetensors", "n_rows": len(acts), "windows": [0, n_windows],
                 "sha256": ac._sha256(data)}
        ac._write_manifest(shard_dir, cfg, [shard], n_windows, False, lm)

    runs = iter(range(10**6))

    def end_to_end() -> None:
        stream = iter_windows(iter_documents(texts, DocRange(0)), tokenizer, window, eos_token_id=eos)
        cache = write_activation_cache(root / f"e2e_{next(runs)}", model, stream, cfg, max_windows=n_windows,
                                       batch_size=batch_size, progress=False)
        assert cache.n_tokens == len(acts), (cache.n_tokens, len(acts))

    stages = {"read": read, "tokenise": tokenise, "pack": pack, "forward": forward, "normalise": normalise,
              "fingerprint": fingerprint, "write": write}
    seconds = {k: best_seconds(fn, repeats) for k, fn in stages.items()}
    e2e = best_seconds(end_to_end, repeats)
    other = e2e - sum(seconds.values())
    return {"tokens": n_tok, "rows": len(acts), "windows": n_windows, "window": window, "documents": n_docs,
            "lm_batch": batch_size, "end_to_end_s": e2e, "end_to_end_tok_s": n_tok / e2e,
            "stages_s": seconds, "stages_tok_s": {k: n_tok / v for k, v in seconds.items()},
            "stages_share": {k: v / e2e for k, v in seconds.items()}, "other_s": other, "other_share": other / e2e}


def print_pipeline(p: dict[str, Any]) -> None:
    print(f"\npipeline: {p['documents']} documents -> {p['windows']} windows of {p['window']} "
          f"({p['tokens']} tokens, {p['rows']} rows), LM batch {p['lm_batch']}")
    print(f"  {'end to end':<12} {p['end_to_end_s'] * 1e3:9.1f} ms {p['end_to_end_tok_s']:11.0f} tok/s")
    for k, s in p["stages_s"].items():
        print(f"  {k:<12} {s * 1e3:9.1f} ms {p['stages_tok_s'][k]:11.0f} tok/s {p['stages_share'][k]:7.1%}")
    print(f"  {'other':<12} {p['other_s'] * 1e3:9.1f} ms {'':>11}       {p['other_share']:7.1%}")


def dtype_difference(args: argparse.Namespace, model: nn.Module, layer: int, ids: torch.Tensor) -> dict[str, float]:
    """How far a low-precision harvest is from float32: the same windows through a float32 copy of the model, both
    normalised per token as the SAE sees them; also the float32 early-exit rate, measured in this run."""
    if args.model == "tiny":
        ref = pythia70m_shaped(args.device, torch.float32)
        ref.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    else:
        ref, _ = load_lm(args.model, dtype=torch.float32, device=args.device)
    common = dict(batch_size=args.batch_size, progress=False)
    f32_rate = best_rate(lambda: harvest_activations(ref, ids, layer, early_exit=True, **common), ids.numel(),
                         args.repeats)
    a = normalize_per_token(block_output(ref, ids[: args.batch_size], layer)[:, 1:].float())[0].flatten(0, 1)
    b = normalize_per_token(block_output(model, ids[: args.batch_size], layer)[:, 1:].float())[0].flatten(0, 1)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    return {"rel_frobenius": float((a - b).norm() / a.norm()), "cosine_min": float(cos.min()),
            "cosine_median": float(cos.median()), "float32_tok_s": f32_rate, "rows": int(a.shape[0])}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny", help="'tiny' (random Pythia-70M shape), 'smollm2-135m', path or hub id")
    ap.add_argument("--mode", default="all", choices=["all", "forward", "pipeline"])
    ap.add_argument("--layer", type=int, default=None, help="hook block (default: the registry's / 3 for tiny)")
    ap.add_argument("--windows", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--vocab", type=int, default=8192, help="BPE vocabulary of the tiny model's tokenizer (pipeline)")
    ap.add_argument("--cache-dir", default=None, help="where the corpus and the caches go (default: a temporary folder)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)

    if args.model == "tiny":
        model, tok = pythia70m_shaped(args.device, dtype), None
        layer = 3 if args.layer is None else args.layer
    else:
        model, tok = load_lm(args.model, dtype=dtype, device=args.device)
        entry = lookup_model(args.model)
        layer = args.layer if args.layer is not None else (entry.hook_layer if entry else num_layers(model) // 2)
    L = num_layers(model)
    res: dict[str, Any] = {
        "model": args.model, "layer": layer, "n_layers": L, "d_model": d_model(model), "dtype": args.dtype,
        "device": args.device, "threads": torch.get_num_threads(), "batch": [args.batch_size, args.window],
    }
    print(f"model {args.model}: {L} blocks, d {res['d_model']}, hook block {layer}, batch {args.batch_size}, "
          f"{args.dtype} on {args.device}, {res['threads']} threads, best of {args.repeats}")

    if args.mode in ("all", "forward"):
        ids = windows_for(model, tok, args.windows, args.window, args.model)
        n_tok = ids.numel()
        common = dict(batch_size=args.batch_size, progress=False)
        harvest_activations(model, ids[: args.batch_size], layer, **common)  # warm-up (first-call overheads)
        early = best_rate(lambda: harvest_activations(model, ids, layer, early_exit=True, **common), n_tok,
                          args.repeats)
        full = best_rate(lambda: harvest_activations(model, ids, layer, early_exit=False, **common), n_tok,
                         args.repeats)

        class Identity(nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return x

        spliced = best_rate(lambda: spliced_evaluation(model, Identity(), ids, layer, **common), n_tok, args.repeats)
        res.update({"tokens": n_tok, "harvest_early_exit_tok_s": early, "harvest_full_forward_tok_s": full,
                    "early_exit_speedup": early / full, "ideal_block_ratio": L / (layer + 1),
                    "spliced_eval_tok_s": spliced, "spliced_eval_vs_full_forward": spliced / full})
        print(f"forward: {n_tok} tokens ({args.windows} x {args.window})")
        print(f"  harvest, early exit   : {early:10.0f} tok/s")
        print(f"  harvest, full forward : {full:10.0f} tok/s")
        print(f"  early-exit speed-up   : {early / full:10.2f}x  (blocks only: {L}/{layer + 1} = "
              f"{L / (layer + 1):.2f}x, plus the unembedding)")
        print(f"  spliced evaluation    : {spliced:10.0f} tok/s  ({spliced / full:.2f}x a full forward; "
              "3 passes per batch)")
        if dtype != torch.float32:
            res["vs_float32"] = dtype_difference(args, model, layer, ids)
            d = res["vs_float32"]
            print(f"  against float32       : the SAE's inputs (per-token normalised, position 0 dropped) differ by "
                  f"{d['rel_frobenius']:.2e} relative (Frobenius), per-token cosine min {d['cosine_min']:.5f} / "
                  f"median {d['cosine_median']:.6f}; float32 harvest {d['float32_tok_s']:.0f} tok/s, "
                  f"{args.dtype} {early / d['float32_tok_s']:.2f}x that")
            res["speedup_vs_float32"] = early / d["float32_tok_s"]

    if args.mode in ("all", "pipeline"):
        import datasets

        from aen_lib.data.text import load_text_dataset

        datasets.disable_progress_bars()
        with tempfile.TemporaryDirectory(prefix="bench_lm_") as tmp:
            root = Path(args.cache_dir) if args.cache_dir else Path(tmp)
            texts = load_text_dataset("offline", cache_dir=root)
            if tok is None:
                tok = corpus_bpe_tokenizer([texts[i]["text"] for i in range(min(len(texts), 4000))], args.vocab)
                res["tokenizer"] = f"byte-level BPE, {len(tok)} tokens, trained on the offline corpus"
            else:
                res["tokenizer"] = f"the model's ({len(tok)} tokens)"
            p = pipeline(model, tok, texts, args.model, layer, n_windows=args.windows, window=args.window,
                         batch_size=args.batch_size, repeats=args.repeats, root=root / "bench_lm_caches")
        res["pipeline"] = p
        print(f"tokenizer: {res['tokenizer']}")
        print_pipeline(p)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return res


if __name__ == "__main__":
    main()
