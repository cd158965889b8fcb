"""The numpy MiniLM encoder against vectors computed by sentence-transformers (torch) itself."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from opsgate.backends.minilm import EncodingCancelled, SentenceEncoder, default_minilm_dir, resolve_model_dir

REFERENCE = json.loads((Path(__file__).parent.parent / "data" / "minilm_reference.json").read_text())


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder(default_minilm_dir())


def test_matches_sentence_transformers(encoder: SentenceEncoder) -> None:
    vectors, tokens = encoder.encode(REFERENCE["sentences"])
    expected = np.array(REFERENCE["embeddings"], dtype=np.float32)
    # The reference is rounded to 6 decimals; float32 differences are ~2e-7.
    assert np.abs(vectors - expected).max() < 2e-6
    assert tokens == sum(REFERENCE["token_counts"])


def test_batching_does_not_change_results(encoder: SentenceEncoder) -> None:
    together, _ = encoder.encode(REFERENCE["sentences"])
    alone = np.vstack([encoder.encode([s])[0] for s in REFERENCE["sentences"]])
    assert np.abs(together - alone).max() < 1e-5


def test_model_dir_resolution(tmp_path: Path) -> None:
    assert resolve_model_dir(None) == default_minilm_dir()
    assert resolve_model_dir(str(default_minilm_dir())) == default_minilm_dir()


def test_passes_of_any_size_give_the_same_vectors(encoder: SentenceEncoder) -> None:
    texts = REFERENCE["sentences"] + ["word " * 600]  # one input beyond the model's length
    whole, tokens = encoder.encode(texts, max_batch=64)
    single, single_tokens = encoder.encode(texts, max_batch=1)
    assert np.abs(whole - single).max() < 1e-5 and tokens == single_tokens


def test_a_huge_input_is_cut_before_tokenizing(encoder: SentenceEncoder) -> None:
    vector, tokens = encoder.encode(["word " * 1_000_000])  # 5 MB: only the first 256 tokens count
    assert tokens == encoder.max_seq_length
    reference, _ = encoder.encode(["word " * 2000])
    assert np.abs(vector - reference).max() < 1e-6


def test_a_cancelled_encoding_stops_before_its_next_pass(encoder: SentenceEncoder) -> None:
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(EncodingCancelled):
        encoder.encode(["some text"] * 8, max_batch=2, cancelled=cancelled)


def test_background_services_share_one_loaded_encoder() -> None:
    # Drift and the sentinel each asked for the bundled model; a second ~100 MB copy was loaded.
    from opsgate.backends.minilm import default_minilm_dir, shared_encoder

    first = shared_encoder(None)
    assert shared_encoder(str(default_minilm_dir())) is first
    vectors, _ = first.encode(["hello there"])
    assert vectors.shape == (1, first.dimensions)
