"""The language-model reference pipeline (aen_lib.results.lmref): harvest records that a re-harvest can be checked against,
the held-out metrics, and the pilot's 'has the dead % stopped moving' judgement."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from lm_fixtures import pydoc_texts, tiny_lm_dirs, tiny_tokenizer  # noqa: F401  (fixtures)

from aen_lib.sae.config import SAEConfig
from aen_lib.data.corpus import Source, build_corpus
from aen_lib.results.lmref import compare_harvests, dead_curve_settled, harvest, heldout_metrics
from aen_lib.sae.model import SAE


@pytest.fixture
def corpus(tmp_path, tiny_tokenizer):
    docs = pydoc_texts(80)
    (tmp_path / "src.txt").write_text("\n".join(docs))
    src = Source(name="pydoc_part", package="python", kind="stdlib", license="PSF-2.0",
                 files=lambda: [tmp_path / "src.txt"],
                 documents=lambda files: files[0].read_text().split("\n"))
    build_corpus(tmp_path / "corpus", [src], heldout_tokens=500, tokenizer=tiny_tokenizer)
    return tmp_path / "corpus"


@pytest.fixture
def tiny(tiny_lm_dirs, single_thread):
    from aen_lib.data.lm import load_lm

    model, tok = load_lm(tiny_lm_dirs["llama"], dtype=torch.float32, device="cpu")
    return model, tok, 1


from lm_fixtures import single_thread  # noqa: E402,F401


def test_a_reharvest_matches_and_a_resumed_harvest_equals_one_in_one_go(tmp_path, corpus, tiny):
    _, whole = harvest(corpus, tmp_path / "a", lm=tiny, progress=False)
    assert whole["windows"] > 6 and whole["rows"] == whole["windows"] * (128 - 1)
    harvest(corpus, tmp_path / "b", lm=tiny, windows=3, progress=False)  # stopped early, then continued
    cache, resumed = harvest(corpus, tmp_path / "b", lm=tiny, progress=False)
    assert compare_harvests(whole, resumed)["match"]
    assert (cache.path / "harvest_record.json").is_file()
    assert json.loads((cache.path / "harvest_record.json").read_text())["checksum"] == whole["checksum"]
    _, held = harvest(corpus, tmp_path / "a", lm=tiny, split="heldout", progress=False)
    assert held["config"]["dataset"].startswith("aen-corpus:heldout:") and held["checksum"] != whole["checksum"]


def test_a_differing_harvest_reports_its_largest_difference(tmp_path, corpus, tiny):
    _, rec = harvest(corpus, tmp_path / "a", lm=tiny, windows=4, progress=False)
    other = copy.deepcopy(rec)
    other["checksum"] = "0" * 64
    other["probe_rows"][1][5] += 0.25
    other["shard_moments"][0]["sum_sq"] *= 1.01
    cmp = compare_harvests(rec, other)
    assert not cmp["match"] and cmp["same_key"]
    assert cmp["probe_max_abs_diff"] == pytest.approx(0.25, abs=1e-6)
    assert cmp["moment_max_rel_diff"] == pytest.approx(0.01, rel=1e-6)
    assert cmp["first_differing_shard"] == 0 and cmp["identical_windows"] == 0
    assert compare_harvests(rec, {**rec, "checksum": "0" * 64})["first_differing_shard"] is None
    longer = copy.deepcopy(rec)
    longer["windows"] += 1
    assert not compare_harvests(rec, longer)["match"]  # same checksum, other windows: not the same harvest
    # three shards; the same tokens up to the second, where the text moves: its plain sum moves (normalised rows
    # keep the sum of squares), and rounding between CPUs (1e-8 here) does not count as a difference
    three = {**rec, "shard_moments": [{"rows": 127, "sum": 10.0 + i, "sum_sq": 72_000.0, "first_window": 10 * i}
                                      for i in range(3)]}
    shifted = copy.deepcopy(three)
    shifted["checksum"] = "0" * 64
    shifted["shard_moments"][0]["sum"] *= 1 + 1e-8
    for m in shifted["shard_moments"][1:]:
        m["sum"] += 0.05
    cmp = compare_harvests(three, shifted)
    assert cmp["first_differing_shard"] == 1 and cmp["identical_windows"] == 10
    assert cmp["sum_max_rel_diff"] == pytest.approx(0.05 / 11) and cmp["moment_max_rel_diff"] == 0
    for m in three["shard_moments"]:  # a record from before shards named their first window: rows tell it
        del m["first_window"]
    three["config"] = {**three["config"], "window": 128, "drop_first": 1}
    assert compare_harvests(three, shifted)["identical_windows"] == 1
    keyed = copy.deepcopy(rec)
    keyed["config"]["lm_dtype"] = "bfloat16"
    assert compare_harvests(rec, keyed)["key_differences"] == ["lm_dtype"]


def test_heldout_metrics_of_an_sae_with_a_known_answer():
    """Encoder [I, -I], decoder [I; -I]: x_hat = relu(x) - relu(-x) = x, so EV is 1; on inputs with positive
    coordinates only the second half never fires (50% dead) and L0 is the count of non-zero coordinates."""
    sae = SAE(SAEConfig(d_in=4, d_sae=8, l1=0.0))
    eye = torch.eye(4)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.b_enc.zero_()
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_dec.zero_()
    x = torch.rand(300, 4) + 0.1
    x[:100, 3] = 0.0  # a third of the rows have three non-zero coordinates
    m = heldout_metrics(sae, x, batch_size=64)
    assert m["heldout_rows"] == 300
    assert m["heldout_ev"] == pytest.approx(1.0, abs=1e-6)
    assert m["heldout_dead_pct"] == pytest.approx(50.0)
    assert m["heldout_l0"] == pytest.approx((100 * 3 + 200 * 4) / 300)
    x[5, 0] = -1.0  # one negative coordinate wakes latent 4
    assert heldout_metrics(sae, x)["heldout_dead_pct"] == pytest.approx(100 * 3 / 8)


def test_the_pilot_judgement_flips_when_the_dead_curve_still_moves():
    """Logs every 50 steps, a 500-step window: the complete windows end at 500, 1000, ..., 2500; those ending in the
    last quarter (2000, 2500) and the one before them (1500) are compared."""
    def history(dead_at_end):
        return [{"step": s, "dead_window_fill": ((s - 1) % 500 + 1) / 500,
                 "dead_pct": dead_at_end(s) if s % 500 == 0 else 99.0} for s in range(50, 2501, 50)]

    ok = dead_curve_settled(history(lambda s: 13.0 + 0.1 * (s // 500)), 2500)
    assert ok["settled"] and ok["range"] == pytest.approx(0.2) and sorted(ok["windows"]) == [1500, 2000, 2500]
    bad = dead_curve_settled(history(lambda s: 80.0 - s / 50), 2500)
    assert not bad["settled"] and bad["range"] == pytest.approx(20.0) and bad["first"] > bad["last"]
    partial = [h for h in history(lambda s: 13.0) if h["step"] < 1000]  # one complete window only
    with pytest.raises(ValueError, match="fewer than two complete dead windows"):
        dead_curve_settled(partial, 2500)

def test_every_language_model_study_fits_a_few_hours_of_one_core():
    """At about 1.2 s per SAE step (576 x 4,608, batch 4,096, one thread: README, performance), each set must finish
    within five hours, since its checkpoints stay on the machine that trains it."""
    from aen_lib.results.lmref import LM_SAE, LM_STUDIES, LM_TRAIN
    from aen_lib.training.sweep import expand_grid

    for name, study in LM_STUDIES.items():
        members = len(expand_grid(dict(LM_SAE), study.grid, seeds=[0]))
        hours = members * (study.steps or LM_TRAIN["steps"]) * 1.2 / 3600
        assert 0 < hours <= 5.0, (name, members, hours)


def test_the_planned_sets_include_the_second_seed_and_untrained_ones_are_named():
    from aen_lib.results.lmref import LM_STUDIES, lm_planned_sets, lm_untrained

    planned = lm_planned_sets()
    assert ("pilot", 1) in planned and ("aen_matched_2", 1) in planned and ("pilot", 0) in planned
    assert len(planned) == len(set(planned)) and {s for s, _ in planned} == set(LM_STUDIES)

    def prov(study, seed):
        return {"set": f"lm_smollm2_{study}_seed{seed}", "study": study, "protocol": {"train": {"seed": seed}}}

    left = lm_untrained([prov("pilot", 0), prov("aen_matched_2", 0)])
    assert "lm_smollm2_pilot_seed1" in left and "lm_smollm2_aen_matched_2_seed1" in left
    assert "lm_smollm2_pilot_seed0" not in left and len(left) == len(planned) - 2
    # a seed-1 set does not stand in for seed 0
    assert "lm_smollm2_topk_seed0" in lm_untrained([prov("topk", 1)])
    with pytest.raises(ValueError, match="protocol.train.seed"):
        lm_untrained([{"set": "x", "study": "pilot", "protocol": {}}])


def test_the_outlier_twins_of_aen_share_the_matched_aen_config():
    """aen_biasmean and aen_centred differ from the matched AEN only in the input treatment, so each is its twin."""
    from aen_lib.results.lmref import LM_STUDIES

    base = LM_STUDIES["aen_matched_2"]
    for name, b_dec, inputs in (("aen_biasmean", "mean", "raw"), ("aen_centred", "zero", "centred")):
        study = LM_STUDIES[name]
        assert study.grid == base.grid and study.steps == base.steps
        assert (study.b_dec_init, study.inputs) == (b_dec, inputs)
    assert LM_STUDIES["topk_biasmean"].grid == LM_STUDIES["pilot"].grid == LM_STUDIES["topk_centred"].grid


def test_lm_table_gives_one_row_per_sae_with_its_heldout_numbers_and_settling(tmp_path):
    from aen_lib.results.lmref import lm_table

    folder = tmp_path / "lm_smollm2_pilot_seed0"
    folder.mkdir()
    (folder / "provenance.json").write_text(json.dumps({
        "record_version": 1, "set": folder.name, "kind": "language_model", "wall_seconds": 7200.0,
        "command": "python -m aen_lib.results.lmref train --study pilot", "members": 1,
        "protocol": {"train": {"steps": 2500, "batch_size": 4096}},
        "harvest": {"train": {"config": {"dataset": "aen-corpus:train:a2882c5f6aa9ae70"}}},
        "invocations": [{"cpu": "Some CPU", "device": "cpu"}, {"cpu": "Some CPU", "device": "cpu"}]}))
    rec = {"record_version": 1, "method": "topk", "variant": "topk-abc", "seed": 0, "sae_config": {"k": 32},
           "label": "topk k=32", "final": {"dead_pct_window": 13.94},
           "extra": {"heldout_l0": 31.96, "heldout_ev": 0.7123, "heldout_dead_pct": 20.5,
                     "dead_settled": {"settled": False, "range": 1.75}}}
    (folder / "topk-abc.json").write_text(json.dumps(rec))
    (folder / "harvest_train.json").write_text("{}")  # harvest records are not SAEs
    lines = lm_table([folder]).splitlines()
    assert len(lines) == 3
    assert lines[2] == ("| `lm_smollm2_pilot_seed0` | topk k=32 | 2,500 | 10,240,000 | `a2882c5f` | 32.0 | 0.712 | 20.5 | — | — | 13.9 | "
                        "1.75 points (not settled) | 2 | 2.0 | Some CPU (cpu) |")
    (folder / "evaluation.json").write_text(json.dumps({"record_version": 1, "set": folder.name, "saes": {"topk-abc.json": {
        "dead_out_of_reach_heldout_pct": 4.56, "spliced": {"ce_recovered_mean_ablation": 0.9412}}}}))
    assert lm_table([folder]).splitlines()[2].startswith(
        "| `lm_smollm2_pilot_seed0` | topk k=32 | 2,500 | 10,240,000 | `a2882c5f` | 32.0 | 0.712 | 20.5 | 4.6 | 0.941 | 13.9 |")


def test_recorded_command_drops_machine_folders():
    from aen_lib.results.lmref import recorded_command

    cmd = recorded_command(["train", "--study", "pilot", "--corpus", "/x/corpus", "--cache-root=/y", "--seed", "1",
                            "--work", "/z", "--no-progress"])
    assert cmd == "python -m aen_lib.results.lmref train --study pilot --seed 1 --no-progress"
    from aen_lib.store import CHECKOUT

    cmd = recorded_command(["evaluate", str(CHECKOUT / "reference" / "lm_x_seed0"), "--no-progress"])
    assert cmd == "python -m aen_lib.results.lmref evaluate reference/lm_x_seed0 --no-progress"


def test_a_tiny_set_trains_records_its_final_window_and_evaluates_centred(tmp_path, corpus, tiny, monkeypatch):
    """The whole pipeline on a tiny model: harvest both splits, train a centred study with the bias at the mean, and
    evaluate it after training. The records hold the final window's firing counts (TopK: exactly k per token), the
    window in tokens, the mean's norm; the evaluation's held-out counts agree with the held-out dead % and the
    spliced CE is finite and ordered as a splice must be for an SAE that reconstructs something."""
    from aen_lib.results.lmref import LM_STUDIES, LMStudy, evaluate_lm_set, run_lm_set, training_mean

    model, tok, layer = tiny
    for split in ("train", "heldout"):
        harvest(corpus, tmp_path / "caches", lm=tiny, split=split, progress=False)
    d = model.config.hidden_size
    monkeypatch.setitem(LM_STUDIES, "tiny_centred", LMStudy({"topk": {"k": [3]}}, "test", b_dec_init="mean",
                                                            inputs="centred"))
    kw = dict(cache_root=tmp_path / "caches", corpus=corpus, out_root=tmp_path / "reference", work_root=tmp_path / "work",
              progress=False, train_windows=4, lm=tiny, sae_base=dict(d_in=d, d_sae=4 * d),
              train_overrides=dict(steps=12, batch_size=32, dead_window_steps=5, log_every=5, final_avg_logs=1))
    out = run_lm_set("tiny_centred", 0, **kw)
    assert run_lm_set("tiny_centred", 0, **kw) is None  # a finished set is never overwritten
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["protocol"]["inputs"] == "centred" and prov["protocol"]["b_dec_init"] == "mean"
    assert prov["protocol"]["dead_window_tokens"] == 5 * 32
    assert prov["corpus"] == json.loads((corpus / "manifest.json").read_text())  # the corpus can be rebuilt from it
    (rec_path,) = [p for p in out.glob("topk-*.json")]
    rec = json.loads(rec_path.read_text())
    fw = rec["extra"]["final_window"]
    assert fw["steps"] == 2 and fw["tokens"] == 64  # 12 steps in windows of 5: the last holds 2
    assert sum(fw["firing_counts"]) == 3 * 64 and len(fw["firing_counts"]) == 4 * d
    assert fw["density_histogram"]["never"] + sum(fw["density_histogram"]["latents"]) == 4 * d
    from aen_lib.data.activation_cache import ActivationCache

    (train_dir,) = [p.parent for p in (tmp_path / "caches").rglob("manifest.json")
                    if "train" in json.loads(p.read_text())["config"]["dataset"]]
    rows = ActivationCache(train_dir).load()
    want = rows.acts[rows.window_index < 4].double().mean(0)
    assert torch.allclose(training_mean(ActivationCache(train_dir), 4), want)
    assert prov["protocol"]["training_mean_norm"] == pytest.approx(float(want.norm()))

    path = evaluate_lm_set(out, work_root=tmp_path / "work", corpus=corpus, cache_root=tmp_path / "caches",
                           max_windows=3, batch_size=2, progress=False, lm=tiny)
    assert evaluate_lm_set(out, work_root=tmp_path / "work", corpus=corpus, cache_root=tmp_path / "caches",
                           max_windows=3, progress=False, lm=tiny) is None
    ev = json.loads(path.read_text())
    e = ev["saes"][rec_path.name]
    assert sum(e["firing_counts"]) == 3 * e["heldout_tokens"]  # TopK: k latents per held-out token
    silent = 100.0 * sum(c == 0 for c in e["firing_counts"]) / (4 * d)
    assert e["dead_silent_heldout_pct"] == pytest.approx(silent)
    assert e["dead_silent_heldout_pct"] == pytest.approx(rec["extra"]["heldout_dead_pct"])
    assert e["dead_out_of_reach_heldout_pct"] <= e["dead_silent_heldout_pct"] + 1e-9
    sp = e["spliced"]
    assert sp["n_windows"] == 3 and all(sp[k] == sp[k] for k in ("ce_clean", "ce_patched", "kl"))
    assert sp["kl"] >= 0 and ev["provenance"]["windows"] == 3

    from aen_lib.results.lmref import lm_dead_windows, lm_frame

    frame = lm_frame([out])
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["inputs"] == "centred" and row["k"] == 3 and row["tokens"] == 12 * 32
    assert row["heldout_dead_pct"] == pytest.approx(rec["extra"]["heldout_dead_pct"])
    assert row["ce_patched"] == pytest.approx(sp["ce_patched"]) and row["dead_window_tokens"] == 5 * 32
    full = lm_dead_windows([out])
    logs = lm_dead_windows([out], complete_only=False)
    assert list(full["step"]) == [h["step"] for h in rec["history"] if h["dead_window_fill"] >= 1.0]
    assert len(full) == 2 and len(logs) == len(rec["history"]) == 3 and (full["fill"] == 1.0).all()

    from aen_lib.results.lmref import latent_samples

    fpath = latent_samples(out, work_root=tmp_path / "work", corpus=corpus, cache_root=tmp_path / "caches", n=4,
                           contexts=3, logit_tokens=5, lm=tiny)
    feats = json.loads(fpath.read_text())["saes"][rec_path.name]
    assert feats["silent"] == sum(c == 0 for c in e["firing_counts"]) and feats["alive"] + feats["silent"] == 4 * d
    assert len(feats["sampled"]) == min(4, feats["alive"])
    for lat in feats["sampled"]:
        assert lat["heldout_count"] == e["firing_counts"][lat["latent"]] > 0  # sampled among the alive
        assert 1 <= len(lat["contexts"]) <= 3 and all("[[" in c for c in lat["contexts"])
        assert len(lat["promotes"]) == len(lat["suppresses"]) == 5
        assert lat["promotes"][0][1] >= lat["promotes"][-1][1]
    assert latent_samples(out, work_root=tmp_path / "work", corpus=corpus, cache_root=tmp_path / "caches",
                          lm=tiny) is None  # never overwritten

    from aen_lib.results.reference import check_set

    assert check_set(out)["set"] == out.name  # the records, the evaluation and the features agree
    body = json.loads(path.read_text())
    body["saes"][rec_path.name]["firing_counts"] = body["saes"][rec_path.name]["firing_counts"][:-1]
    path.write_text(json.dumps(body))
    with pytest.raises(ValueError, match="firing counts for"):
        check_set(out)
    body["saes"] = {}
    path.write_text(json.dumps(body))
    with pytest.raises(ValueError, match="lmref evaluate"):
        check_set(out)


def test_lm_figures_draw_every_sae_and_refuse_frames_without_their_columns():
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from aen_lib.book.plotting import l1_bracket_figure, lm_training_figure

    curves = pd.DataFrame([{"label": lab, "method": m, "tokens": s * 4096, "fill": (s % 500) / 500 or 1.0,
                            "dead_pct": d + s / 100, "l0": 32.0, "ev": 0.7}
                           for lab, m, d in (("topk k=32", "topk", 1.0), ("aen", "aen", 0.5))
                           for s in range(50, 2501, 50)])
    fig = lm_training_figure(curves, paper_dead=13.9, paper_tokens=204.8e6)
    dead_ax = fig.axes[0]
    assert len(dead_ax.lines) == 2 * 2 + 1  # per SAE a line and its complete windows; the paper's mark
    assert len(dead_ax.lines[1].get_xdata()) == 5  # five complete 500-step windows
    with pytest.raises(ValueError, match="needs the columns"):
        lm_training_figure(curves.drop(columns=["fill"]))
    frame = pd.DataFrame([{"method": m, "l1": l1, "heldout_l0": l0, "steps": 600}
                          for m, l1, l0 in (("relu_l1", 0.005, 18.8), ("relu_l1", 0.00125, 211.9),
                                            ("elastic_net", 0.005, 80.5), ("topk", 0.0, 32.0))])
    fig = l1_bracket_figure(frame)
    assert len(fig.axes[0].lines) == 3  # two ℓ1 architectures and the target; TopK has no λ1
    with pytest.raises(ValueError, match="no ℓ1 SAE"):
        l1_bracket_figure(frame[frame["l1"] == 0])


def test_density_histogram_figure_draws_one_bar_per_bin_and_sae():
    import matplotlib

    matplotlib.use("Agg")
    from aen_lib.evaluation.metrics import firing_density_histogram
    from aen_lib.book.plotting import density_histogram_figure

    a = firing_density_histogram(torch.tensor([0, 0, 5, 50, 900]), 1000, lowest_decade=-3)
    b = firing_density_histogram(torch.tensor([0, 1, 2, 3, 4]), 1000, lowest_decade=-3)
    fig = density_histogram_figure({"topk": a, "aen": b}, methods={"topk": "topk", "aen": "aen"})
    bars = fig.axes[0].patches
    assert len(bars) == 2 * 4  # never + three decades, for each SAE
    assert bars[0].get_height() == pytest.approx(40.0)  # two of topk's five latents never fired
    with pytest.raises(ValueError, match="same decades"):
        density_histogram_figure({"a": a, "b": firing_density_histogram(torch.tensor([1]), 10, lowest_decade=-2)})


def test_the_paper_window_is_the_token_window_or_a_step_window_of_its_length():
    from aen_lib.results.lm_tables import PAPER_WINDOW_TOKENS, _paper_window_dead

    final = {"dead_pct_window": 41.0, "dead_pct_tokens_window": 37.5}
    assert _paper_window_dead(final, {"dead_window_steps": 500, "batch_size": 4096,
                                      "dead_window_tokens": PAPER_WINDOW_TOKENS}) == 37.5
    assert _paper_window_dead(final, {"dead_window_steps": 1000, "batch_size": 4096, "dead_window_tokens": 0}) == 41.0
    assert _paper_window_dead(final, {"dead_window_steps": 500, "batch_size": 4096, "dead_window_tokens": 0}) is None


def test_lm_sets_figure_marks_calibration_runs_hollow_and_adds_the_paper():
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from aen_lib.book.plotting import lm_sets_figure

    frame = pd.DataFrame([{"method": m, "steps": st, "heldout_l0": l0, "heldout_dead_pct": d, "heldout_ev": ev}
                          for m, st, l0, d, ev in (("topk", 2500, 32.0, 83.5, 0.75), ("relu_l1", 600, 18.8, 43.9, 0.55),
                                                   ("relu_l1", 600, 211.9, 5.7, 0.83))])
    paper = pd.DataFrame([{"method": "topk", "l0": 32.0, "dead_pct": 13.9, "ev": 0.76}])
    fig = lm_sets_figure(frame, full_steps=2500, paper=paper)
    lines = fig.axes[0].lines
    assert len(lines) == 2 + 1 + 1  # TopK filled, ReLU hollow, the paper's point, its legend entry
    assert lines[1].get_markerfacecolor() == "none" and lines[0].get_markerfacecolor() != "none"
    with pytest.raises(ValueError, match="needs the columns"):
        lm_sets_figure(frame.drop(columns=["heldout_ev"]), full_steps=2500)


def _frame_rows():
    import pandas as pd

    base = {"b_dec_init": "zero", "inputs": "raw", "steps": 2500, "dead_pct_paper_window": 10.0,
            "heldout_dead_pct": 40.0, "heldout_ev": 0.6, "shrinkage": 0.7, "w_mean": None, "w_frac_max": None,
            "ema_beta": None}
    rows = [{"method": "topk", "label": "topk k=32", "set": "pilot", "heldout_l0": 32.0},
            {"method": "topk", "label": "topk k=32 mean", "set": "biasmean", "heldout_l0": 32.0, "b_dec_init": "mean"},
            {"method": "aen", "label": "aen 0.0045", "set": "a", "heldout_l0": 26.9, "ema_beta": 0.999},
            {"method": "aen", "label": "aen 0.0041", "set": "b", "heldout_l0": 36.0, "ema_beta": 0.999},
            {"method": "aen", "label": "aen 0.005 short", "set": "bracket", "heldout_l0": 32.1, "steps": 1200,
             "ema_beta": 0.999},
            {"method": "relu_l1", "label": "l1 0.02", "set": "c", "heldout_l0": 0.2}]
    return pd.DataFrame([{**base, **r} for r in rows])


def test_matched_table_picks_the_closest_full_length_sae_per_method_and_treatment():
    from aen_lib.results.lmref import lm_matched_table

    t = lm_matched_table(_frame_rows(), target=32)
    got = {(r.method, r.treatment): (r.label, bool(r.matched)) for r in t.itertuples()}
    # 36 is nearer 32 than 26.9 on a log scale; the 1,200-step run is left out though its L0 is closest
    assert got == {("topk", "b_dec at 0"): ("topk k=32", True), ("topk", "b_dec at the mean"): ("topk k=32 mean", True),
                   ("aen", "b_dec at 0"): ("aen 0.0041", True), ("relu_l1", "b_dec at 0"): ("l1 0.02", False)}
    assert t.loc[t["label"] == "aen 0.0041", "off_pct"].iloc[0] == pytest.approx(12.5)


def test_matched_table_keeps_seeds_betas_and_training_splits_apart():
    import pandas as pd
    from aen_lib.results.lmref import lm_matched_table

    rows = _frame_rows().assign(seed=0, train_split="a2882c5f")
    extra = pd.DataFrame([{**rows.iloc[3].to_dict(), "label": "aen beta paper", "ema_beta": 0.9999, "heldout_l0": 32.0},
                          {**rows.iloc[0].to_dict(), "label": "topk seed 1", "seed": 1, "train_split": "818e8edf"}])
    t = lm_matched_table(pd.concat([rows, extra], ignore_index=True), target=32)
    got = {(r.method, r.treatment, r.beta, r.seed): (r.label, r.train_split) for r in t.itertuples()}
    # the β 0.9999 SAE is nearer 32 but is its own row; seed 1 is its own row and names its training split
    assert got[("aen", "b_dec at 0", "0.999", 0)] == ("aen 0.0041", "a2882c5f")
    assert got[("aen", "b_dec at 0", "0.9999", 0)] == ("aen beta paper", "a2882c5f")
    assert got[("topk", "b_dec at 0", "", 1)] == ("topk seed 1", "818e8edf")
    assert len(got) == len(t) == 6


def test_matched_claim_pairs_seeds_and_judges_the_protocol_beta_only():
    import pandas as pd
    from aen_lib.results.claims import CLAIMS
    from aen_lib.results.lmref import lm_matched_table

    rows = _frame_rows().assign(seed=0)
    rows.loc[rows["label"] == "aen 0.0041", "dead_pct_paper_window"] = 2.0
    seed1 = rows[rows["label"].isin(["topk k=32", "aen 0.0041"])].assign(seed=1)
    both = pd.concat([rows, seed1], ignore_index=True)
    claim = CLAIMS["lm_topk_more_dead_than_aen_at_matched_l0"]
    v = claim(lm_matched_table(both, target=32))
    assert v.holds is True and v.numbers == {"seeds": [0, 1], "topk": [10.0, 10.0], "aen": [2.0, 2.0]}
    assert "training splits" not in v.sentence
    split = lm_matched_table(both.assign(train_split=["a2882c5f"] * len(both)), target=32)
    split.loc[split["method"] == "aen", "train_split"] = "818e8edf"
    assert "different training splits: 818e8edf, a2882c5f" in claim(split).sentence
    # one seed where AEN starves as much as TopK breaks the verdict
    both.loc[(both["seed"] == 1) & (both["method"] == "aen"), "dead_pct_paper_window"] = 30.0
    assert claim(lm_matched_table(both, target=32)).holds is False
    # an AEN at another β does not stand in for the protocol's
    other = rows.copy()
    other.loc[other["method"] == "aen", "ema_beta"] = 0.9999
    assert claim(lm_matched_table(other, target=32)).holds is None


def test_matched_claim_waits_for_a_matched_aen_and_then_judges_it():
    from aen_lib.results.claims import CLAIMS
    from aen_lib.results.lmref import lm_matched_table

    rows = _frame_rows()
    far = lm_matched_table(rows[rows["label"] != "aen 0.0041"], target=32)  # AEN's best is 26.9: 16% low
    v = CLAIMS["lm_topk_more_dead_than_aen_at_matched_l0"](far)
    assert v.holds is None and "26.9" in v.sentence
    rows.loc[rows["label"] == "aen 0.0041", "dead_pct_paper_window"] = 2.0
    v = CLAIMS["lm_topk_more_dead_than_aen_at_matched_l0"](lm_matched_table(rows, target=32))
    assert v.holds is True and v.numbers == {"topk": 10.0, "aen": 2.0}


def test_the_matched_claim_judged_with_the_mean_taken_away_and_the_explanation_it_gives():
    import pandas as pd
    from aen_lib.results.claims import CLAIMS
    from aen_lib.results.claims.language_model import lm_outlier_explanation
    from aen_lib.results.lmref import lm_matched_table

    rows = _frame_rows()
    rows.loc[rows["label"] == "aen 0.0041", "dead_pct_paper_window"] = 2.0
    rows.loc[rows["label"] == "topk k=32 mean", "dead_pct_paper_window"] = 0.1
    topk = rows[rows["method"] == "topk"]
    removal = CLAIMS["lm_mean_removal_cuts_topk_death"](topk.assign(heldout_dead_pct=[40.0, 20.0]))
    claim = CLAIMS["lm_topk_more_dead_than_aen_at_matched_l0"]
    # no AEN with the mean taken away yet: not testable, and the explanation says what is missing
    at_mean = claim(lm_matched_table(rows, target=32), treatment="b_dec at the mean")
    assert removal.holds is True and at_mean.holds is None and "b_dec at the mean" in at_mean.sentence
    text = lm_outlier_explanation(removal, at_mean)
    assert text.startswith("The outlier explanation, for TopK") and "aen_biasmean" in text
    # AEN at the mean with more dead latents than TopK at the mean: the advantage belongs to the mean
    aen_mean = pd.DataFrame([{**rows.iloc[3].to_dict(), "label": "aen 0.0041 mean", "b_dec_init": "mean",
                              "dead_pct_paper_window": 1.5}])
    judged = claim(lm_matched_table(pd.concat([rows, aen_mean], ignore_index=True), target=32),
                   treatment="b_dec at the mean")
    assert judged.holds is False and judged.numbers == {"topk": 0.1, "aen": 1.5}
    assert "belongs to the mean" in lm_outlier_explanation(removal, judged)
    # the other way round: both hold
    aen_mean["dead_pct_paper_window"] = 0.0
    topk_mean_starved = pd.concat([rows, aen_mean], ignore_index=True)
    topk_mean_starved.loc[topk_mean_starved["label"] == "topk k=32 mean", "dead_pct_paper_window"] = 9.0
    both = claim(lm_matched_table(topk_mean_starved, target=32), treatment="b_dec at the mean")
    assert both.holds is True and lm_outlier_explanation(removal, both).startswith("Both")
    # the default still judges the paper's start only, and an unknown treatment is refused
    assert claim(lm_matched_table(rows, target=32)).numbers == {"topk": 10.0, "aen": 2.0}
    with pytest.raises(ValueError, match="treatment must be one of"):
        claim(lm_matched_table(rows, target=32), treatment="mean")
    with pytest.raises(ValueError, match="takes the verdicts"):
        lm_outlier_explanation(at_mean, removal)


def test_sae_names_tell_apart_the_sets_that_repeat_a_config():
    import pandas as pd
    from aen_lib.results.lmref import sae_names

    frame = pd.DataFrame({"label": ["topk k=32"] * 3, "b_dec_init": ["zero", "mean", "zero"],
                          "inputs": ["raw", "raw", "centred"]})
    assert sae_names(frame) == ["topk k=32", "topk k=32 · b_dec at the mean", "topk k=32 · centred rows"]
