"""Evaluations of a model on labelled corpora (`emotion-evaluate`), as the tags of its version and source run.

Each evaluation is keyed by its corpus and the digest of the clips it scored (the MLflow dataset of the
evaluation run): `eval.CORPUS.DIGEST.uar`, `.clips`, `.held_out` and `.run`. So an evaluation on a subset
never overwrites one on the whole corpus, and one on the model's own training speakers (`held_out`
false) is kept apart from held-out ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

PREFIX = "eval."


@dataclass(frozen=True)
class Evaluation:
    """One evaluation: where, on which clips (their digest), its UAR, and whether its speakers were unheard."""

    corpus: str
    digest: str
    uar: float
    clips: int
    held_out: bool
    run_id: str = ""

    def tags(self) -> dict[str, str]:
        key = f"{PREFIX}{self.corpus}.{self.digest}"
        return {
            f"{key}.uar": f"{self.uar:.4f}",
            f"{key}.clips": str(self.clips),
            f"{key}.held_out": str(self.held_out).lower(),
            f"{key}.run": self.run_id,
        }


def evaluations(tags: Mapping[str, str]) -> list[Evaluation]:
    """Every evaluation recorded in a run's (or a version's) tags."""
    found = []
    for name, value in tags.items():
        parts = name.split(".")
        if len(parts) != 4 or parts[0] != PREFIX.rstrip(".") or parts[3] != "uar":
            continue
        key = ".".join(parts[:3])
        found.append(
            Evaluation(
                corpus=parts[1],
                digest=parts[2],
                uar=float(value),
                clips=int(tags.get(f"{key}.clips", "0")),
                held_out=tags.get(f"{key}.held_out", "false") == "true",
                run_id=tags.get(f"{key}.run", ""),
            )
        )
    return found


def held_out_on(tags: Mapping[str, str], corpus: str) -> Evaluation | None:
    """The held-out evaluation on `corpus` over the most clips, if there is one."""
    candidates = [e for e in evaluations(tags) if e.corpus == corpus and e.held_out]
    return max(candidates, key=lambda e: e.clips, default=None)
