"""qstar.analyze: compare q* α methods from qstar.sample diagnostics: α / ESS-ratio histograms,
a KL scatter, and the acceptance criteria per method (ESS ratio, KL gap, α range: criteria.md and
metrics.json)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.recipe.artifact_types import Dataset, Report
from engine.recipe.errors import StepError
from engine.recipe.step import In, Step, StepConfig, register

CRITERIA = {
    "ess_ratio": (0.9, 1.1),  # ESS_θ / ESS_t per token, averaged over a sample
    "kl_gap": 0.05,  # mean |KL(q‖π_θ) − KL(q‖π_t)| per token
    "alpha": (0.2, 0.8),
}
PASS_SHARE = 0.9  # a method meets a criterion when at least this share of its samples does


class QStarAnalyzeConfig(StepConfig):
    ess_ratio_range: tuple[float, float] = CRITERIA["ess_ratio"]
    max_kl_gap: float = CRITERIA["kl_gap"]
    alpha_range: tuple[float, float] = CRITERIA["alpha"]
    pass_share: float = PASS_SHARE


def summarize(rows: list[dict[str, Any]], cfg: QStarAnalyzeConfig) -> dict[str, Any]:
    import statistics as st

    def share(pred):
        return sum(1 for r in rows if pred(r)) / len(rows)

    lo, hi = cfg.ess_ratio_range
    alo, ahi = cfg.alpha_range
    ess_share = share(lambda r: lo <= r["ess_ratio_mean"] <= hi)
    kl_share = share(lambda r: r.get("kl_gap_mean", abs(r["kl_theta_mean"] - r["kl_t_mean"])) < cfg.max_kl_gap)
    alpha_share = share(lambda r: alo <= r["alpha_mean"] <= ahi)
    n = [r["n"] for r in rows if r.get("n")]
    return {
        "samples": len(rows),
        "alpha_mean": st.fmean(r["alpha_mean"] for r in rows),
        "ess_ratio_median": st.median(r["ess_ratio_mean"] for r in rows),
        "kl_theta_mean": st.fmean(r["kl_theta_mean"] for r in rows),
        "kl_t_mean": st.fmean(r["kl_t_mean"] for r in rows),
        "kl_gap_mean": st.fmean(r.get("kl_gap_mean", abs(r["kl_theta_mean"] - r["kl_t_mean"])) for r in rows),
        "kish_ess_theta_share": st.fmean(r["kish_ess_theta"] / r["n"] for r in rows) if n else None,
        "kish_ess_t_share": st.fmean(r["kish_ess_t"] / r["n"] for r in rows) if n else None,
        "share_ess_ratio_in_range": ess_share,
        "share_kl_gap_below": kl_share,
        "share_alpha_in_range": alpha_share,
        "meets": {"ess_ratio": ess_share >= cfg.pass_share, "kl_symmetry": kl_share >= cfg.pass_share,
                  "alpha_range": alpha_share >= cfg.pass_share},
    }


def _figures(out: Path, groups: dict[str, list[dict[str, Any]]], summary: dict[str, dict[str, Any]], cfg) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        names.append(name)

    for key, fname, title, rng in (("alpha_mean", "alpha_hist.png", "α per sample (mean over tokens)", cfg.alpha_range),
                                   ("ess_ratio_mean", "ess_ratio_hist.png", "ESS_θ / ESS_t per sample",
                                    cfg.ess_ratio_range)):
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for m, rows in groups.items():
            ax.hist([r[key] for r in rows], bins=30, alpha=0.5, label=m)
        for x in rng:
            ax.axvline(x, color="k", ls=":", lw=1)
        ax.set_title(title)
        ax.legend(fontsize=8)
        save(fig, fname)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    top = 0.0
    for m, rows in groups.items():
        xs, ys = [r["kl_theta_mean"] for r in rows], [r["kl_t_mean"] for r in rows]
        ax.scatter(xs, ys, s=8, alpha=0.6, label=m)
        top = max([top, *xs, *ys])
    ax.plot([0, top], [0, top], "k:", lw=1)
    ax.set_xlabel("KL(q‖π_θ)")
    ax.set_ylabel("KL(q‖π_t)")
    ax.legend(fontsize=8)
    save(fig, "kl_scatter.png")
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    methods = list(summary)
    for ax, (key, label) in zip(axes, (("share_ess_ratio_in_range", "ESS ratio in range"),
                                       ("share_kl_gap_below", f"|ΔKL| < {cfg.max_kl_gap}"),
                                       ("share_alpha_in_range", "α in range"))):
        ax.bar(methods, [summary[m][key] for m in methods])
        ax.axhline(cfg.pass_share, color="k", ls=":", lw=1)
        ax.set_ylim(0, 1.05)
        ax.set_title(label, fontsize=9)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    save(fig, "methods.png")
    return names


def criteria_table(summary: dict[str, dict[str, Any]], cfg: QStarAnalyzeConfig) -> str:
    lo, hi = cfg.ess_ratio_range
    alo, ahi = cfg.alpha_range
    lines = [
        f"A method meets a criterion when at least {cfg.pass_share:.0%} of its samples do.",
        "",
        f"| method | ESS ratio in [{lo}, {hi}] | mean \\|ΔKL\\| < {cfg.max_kl_gap} | α in [{alo}, {ahi}] |",
        "| --- | --- | --- | --- |",
    ]

    def cell(ok, share, extra):
        return f"{'meets' if ok else 'fails'} ({share:.0%}; {extra})"

    for m, s in summary.items():
        ess = cell(s["meets"]["ess_ratio"], s["share_ess_ratio_in_range"], f"median {s['ess_ratio_median']:.3f}")
        gap = cell(s["meets"]["kl_symmetry"], s["share_kl_gap_below"], f"mean {s['kl_gap_mean']:.4f}")
        alpha = cell(s["meets"]["alpha_range"], s["share_alpha_in_range"], f"mean {s['alpha_mean']:.3f}")
        lines.append(f"| {m} | {ess} | {gap} | {alpha} |")
    return "\n".join(lines) + "\n"


@register("qstar.analyze")
class QStarAnalyze(Step):
    """Compare q* α methods: α / ESS-ratio histograms, KL scatter, and the acceptance criteria per method."""

    version = "1"
    Config = QStarAnalyzeConfig
    inputs = {"diagnostics": In(Dataset, many=True)}
    outputs = {"report": Report}

    def run(self, ctx) -> None:
        cfg: QStarAnalyzeConfig = self.config
        groups: dict[str, list[dict[str, Any]]] = {}
        need = ("alpha_mean", "ess_ratio_mean", "kl_theta_mean", "kl_t_mean")
        for ds in ctx.inputs["diagnostics"]:
            for i, r in enumerate(ds.rows()):
                missing = [k for k in need if k not in r]
                if missing:
                    raise StepError(f"qstar.analyze: {ds.path}: row {i}: missing {missing}; "
                                    "expected qstar.sample diagnostics")
                groups.setdefault(str(r.get("alpha_method", "unknown")), []).append(r)
        if not groups:
            raise StepError("qstar.analyze: no diagnostics rows; bind `diagnostics` to qstar.sample outputs")
        summary = {m: summarize(rows, cfg) for m, rows in groups.items()}
        out = ctx.out("report")
        figures = _figures(out, groups, summary, cfg)
        table = criteria_table(summary, cfg)
        (out / "criteria.md").write_text(table, encoding="utf-8")
        verdict = {c: [m for m, s in summary.items() if s["meets"][c]]
                   for c in ("ess_ratio", "kl_symmetry", "alpha_range")}
        ctx.write_metrics("report", {"methods": summary, "meets": verdict, "figures": figures,
                                     "criteria": {"ess_ratio_range": list(cfg.ess_ratio_range),
                                                  "max_kl_gap": cfg.max_kl_gap,
                                                  "alpha_range": list(cfg.alpha_range),
                                                  "pass_share": cfg.pass_share}})
        ctx.log.info("q* criteria:\n%s", table)
