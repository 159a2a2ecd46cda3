"""sat-cifar10: Table 1 of Jin et al. (ICCV 2023), ResNet-18 on CIFAR-10: PGD-AT, TRADES, MART,
AWP-AT, SAT, SAT-TRADES and SAT-AWP-AT under clean, FGSM, BIM-100, PGD-100, CW-inf,
AutoAttack-100 and LAFEAT-100 (eps 8/255), with the paper's number beside ours in every cell.

Claims (Table 1 and §6.2): SAT gains most against the intermediate-layer attack (its LAFEAT gain
over PGD-AT exceeds its gain under every output-layer attack); SAT-TRADES beats TRADES and
SAT-AWP-AT beats AWP-AT against LAFEAT; SAT beats PGD-AT against LAFEAT.
"""
from __future__ import annotations

from experiments import claims as CL
from experiments.base import Experiment, ExperimentResult, fmt
from experiments.sat import _common as C
from experiments.sat import paper_values as P

OLA = ("FGSM", "BIM-100", "PGD-100", "CW-inf", "AutoAttack-100")


def _paper(row: str, column: str) -> float:
    return dict(zip(P.COLUMNS, P.TABLE1_RESNET18[row]))[column]


def run(scale: str = "cpu", quick: bool = False, out_dir=".", seed: int = 0) -> ExperimentResult:
    sc = C.pick_scale(scale, quick)
    data = C.load_data(sc)
    (x_tr, y_tr), (x_te, y_te) = data
    from advjax.train.lock import run_dir_lock

    # train what nobody else is training, then evaluate what nobody else is training or evaluating
    # (a run another process is still training is evaluated last: its train() waits for it), so two
    # sat-cifar10 on one --out keep both busy until the table is done
    runs = C.train_all(out_dir, list(C.RUNS), sc, data, seed=seed, wait=False)

    def eval_dir(label):
        return C.run_dir(out_dir, label, sc, seed) / "table1-eval"

    def evaluate(label):
        # under a lock of its own, so a second sat-cifar10 on the same --out evaluates other rows
        # meanwhile (and then reads this one from the cache)
        res = runs[label] if label in runs else C.train(out_dir, label, sc, data, seed=seed)
        model, variables = res.state.model, res.state.variables()
        with run_dir_lock(eval_dir(label), what="Table 1 evaluation"):
            heads = C.lafeat_heads(res.run_dir, model, variables, x_tr, sc, seed)
            accs = C.cached(out_dir, "table1", {"label": label, "step": int(res.state.step), "n": len(x_te),
                                                "scale": sc.name},
                            lambda: C.evaluate(model, variables, x_te, y_te, sc, heads, seed))
        C.log(f"  {label}: " + ", ".join(f"{k} {v:.1f}" for k, v in accs.items()))
        return accs

    table = C.split_work(list(C.RUNS), lambda label: [eval_dir(label), C.run_dir(out_dir, label, sc, seed)],
                         evaluate, "training or evaluation")

    head = ["method"] + list(C.COLUMNS)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, accs in table.items():
        paper = dict(zip(P.COLUMNS, P.TABLE1_RESNET18[C.READINGS[label][0] if label in C.READINGS else label]))
        cells = [f"{fmt(accs[c])} ({fmt(paper[c])})" for c in C.COLUMNS]
        lines.append(f"| {label}{' *' if label in C.READINGS else ''} | " + " | ".join(cells) + " |")

    nums = {f"{m}|{c}": v for m, accs in table.items() for c, v in accs.items()}

    def sat_gain_ila_minus_best_ola(d):
        ila = d["SAT|LAFEAT-100"] - d["PGD-AT|LAFEAT-100"]
        return ila - max(d[f"SAT|{c}"] - d[f"PGD-AT|{c}"] for c in OLA)

    claims = [
        CL.Claim("SAT gains most against the intermediate-layer attack: its LAFEAT-100 gain over PGD-AT exceeds "
                 "its gain under every output-layer attack", "Table 1, §6.2", sat_gain_ila_minus_best_ola,
                 "LAFEAT +6.03 vs at most +4.78 (CW-inf)"),
        CL.Claim("SAT is more robust than PGD-AT against LAFEAT-100", "Table 1",
                 CL.greater("SAT|LAFEAT-100", "PGD-AT|LAFEAT-100"), "43.08 vs 37.05"),
        CL.Claim("SAT-TRADES beats TRADES against LAFEAT-100", "Table 1",
                 CL.greater("SAT-TRADES|LAFEAT-100", "TRADES|LAFEAT-100"), "45.35 vs 42.02"),
        CL.Claim("SAT-AWP-AT beats AWP-AT against LAFEAT-100", "Table 1",
                 CL.greater("SAT-AWP-AT|LAFEAT-100", "AWP-AT|LAFEAT-100"), "48.95 vs 46.14"),
        CL.Claim("SAT-TRADES beats TRADES against PGD-100", "Table 1",
                 CL.greater("SAT-TRADES|PGD-100", "TRADES|PGD-100"), "45.80 vs 44.88"),
        CL.Claim("SAT-AWP-AT beats AWP-AT against PGD-100", "Table 1",
                 CL.greater("SAT-AWP-AT|PGD-100", "AWP-AT|PGD-100"), "48.82 vs 47.07"),
        *[CL.Claim(f"{r} beats {C.BASELINE[row]} against {a} (our reading of {row})", "Table 1",
                   CL.greater(f"{r}|{a}", f"{C.BASELINE[row]}|{a}"),
                   f"{_paper(row, a):.2f} vs {_paper(C.BASELINE[row], a):.2f}")
          for r, (row, *_) in C.READINGS.items() for a in ("LAFEAT-100", "PGD-100")],
        CL.Claim("clean accuracy is comparable: |SAT - PGD-AT| <= 2 points", "Table 1, §6.2",
                 CL.near("SAT|Clean", "PGD-AT|Clean", 2.0), "81.77 vs 81.32"),
    ]
    noise = C.accuracy_se(len(x_te))
    verdicts = CL.decide_all(claims, [nums], noise=noise)
    md = C.header(sc, "## Table 1: ResNet-18 on CIFAR-10, accuracy (%) at eps 8/255", "")
    md += "\n" + "\n".join(lines) + "\n\n"
    md += "".join(f"\\* {r}: not a row of the paper; our reading of {row} (settings `{kw}`), {row}'s paper "
                  f"numbers in parentheses: {why}.\n\n" for r, (row, _, kw, why) in C.READINGS.items())
    md += ("The paper's WRN-28-10 rows (paper scale only) are in `experiments/sat/paper_values.py`.\n\n"
           "**Claims** (" + CL.summary(verdicts) + f"; one run, noise = binomial s.e. {noise:.2f} points on "
           f"{len(x_te)} images):\n\n" + CL.table(verdicts) + "\n")
    return ExperimentResult(markdown=md, config={"scale": sc.describe(), "methods": C.METHODS,
                                                 "readings": {r: {"reads": p, "method": n, "settings": kw, "why": w}
                                                              for r, (p, n, kw, w) in C.READINGS.items()}},
                            metrics={"table": table, "paper": P.TABLE1_RESNET18})


EXPERIMENT = Experiment(
    name="sat-cifar10",
    description="SAT, Table 1: PGD-AT / TRADES / MART / AWP-AT / SAT / SAT-TRADES / SAT-AWP-AT (ResNet-18) "
                "under FGSM, BIM, PGD, CW, AA, LAFEAT",
    paper='Jin et al., "Explaining Adversarial Robustness of Neural Networks from Clustering Effect '
          'Perspective", ICCV 2023, Table 1',
    expected_runtime={"cpu": "~3.5-4 h with two sat-cifar10 on one --out (measured, sessions 13-14 on 2 cores: the 9 trainings 15-25 min each, heads ~1 min and the evaluation ~20-25 min per row; Table 1's 7 rows in ~2.5 h of two processes, each extra reading ~45 min more)",
                      "quick": "10-25 min (mostly compilation; estimate)",
                      "paper": "days on one accelerator (7 x 200 epochs of ResNet-18)"},
    paper_values={"table1_resnet18": P.TABLE1_RESNET18, "table1_wrn28_10": P.TABLE1_WRN28_10,
                  "table2": P.TABLE2, "table3": P.TABLE3},
    run=run,
)
