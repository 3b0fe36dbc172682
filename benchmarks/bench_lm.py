"""Benchmark: activation harvesting with an early exit vs a full forward, and spliced-evaluation throughput.

Prints, in one run on one machine (tokens/s through the LM, best of ``--repeats``):
  * harvesting block L with the early exit (blocks L+1.. and the unembedding skipped, book: paper facts, language-model protocols pipeline);
  * harvesting block L with a full forward pass (every block and the unembedding run, as with
    ``output_hidden_states=True``);
  * the ratio of the two, and the ideal ratio ``(n_layers + head) / (L + 1)`` ignoring the unembedding;
  * spliced evaluation (clean + SAE-patched + mean-ablated passes, book: paper facts, language-model protocols) with an identity SAE.

The default model is a random-init Pythia-70M-shaped GPT-NeoX (d 512, 6 blocks, vocab 50,304) on random tokens,
hooked at block 3 like the paper, so nothing is downloaded. ``--model smollm2-135m`` uses the offline SmolLM2 and
the offline text corpus; ``--model`` also takes any local folder or hub id.

Usage:  python benchmarks/bench_lm.py [--model tiny|smollm2-135m|PATH] [--layer L] [--windows 32] [--batch-size 8]
                                      [--window 128] [--repeats 3] [--device cpu] [--dtype float32] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from aen_lib.harvest import harvest_activations
from aen_lib.evaluation import spliced_evaluation
from aen_lib.lm import d_model, load_lm, lookup_model, num_layers


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
    from aen_lib.lm import document_separator_id
    from aen_lib.text import DocRange, iter_documents, load_text_dataset, pack_windows

    ds = load_text_dataset("offline")
    return pack_windows(iter_documents(ds, DocRange(0)), tokenizer, window, max_windows=n,
                        eos_token_id=document_separator_id(tokenizer, name))


def best_rate(fn, n_tokens: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n_tokens / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny", help="'tiny' (random Pythia-70M shape), 'smollm2-135m', path or hub id")
    ap.add_argument("--layer", type=int, default=None, help="hook block (default: the registry's / 3 for tiny)")
    ap.add_argument("--windows", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
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
    ids = windows_for(model, tok, args.windows, args.window, args.model)
    n_tok = ids.numel()
    common = dict(batch_size=args.batch_size, progress=False)

    # warm-up (first-call overheads)
    harvest_activations(model, ids[: args.batch_size], layer, **common)

    early = best_rate(lambda: harvest_activations(model, ids, layer, early_exit=True, **common), n_tok, args.repeats)
    full = best_rate(lambda: harvest_activations(model, ids, layer, early_exit=False, **common), n_tok, args.repeats)

    class Identity(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    spliced = best_rate(lambda: spliced_evaluation(model, Identity(), ids, layer, **common), n_tok, args.repeats)
    L = num_layers(model)
    res = {
        "model": args.model, "layer": layer, "n_layers": L, "d_model": d_model(model), "dtype": args.dtype,
        "device": args.device, "threads": torch.get_num_threads(), "tokens": n_tok,
        "batch": [args.batch_size, args.window],
        "harvest_early_exit_tok_s": early, "harvest_full_forward_tok_s": full,
        "early_exit_speedup": early / full, "ideal_block_ratio": L / (layer + 1),
        "spliced_eval_tok_s": spliced, "spliced_eval_vs_full_forward": spliced / full,
    }
    print(f"model {args.model}: {L} blocks, d {res['d_model']}, hook block {layer}, {n_tok} tokens "
          f"({args.windows} x {args.window}), batch {args.batch_size}, {args.dtype} on {args.device}, "
          f"{res['threads']} threads, best of {args.repeats}")
    print(f"  harvest, early exit   : {early:10.0f} tok/s")
    print(f"  harvest, full forward : {full:10.0f} tok/s")
    print(f"  early-exit speed-up   : {early / full:10.2f}x  (blocks only: {L}/{layer + 1} = {L / (layer + 1):.2f}x, "
          "plus the unembedding)")
    print(f"  spliced evaluation    : {spliced:10.0f} tok/s  ({spliced / full:.2f}x a full forward; 3 passes per batch)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)


if __name__ == "__main__":
    main()
