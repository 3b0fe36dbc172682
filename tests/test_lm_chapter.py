"""aen_lib.book.lm_chapter: chapter 9's SAEs, reused from chapter 8's manifest or trained on the spot, on the tiny
offline LM of lm_fixtures (no downloads)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from aen_lib import SAE, SAEConfig
from aen_lib.book.lm_chapter import lm_chapter_data, lm_chapter_saes
from aen_lib.book.notebook import MissingResultsError, chapter_context, save_json
from aen_lib.sae.io import load_sae, save_sae
from lm_fixtures import D_MODEL, tiny_lm_dirs  # noqa: F401  (pytest fixture used by name)

CH8, CH9 = "08_pythia_reproduction", "09_what_features_are"
LAYER = 1
# chapter 9's fallback sizes; with chapter 8's SAEs reused they must not matter (d_sae differs from chapter 8's)
FALLBACK = dict(val_docs=20, train_start_doc=20, train_windows=3, eval_windows=2, d_sae=8, steps=6, batch_size=32,
                shuffle_buffer=0, aen_l1=0.003, aen_l2=0.0001, aen_beta=0.9, topk_k=2, step_window_fraction=0.5)


@pytest.fixture(scope="module")
def ch8(tmp_path_factory, tiny_lm_dirs):  # noqa: F811
    """Chapter 8's results as its cell 25 writes them: two saved SAEs and saes/manifest.json (activation_store
    'cache'), over activation caches harvested by lm_chapter_data from the tiny llama."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("lm_chapter")
        model, cache_root = str(tiny_lm_dirs["llama"]), root / "cache"
        data = lm_chapter_data(model, layer=LAYER, cache_root=cache_root, val_docs=20, train_start_doc=20,
                               eval_windows=2, train_windows=3, batch_size=64, shuffle_buffer=0)
        out = chapter_context(CH8, root / "results").results
        torch.manual_seed(0)
        saes = {"aen": SAE(SAEConfig(architecture="aen", d_in=D_MODEL, d_sae=16, l1=0.004, l2=0.0001)),
                "topk": SAE(SAEConfig(architecture="topk", d_in=D_MODEL, d_sae=16, k=4))}
        for_ch9 = {}
        for arch, sae in saes.items():
            folder = save_sae(sae, out / "saes" / arch, overwrite=True,
                              metadata={"model_name": model, "hook_layer": LAYER, "normalisation": "per_token_l2"})
            for_ch9[arch] = {"folder": folder.name, "label": sae.cfg.label, "l0": 4.0,
                             "history": [{"step": 10, "l0": 4.0 + len(arch), "dead_pct_window": 1.5}]}
        manifest = {"model": model, "layer": LAYER, "d_model": D_MODEL, "dataset": data.dataset_id, "val_docs": 20,
                    "train_start_doc": 20, "activation_store": "cache", "train_windows": 3,
                    "train_cache": data.train_cache.config.to_dict(), "eval_cache": data.eval_cache.config.to_dict(),
                    "eval_windows": 2, "train": {"steps": 5, "batch_size": 64, "shuffle_buffer": 0, "source_seed": 0,
                                                 "dead_window_steps": 3},
                    "saes": for_ch9}
        save_json(manifest, out / "saes" / "manifest.json")
        yield {"root": root, "model": model, "cache_root": cache_root, "data": data, "saes": saes,
               "manifest": manifest, "path": out / "saes" / "manifest.json"}
    finally:
        torch.set_num_threads(threads)


def _saes(ctx, ch8, **kw):
    args = dict(model=ch8["model"], layer=LAYER, cache_root=ch8["cache_root"], **FALLBACK)
    return lm_chapter_saes(ctx, **{**args, **kw})


def _copy_of_ch8(ch8, root, edit=None):
    """A results root holding a copy of chapter 8's results, its manifest changed by ``edit(manifest)``."""
    shutil.copytree(ch8["path"].parent.parent, root / CH8)
    if edit is not None:
        path = root / CH8 / "saes" / "manifest.json"
        manifest = json.loads(path.read_text())
        edit(manifest)
        path.write_text(json.dumps(manifest))
    return chapter_context(CH9, root)


def _cache_folders(ch8):
    return sorted(p.name for p in (ch8["cache_root"] / "activations").iterdir())


def test_reuse_reads_chapter8s_manifest_and_harvests_nothing(ch8, tmp_path):
    ctx = chapter_context(CH9, ch8["path"].parents[2])
    before = _cache_folders(ch8)
    got = _saes(ctx, ch8, reuse="require")
    assert got.reused and got.note is None and got.manifest == ch8["path"]
    assert _cache_folders(ch8) == before  # the caches chapter 8 recorded, found by their keys
    for arch, sae in ch8["saes"].items():
        assert got.saes[arch].cfg.d_sae == 16  # chapter 8's SAE, not the fallback size
        assert torch.equal(got.saes[arch].W_dec.detach(), sae.W_dec.detach())
        assert got.histories[arch] == ch8["manifest"]["saes"][arch]["history"]
    assert got.source == "chapter 8's SAEs: " + ", ".join(s.cfg.label for s in ch8["saes"].values())
    assert got.train == ch8["manifest"]["train"] and got.train_windows == 3 and got.eval_windows == 2
    assert got.replay == "chapter 8's training stream, batch for batch"
    data = ch8["data"]
    assert torch.equal(got.eval_acts.acts, data.eval_acts.acts)
    assert len(got.train_acts) == data.train_tokens  # the rows of the 3 windows chapter 8 trained on
    assert got.train_cache.path == data.train_cache.path
    assert (got.layer, got.d_model) == (LAYER, D_MODEL)
    assert not (ctx.results / "saes").exists()  # nothing trained, nothing saved
    assert got.summary().splitlines() == [got.source, f"model {ch8['model']} block {LAYER}; training activations "
                                          f"{data.train_tokens:,}, held-out {len(data.eval_acts):,}"]


def test_a_streamed_chapter8_gets_a_sample_of_its_training_documents(ch8, tmp_path):
    def streamed(m):
        m.update(activation_store="stream", train_cache=None, train_windows=None)

    got = _saes(_copy_of_ch8(ch8, tmp_path, streamed), ch8, reuse="require")
    assert got.reused and got.train_windows == FALLBACK["train_windows"]
    assert got.train_cache.config.doc_start == 20 and got.train_cache.n_windows >= FALLBACK["train_windows"]
    assert got.train == {"steps": got.train_cache.n_tokens // FALLBACK["batch_size"],
                         "batch_size": FALLBACK["batch_size"], "shuffle_buffer": 0, "source_seed": 0}
    assert got.replay.endswith("activations of chapter 8's training documents, in order")


def test_a_manifest_that_does_not_fit_trains_two_saes_here_and_says_why(ch8, tmp_path):
    got = _saes(_copy_of_ch8(ch8, tmp_path, lambda m: m.update(layer=2)), ch8, reuse="auto")
    assert not got.reused and got.manifest is None
    assert "layer: chapter 8 has 2, this chapter 1" in got.note and got.summary().startswith("NOTE: ")
    assert got.source.startswith("two SAEs trained in this chapter: ")
    assert got.train == {"steps": 6, "batch_size": 32, "shuffle_buffer": 0, "source_seed": 0}
    ctx = chapter_context(CH9, tmp_path)
    for arch in ("aen", "topk"):
        assert got.saes[arch].cfg.d_sae == FALLBACK["d_sae"] and got.saes[arch].cfg.architecture == arch
        saved, meta = load_sae(ctx.results / "saes" / arch)
        assert torch.equal(saved.W_dec, got.saes[arch].W_dec.detach())
        assert meta["hook_layer"] == LAYER and len(got.histories[arch]) > 0
    assert len(got.eval_acts) > 0 and got.eval_windows == FALLBACK["eval_windows"]
    with pytest.raises(ValueError, match=r"reuse_chapter7='require'.*do not fit: layer: chapter 8 has 2"):
        _saes(ctx, ch8, reuse="require")


def test_never_ignores_a_fitting_manifest_without_a_note(ch8, tmp_path):
    got = _saes(_copy_of_ch8(ch8, tmp_path), ch8, reuse="never", steps=2)
    assert not got.reused and got.note is None and got.train["steps"] == 2


def test_require_without_chapter8_names_where_it_looked_and_what_to_run(ch8, tmp_path):
    with pytest.raises(MissingResultsError) as info:
        _saes(chapter_context(CH9, tmp_path), ch8, reuse="require")
    msg = str(info.value)
    assert "saes/manifest.json" in msg and str(tmp_path / CH8) in msg and f"Run {CH8} first" in msg, msg


@pytest.mark.parametrize("edit,error,words", [
    (lambda m: m["saes"]["topk"].update(folder="gone"), FileNotFoundError, ["topk SAE folder 'gone'", "does not exist"]),
    (lambda m: m.pop("eval_cache"), ValueError, ["lacks ['eval_cache']"]),
    (lambda m: m.pop("saes"), ValueError, ["lacks ['saes']", "not one chapter 8 wrote"]),
    (lambda m: m["eval_cache"].update(doc_stop=999), FileNotFoundError, ["(eval_cache), which is not there",
                                                                         "cache_root chapter 8 ran with"]),
])
def test_a_broken_manifest_names_the_problem_and_the_fix(ch8, tmp_path, edit, error, words):
    ctx = _copy_of_ch8(ch8, tmp_path, edit)
    for reuse in ("auto", "require"):  # a manifest that is there but broken is never skipped silently
        with pytest.raises(error) as info:
            _saes(ctx, ch8, reuse=reuse)
        msg = str(info.value)
        assert str(tmp_path / CH8 / "saes" / "manifest.json") in msg, msg
        assert all(w in msg for w in words) and "reuse_chapter7='never'" in msg, msg


def test_a_cache_root_without_chapter8s_caches_is_named(ch8, tmp_path):
    with pytest.raises(FileNotFoundError, match="give this chapter the cache_root chapter 8 ran with"):
        _saes(chapter_context(CH9, ch8["path"].parents[2]), ch8, reuse="auto", cache_root=tmp_path / "elsewhere")


def test_bad_reuse_value_and_unregistered_model_without_layer(tmp_path):
    ctx = chapter_context(CH9, tmp_path)
    with pytest.raises(ValueError, match=r"'reuse_chapter7' = 'sometimes'"):
        lm_chapter_saes(ctx, reuse="sometimes", model="x", **FALLBACK)
    with pytest.raises(ValueError, match="give the hook block with the parameter 'layer'"):
        lm_chapter_saes(ctx, model="/no/such/model", layer=-1, **FALLBACK)
