"""Export alt-profanity-check's model (MIT licence) to the small .npz the toxicity scanner reads.

The package is a TF-IDF vectoriser and five sigmoid-calibrated linear SVMs in scikit-learn; loading
that costs ~3 s and each call ~10 ms, while the same arithmetic over the exported arrays takes
microseconds. Run with alt-profanity-check installed (the ``dev`` extra):

    .venv/bin/python tests/data/guard/export_toxicity_model.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from profanity_check.profanity_check import model, vectorizer

OUT = Path(__file__).resolve().parents[3] / "src" / "opsgate" / "guard" / "data" / "toxicity.npz"


def main() -> None:
    vocabulary: dict[str, int] = vectorizer.vocabulary_
    words = sorted(vocabulary, key=vocabulary.__getitem__)
    calibrated = model.calibrated_classifiers_
    np.savez_compressed(
        OUT,
        words=np.array(words),
        idf=vectorizer.idf_.astype(np.float32),
        coef=np.stack([c.estimator.coef_[0] for c in calibrated]).astype(np.float32),
        intercept=np.array([c.estimator.intercept_[0] for c in calibrated], dtype=np.float64),
        a=np.array([c.calibrators[0].a_ for c in calibrated], dtype=np.float64),
        b=np.array([c.calibrators[0].b_ for c in calibrated], dtype=np.float64),
    )
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KB, {len(words)} words, {len(calibrated)} models)")


if __name__ == "__main__":
    main()
