"""Results store (aen_lib.results.records): records round trip, matched-L0 selection and Pareto frontiers on hand examples."""

import json

import pandas as pd
import pytest

from aen_lib import SAEConfig
from aen_lib.data.synthetic import SpikedDictionaryConfig, SpikedDictionaryData
from aen_lib.results.records import (
    closest_to_target,
    load_records,
    member_record,
    pareto_frontier,
    records_frame,
    save_record,
    save_sweep,
    variant_id,
)
from aen_lib.training.sweep import train_sweep
from aen_lib.training.train import TrainConfig


def test_variant_id_ignores_seed_only():
    a = SAEConfig(d_in=4, d_sae=8, architecture="aen", l1=1e-3, seed=0)
    assert variant_id(a) == variant_id(a.replace(seed=3))
    assert variant_id(a) != variant_id(a.replace(l1=2e-3))
    assert variant_id(a).startswith("aen-")


def test_sweep_records_round_trip(tmp_path):
    data_cfg = SpikedDictionaryConfig(n=8, m=16, k=2, rho=0.5, seed=0)
    tc = TrainConfig(steps=6, batch_size=8, log_every=2, dead_window_steps=3, progress=False)
    cfgs = [SAEConfig(d_in=8, d_sae=16, architecture="topk", k=2, seed=s) for s in (0, 1)]
    cfgs.append(SAEConfig(d_in=8, d_sae=16, architecture="aen", l1=1e-3, l2=1e-4, warmup_steps=2, seed=0))
    res = train_sweep(cfgs, SpikedDictionaryData(data_cfg), tc)
    paths = save_sweep(res, tmp_path / "rho0.5", train_config=tc, data=data_cfg,
                       extras=[{"f1": 0.5 + i / 10} for i in range(3)])
    assert len(paths) == 3 and all(p.exists() for p in paths)
    recs = load_records(tmp_path)
    assert len(recs) == 3
    by_path = {r["path"]: r for r in recs}
    for p, m in zip(paths, res.members):
        r = by_path[str(p.relative_to(tmp_path))]
        assert SAEConfig.from_dict(r["sae_config"]) == m.cfg
        assert r["final"] == pytest.approx(m.final)
        assert r["history"] == [pytest.approx(h) for h in m.history]
        assert r["train_config"]["steps"] == 6 and r["data"]["rho"] == 0.5
    df = records_frame(recs)
    assert len(df) == 3 and set(df["method"]) == {"topk", "aen"}
    assert sorted(df["f1"]) == pytest.approx([0.5, 0.6, 0.7])
    assert (df["data_rho"] == 0.5).all() and "dead_pct" in df and "ev" in df
    # the two TopK seeds share a variant, the AEN member has its own
    assert df.groupby("variant")["seed"].nunique().sort_values().tolist() == [1, 2]


def test_bad_records_raise(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_records(tmp_path / "missing")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_records(tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps({"schema": 99}))
    with pytest.raises(ValueError, match="record_version 99"):
        load_records(tmp_path)
    with pytest.raises(TypeError, match="SAEConfig"):
        member_record({"d_in": 2}, {"l0": 1.0})
    rec = member_record(SAEConfig(d_in=2, d_sae=4), {"l0": 1.0})
    with pytest.raises(ValueError, match="plain file stem"):
        save_record(rec, tmp_path, name="../x")
    with pytest.raises(ValueError, match="no records"):
        records_frame([])


def _runs(rows):
    return pd.DataFrame(rows, columns=["method", "variant", "seed", "l0", "dead_pct", "ev"])


def test_closest_to_target_uses_the_seed_average():
    df = _runs([
        # variant a1: one seed lands at 15.5 (the single run closest to 16), but the seed mean is 11.75
        ("aen", "a1", 0, 15.5, 2.0, 0.60), ("aen", "a1", 1, 8.0, 4.0, 0.50),
        # variant a2: no seed is within 3 of 16, but the mean is 17 -> chosen
        ("aen", "a2", 0, 13.0, 1.0, 0.70), ("aen", "a2", 1, 21.0, 3.0, 0.80),
        ("topk", "k16", 0, 16.0, 10.0, 0.9), ("topk", "k16", 1, 16.0, 14.0, 0.7),
        ("topk", "k32", 0, 32.0, 20.0, 0.95), ("topk", "k32", 1, 32.0, 22.0, 0.96),
    ])
    out = closest_to_target(df, 16, metrics=["dead_pct", "ev"]).set_index("method")
    assert out.loc["aen", "variant"] == "a2"
    assert out.loc["aen", "l0"] == 17.0 and out.loc["aen", "distance"] == 1.0
    assert (out.loc["aen", "dead_pct"], out.loc["aen", "dead_pct_min"], out.loc["aen", "dead_pct_max"]) == (2.0, 1.0, 3.0)
    assert out.loc["aen", "ev"] == pytest.approx(0.75) and out.loc["aen", "n_seeds"] == 2
    assert out.loc["topk", "variant"] == "k16"
    assert (out.loc["topk", "dead_pct"], out.loc["topk", "dead_pct_min"], out.loc["topk", "dead_pct_max"]) == (12.0, 10.0, 14.0)
    # grouping by a second key keeps groups apart
    df2 = pd.concat([df.assign(rho=0.0), df.assign(rho=0.9, l0=df["l0"] * 2)])
    out2 = closest_to_target(df2, 32, by=["rho", "method"])
    assert len(out2) == 4
    assert out2.set_index(["rho", "method"]).loc[(0.9, "topk"), "variant"] == "k16"  # 16·2 = 32
    with pytest.raises(ValueError, match="lacks column"):
        closest_to_target(df, 16, metrics=["f1"])
    with pytest.raises(ValueError, match="target"):
        closest_to_target(df, float("nan"))


def test_pareto_frontier_by_hand():
    pts = pd.DataFrame({
        "l0": [5, 8, 10, 12, 6, 20],
        "dead_pct": [10, 3, 3, 0, 20, 0],
        "ev": [0.5, 0.7, 0.7, 0.9, 0.4, 0.95],
    })
    # dead %: lower is better. (6, 20) is dominated by (5, 10); (10, 3) by (8, 3); (20, 0) by (12, 0)
    assert pareto_frontier(pts, "dead_pct")["l0"].tolist() == [5, 8, 12]
    # EV: higher is better. (6, .4) and (10, .7) are dominated; (20, .95) is better in EV than anything sparser
    assert pareto_frontier(pts, "ev")["l0"].tolist() == [5, 8, 12, 20]
    # an explicit direction overrides the default
    assert pareto_frontier(pts, "ev", y_direction="min")["l0"].tolist() == [5, 6]
    assert pareto_frontier(pts.assign(score=pts["ev"]), "score", y_direction="max")["l0"].tolist() == [5, 8, 12, 20]
    with pytest.raises(ValueError, match="y_direction"):
        pareto_frontier(pts.assign(score=1.0), "score")


# ---------------------------------------------------------------- the paper's Figure-2 statements on a frame
def _fig2_frame(dead0, dead9=None, ev0=None, ada_l0=(15.0, 17.0), k=16):
    """One seed, one variant per method at L0 ≈ k (adaptive lasso: two variants), ρ = 0 and optionally 0.9."""
    rows = []
    for rho, dead in ((0.0, dead0), (0.9, dead9)):
        if dead is None:
            continue
        for method, d in dead.items():
            ev = (ev0 or {}).get(method, 0.9) if rho == 0.0 else 0.7
            rows.append(dict(rho=rho, method=method, variant=f"{method}-a", seed=0, l0=float(k), dead_pct=d, ev=ev, k=k))
        for i, l0 in enumerate(ada_l0):
            rows.append(dict(rho=rho, method="adaptive_lasso", variant=f"ada-{i}", seed=0, l0=l0, dead_pct=0.0, ev=0.9,
                             k=k))
    return pd.DataFrame(rows)


GOOD0 = {"relu_l1": 2.0, "elastic_net": 2.0, "topk": 10.0, "aen": 0.0}
GOOD9 = {"relu_l1": 30.0, "elastic_net": 30.0, "topk": 40.0, "aen": 5.0}


def test_figure2_findings_all_consistent_on_a_frame_that_shows_the_paper():
    from aen_lib.results.records import figure2_findings
    f = figure2_findings(_fig2_frame(GOOD0, GOOD9), k=16, target_l0=16)
    assert len(f) == 6 and f["consistent"].all(), f
    # the rise with ρ names each method's matched L0 at the larger ρ, where the grid may match only loosely
    assert f"TopK {GOOD0['topk']:.1f} → {GOOD9['topk']:.1f} (16.0)" in f.iloc[4]["measured here"], f.iloc[4]


@pytest.mark.parametrize("frame, claim", [
    (_fig2_frame({**GOOD0, "aen": 5.0}, {**GOOD9, "aen": 10.0}), "AEN has no dead latents"),
    (_fig2_frame({**GOOD0, "topk": 0.0}, GOOD9), "TopK has more dead latents than AEN"),
    (_fig2_frame(GOOD0, GOOD9, ev0={"topk": 0.6}), "reconstruct about equally well"),
    (_fig2_frame(GOOD0, GOOD9, ada_l0=(4.0, 17.0)), "adaptive lasso concentrates"),
    (_fig2_frame({**GOOD0, "aen": 0.9}, {**GOOD9, "relu_l1": 2.5, "aen": 0.0}), "grows with ρ for every method"),
    (_fig2_frame(GOOD0, {**GOOD9, "aen": 50.0}), "slowest for AEN"),
    # AEN's rise smaller than vanilla's by less than the 1-point margin: not evidence that it grows least
    (_fig2_frame(GOOD0, {**GOOD9, "aen": 27.5}), "slowest for AEN"),  # rises: AEN 27.5, vanilla and EN 28
])
def test_figure2_findings_each_statement_fails_when_the_numbers_contradict_it(frame, claim):
    from aen_lib.results.records import figure2_findings
    f = figure2_findings(frame, k=16, target_l0=16).set_index("statement")["consistent"]
    failed = [c for c, ok in f.items() if not ok]
    assert len(failed) == 1 and claim in failed[0], f


def test_figure2_findings_picks_the_variant_closest_to_the_target_and_skips_what_is_missing():
    from aen_lib.results.records import figure2_findings
    df = _fig2_frame(GOOD0)
    far = dict(rho=0.0, method="aen", variant="aen-far", seed=0, l0=60.0, dead_pct=50.0, ev=0.95, k=16)
    f = figure2_findings(pd.concat([df, pd.DataFrame([far])]), k=16, target_l0=16)
    assert len(f) == 4 and f["consistent"].all()  # the far AEN variant is not the matched one; no ρ > 0 rows
    assert "AEN 0.0" in f.iloc[0]["measured here"]


def test_auxk_comparison_pairs_topk_and_auxk_at_the_same_k():
    from aen_lib.results.records import auxk_comparison
    df = pd.DataFrame([dict(rho=0.0, method=m, k=kk, seed=s, dead_pct=d + s, ev=0.8)
                       for m, base in (("topk", 10.0), ("topk_auxk", 2.0)) for kk in (8, 16) for s in (0, 1)
                       for d in [base * kk / 8]] + [dict(rho=0.0, method="topk", k=32, seed=0, dead_pct=1.0, ev=0.9)])
    t = auxk_comparison(df)
    assert t["k"].tolist() == [8, 16]  # k = 32 has no AuxK partner
    assert t["dead_pct_topk"].tolist() == [10.5, 20.5] and t["dead_pct_change"].tolist() == [-8.0, -16.0]


def test_nearest_in_l0_pairs_each_sae_with_the_other_method_nearest_in_l0_within_the_ratio():
    from aen_lib.results.records import nearest_in_l0
    df = pd.DataFrame([dict(rho=r, method=m, l0=l0, dead_pct=d) for r, m, l0, d in [
        (0.9, "aen", 4.0, 87.0), (0.9, "aen", 34.0, 44.0), (0.9, "topk", 16.0, 98.0), (0.9, "topk", 30.0, 96.0),
        (0.0, "aen", 24.0, 1.0), (0.0, "topk", 64.0, 10.0)]])
    pairs = nearest_in_l0(df, "aen", "topk", max_ratio=1.5)
    # L0 4 is nearest TopK 16 but 4× apart; ρ 0's 24 against 64 is too far as well
    assert pairs[["rho", "l0_aen", "l0_topk", "dead_pct_topk"]].values.tolist() == [[0.9, 34.0, 30.0, 96.0]]
    with pytest.raises(ValueError, match="max_ratio"):
        nearest_in_l0(df, "aen", "topk", max_ratio=0.5)


def test_records_frame_keeps_a_config_field_that_a_metric_also_names_under_config():
    from aen_lib.results.records import records_frame
    from aen_lib.results.records import RECORD_VERSION
    rec = dict(record_version=RECORD_VERSION, method="aen", label="aen λ1=0.005", variant="aen-1", seed=0,
               sae_config=dict(l1=0.005, l2=0.001, k=0),
               final=dict(l1=0.0037, l0=4.1), history=[])
    row = records_frame([rec]).iloc[0]
    assert row["config_l1"] == 0.005 and row["l1"] == 0.0037 and row["l2"] == 0.001 and row["l0"] == 4.1


def test_l1_for_l0_interpolates_in_log_log_and_borrows_a_slope():
    import math

    import pandas as pd
    import pytest
    from aen_lib.results.records import l1_for_l0

    # L0 = 0.01 / λ1 exactly (slope −1 in log-log): the guess is exact
    df = pd.DataFrame({"method": ["a"] * 3 + ["b"], "config_l1": [0.01, 0.001, 0.0001, 0.002],
                       "l0": [1.0, 10.0, 100.0, 5.0]})
    assert l1_for_l0(df, "a", 20.0) == pytest.approx(0.0005)
    assert l1_for_l0(df, "a", 1000.0) == pytest.approx(0.00001)  # outside: extrapolated from the nearest two
    assert l1_for_l0(df, "b", 10.0, slope_from="a") == pytest.approx(0.001)
    with pytest.raises(ValueError, match="single run"):
        l1_for_l0(df, "b", 10.0)
    with pytest.raises(ValueError, match="no c run"):
        l1_for_l0(df, "c", 10.0)
    assert math.isfinite(l1_for_l0(df, "a", 10.0))


def test_every_stored_result_goes_through_one_reader_and_writer(tmp_path):
    from aen_lib.results.records import RESULT_KINDS, read_result, write_result
    body = {"set": "s", "saes": {"a": 1.0}, "nan": float("nan")}
    path = write_result(tmp_path / "evaluation.json", "evaluation", body)
    back = read_result(path, "evaluation")
    assert back["record_version"] == 1 and back["saes"] == {"a": 1.0} and back["nan"] != back["nan"]
    with pytest.raises(FileExistsError, match="nothing was overwritten"):
        write_result(path, "evaluation", body)
    assert read_result(path, "evaluation")["saes"] == {"a": 1.0}
    with pytest.raises(ValueError, match="lacks \\['saes'\\]"):
        write_result(tmp_path / "x.json", "features", {"set": "s"})
    assert not (tmp_path / "x.json").exists()
    with pytest.raises(ValueError, match="lacks"):
        read_result(path, "provenance")  # an evaluation file is not a provenance record
    with pytest.raises(ValueError, match="unknown result kind"):
        read_result(path, "nonsense")
    with pytest.raises(FileNotFoundError, match="expected a mechanism record"):
        read_result(tmp_path / "missing.json", "mechanism")
    (tmp_path / "old.json").write_text(json.dumps({"schema": 1, **{k: 0 for k in RESULT_KINDS["sae"]}}))
    assert read_result(tmp_path / "old.json", "sae")["method"] == 0  # written before the field had one name
    (tmp_path / "new.json").write_text(json.dumps({"record_version": 2, "set": "s", "saes": {}}))
    with pytest.raises(ValueError, match="record_version 2 is not supported"):
        read_result(tmp_path / "new.json", "evaluation")


def test_committed_results_read_through_the_one_reader():
    from pathlib import Path

    from aen_lib.results.records import read_result
    root = Path(__file__).resolve().parents[1] / "reference"
    names = {"provenance.json": "provenance", "mechanism.json": "mechanism", "evaluation.json": "evaluation",
             "features.json": "features"}
    seen = 0
    for f in sorted(root.glob("*/*.json")):
        kind = names.get(f.name, "harvest" if f.name.startswith("harvest_") else "sae")
        read_result(f, kind)
        seen += 1
    assert seen > 100


# the kinds added when every stored result went through write_result / read_result: a body of each as its writer
# writes it (aen_lib.results.reference's ledger, aen-train's final.json, a distributed run's result.json, a chapter)
NEW_KINDS = {
    "invocation": {"started": "2026-01-01T00:00:00+00:00", "ended": None, "completed": False, "commit": "abc",
                   "seconds": 0.0, "cpu_seconds": 0.0, "member_steps_at_start": 0},
    "train_final": {"l0": 15.9, "dead_pct": 1.5, "ev": 0.61, "support_f1": 0.9, "skipped_steps": 0, "seconds": 2.5},
    "distributed_result": {"name": "aen", "sae_cfg": {"architecture": "aen"}, "final": {"l0": 4.0}, "steps": 8,
                           "skipped_steps": 0, "seconds": 1.0, "world_size": 2, "global_batch_size": 12},
    "chapter_summary": {"parameters": {"steps": 10}, "table": [{"l0": 3.0, "ev": float("nan")}]},
    "chapter_claims": {"headline": {"claim": "c", "holds": True, "numbers": {"x": 1.0}, "sentence": "s"}},
    "chapter_manifest": {"model": "m", "layer": 3, "saes": {"aen": {"folder": "aen"}}},
    "chapter_result": {"device": "cpu", "runs": []},
}


@pytest.mark.parametrize("kind", sorted(NEW_KINDS))
def test_each_new_kind_round_trips_with_its_version_and_reads_without_one(tmp_path, kind):
    from aen_lib.results.records import RECORD_VERSION, RESULT_KINDS, read_result, write_result

    assert kind in RESULT_KINDS
    body = NEW_KINDS[kind]
    path = write_result(tmp_path / f"{kind}.json", kind, body)
    assert next(iter(json.loads(path.read_text()))) == "record_version"  # the version comes first in the file
    back = read_result(path, kind)
    assert back["record_version"] == RECORD_VERSION == 1
    assert json.dumps({k: v for k, v in back.items() if k != "record_version"}) == json.dumps(body)  # NaN included
    # written before these results had a version: reads as version 1, content unchanged
    (tmp_path / "legacy.json").write_text(json.dumps(body))
    assert json.dumps(read_result(tmp_path / "legacy.json", kind)) == json.dumps(body)
    # a newer version is refused, naming the file and the fix
    (tmp_path / "newer.json").write_text(json.dumps({"record_version": RECORD_VERSION + 1, **body}))
    with pytest.raises(ValueError, match=r"newer.json: record_version 2 is not supported .* newer aen_lib: update"):
        read_result(tmp_path / "newer.json", kind)


def test_a_file_of_another_kind_is_refused_naming_the_file_and_what_it_is(tmp_path):
    from aen_lib.results.records import read_result, write_result

    final = write_result(tmp_path / "final.json", "train_final", NEW_KINDS["train_final"])
    with pytest.raises(ValueError, match=r"final.json: this distributed_result record lacks \['name', 'sae_cfg', "
                                         r"'final', 'steps', 'world_size'\]; it holds the keys of a train_final "
                                         "record: read it as that kind"):
        read_result(final, "distributed_result")
    ledger = write_result(tmp_path / "inv.json", "invocation", NEW_KINDS["invocation"])
    with pytest.raises(ValueError, match=r"inv.json: this train_final record lacks .*; it holds the keys of a "
                                         "invocation record"):
        read_result(ledger, "train_final")
    manifest = write_result(tmp_path / "manifest.json", "chapter_manifest", NEW_KINDS["chapter_manifest"])
    with pytest.raises(ValueError, match=r"manifest.json: this invocation record lacks .* not a invocation record: "
                                         "delete it and run what writes it again"):
        read_result(manifest, "invocation")
    # the writer refuses too: nothing is written
    with pytest.raises(ValueError, match="lacks"):
        write_result(tmp_path / "x.json", "distributed_result", NEW_KINDS["train_final"])
    with pytest.raises(ValueError, match="must be a mapping"):
        write_result(tmp_path / "x.json", "chapter_result", [1, 2])
    assert not (tmp_path / "x.json").exists()


def test_overwrite_replaces_a_result_atomically_and_schema_is_an_ordinary_key_of_the_new_kinds(tmp_path):
    from aen_lib.results.records import read_result, write_result

    path = write_result(tmp_path / "summary.json", "chapter_summary", {"schema": "v", "n": 1})
    with pytest.raises(FileExistsError, match="nothing was overwritten"):
        write_result(path, "chapter_summary", {"n": 2})
    write_result(path, "chapter_summary", {"n": 2}, overwrite=True)
    assert read_result(path, "chapter_summary") == {"record_version": 1, "n": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left behind
    write_result(path, "chapter_summary", {"schema": "v"}, overwrite=True)
    assert read_result(path, "chapter_summary")["schema"] == "v"  # content, not an old name of the version
