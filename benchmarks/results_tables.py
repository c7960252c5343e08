"""The real-corpus results as markdown tables and a plot (`python -m benchmarks.real_corpora --table --docs ...`)."""

from __future__ import annotations

import re
from pathlib import Path

from matplotlib.figure import Figure

#: The corpora of the table, and the two cross-corpus rows (`benchmarks.real_corpora` runs them).
CORPORA = ("emodb", "savee")
MIX = "mix"
MIX_ROWS = ("egemaps_linear_loco", "egemaps_linear_mixed")
#: The best setup of each family on real speech, as the README's glance shows them: family -> rows.
FAMILIES = {
    "frozen Whisper base, speaker-adaptive (the recipe)": ("whisper_base_adaptive_pad30",),
    "frozen Whisper base (not adaptive)": ("whisper_base_pad30", "whisper_base_heads"),
    "eGeMAPS + softmax regression (baseline)": ("egemaps_linear",),
    "compact TDNN (tuned)": ("compact_tdnn_tuned",),
    "the report's networks (best of five)": (
        "report_cnn1d_mel",
        "report_cnn2d_mel",
        "cnn2d_mel_utterance",
        "report_cnn2d_mfcc",
        "report_fusion",
    ),
}


def machine_name(row: dict) -> str:
    """Where a row ran, in a few words: the GPU, else the CPU and its core count."""
    where = row["machine"]
    bf16 = {True: ", AVX512-BF16", False: ", no AVX512-BF16"}.get(where.get("avx512_bf16"), "")
    return where["gpu"] or f"{where['cpu']}, {where['cores']} cores{bf16}"


def table(results: list[dict], order: list[str]) -> str:
    """Markdown: one line per row and corpus, rows in `order`."""
    lines = [
        "| setup | corpus | protocol | test UAR mean ± std | pooled UAR | test acc mean | wall time | machine "
        "| command |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    single = [r for r in results if r["corpus"] != MIX]
    for r in sorted(single, key=lambda r: (r["corpus"], order.index(r["row"]), machine_name(r))):
        if "folds" in r:
            protocol = f"LOSO, {r['folds']} folds" + (", **speaker-adaptive**" if r.get("speaker_adaptive") else "")
            uar = f"{r['test/uar_mean']:.3f} ± {r['test/uar_std']:.3f}"
            pooled, acc = f"{r['test/uar_pooled']:.3f}", f"{r['test/acc_mean']:.3f}"
        else:
            protocol, uar, pooled, acc = "clip split after augmentation (leaky)", f"{r['test/uar']:.3f}", "", ""
            acc = f"{r['test/acc']:.3f}"
        minutes = f"{r['wall_s'] / 60:.1f} min"
        lines.append(
            f"| {r['what']} | {r['corpus']} | {protocol} | {uar} | {pooled} | {acc} | {minutes} | {machine_name(r)} "
            f"| `{r['command'].removesuffix(' ...')}` |"
        )
    return "\n".join(lines)


def cross_corpus_table(results: list[dict]) -> str:
    """Markdown: test UAR on each corpus, within it (LOSO), from a model of the other corpus, and after training on
    both; pooled over folds."""
    within = {r["corpus"]: r for r in results if r["row"] == "egemaps_linear" and r["corpus"] != MIX}
    mixed = {r["row"]: r for r in results if r["corpus"] == MIX}
    lines = [
        "| tested on | within the corpus (LOSO) | trained on the other corpus | trained on both (5 folds) |",
        "|---|---|---|---|",
    ]
    for corpus in CORPORA:
        cells = [f"{within[corpus]['test/uar_pooled']:.3f}" if corpus in within else "-"]
        for row in MIX_ROWS:
            value = mixed.get(row, {}).get(f"test/uar_pooled/{corpus}")
            cells.append(f"{value:.3f}" if value is not None else "-")
        lines.append(f"| {corpus} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_into(readme: Path, marker: str, markdown: str) -> None:
    """Replace the table between the README's `<!-- MARKER -->` and `<!-- /MARKER -->` lines."""
    text = readme.read_text()
    block = re.compile(rf"(<!-- {marker} -->\n).*?(<!-- /{marker} -->)", re.DOTALL)
    if not block.search(text):
        raise SystemExit(f"{readme} has no <!-- {marker} --> markers")
    readme.write_text(block.sub(lambda m: f"{m[1]}{markdown}\n{m[2]}", text))


def best_per_family(results: list[dict]) -> dict[str, dict[str, dict]]:
    """For each family and corpus, its row with the highest pooled LOSO UAR."""
    best: dict[str, dict[str, dict]] = {}
    for family, rows in FAMILIES.items():
        for corpus in CORPORA:
            found = [r for r in results if r["row"] in rows and r["corpus"] == corpus and "folds" in r]
            if found:
                best.setdefault(family, {})[corpus] = max(found, key=lambda r: r["test/uar_pooled"])
    return best


def plot_best_per_family(results: list[dict], path: Path) -> None:
    """Bars: pooled LOSO UAR of each family's best setup on each corpus, chance marked."""
    best = best_per_family(results)
    figure = Figure(figsize=(8, 3.4), constrained_layout=True)
    axes = figure.subplots()
    width = 0.8 / len(CORPORA)
    for k, corpus in enumerate(CORPORA):
        values = [best[f][corpus]["test/uar_pooled"] if corpus in best[f] else 0.0 for f in best]
        bars = axes.barh([i + k * width for i in range(len(best))], values, height=width, label=corpus)
        axes.bar_label(bars, fmt="%.3f", padding=2, fontsize=8)
    axes.axvline(1 / 6, color="grey", linestyle=":", label="chance (6 classes)")
    axes.set(yticks=[i + width / 2 for i in range(len(best))], yticklabels=list(best), xlim=(0, 1.05))
    axes.invert_yaxis()
    axes.set_xlabel("test UAR, leave one speaker out, pooled over folds")
    axes.legend(loc="lower right", fontsize=8)
    figure.savefig(path, dpi=110)
