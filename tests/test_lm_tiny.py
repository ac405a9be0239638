"""The tiny GPT trained here (ibscope.lm.tiny_gpt / train_tiny_gpt): checkpoints, and the next-token
information of the synthetic Markov language recovered from its held-out cross-entropy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ibscope import lm

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    src = lm.MarkovSource(8, 1, support=3, concentration=0.5, seed=0)
    train, test = src.sample(2000, 32, seed=1), src.sample(300, 32, seed=2)
    model = lm.tiny_gpt(8, n_embd=32, n_positions=32, seed=0)
    out = tmp_path_factory.mktemp("tiny")
    res = lm.train_tiny_gpt(model, train, steps=150, lr=1e-2, warmup=10, checkpoint_steps=(0, 20, 150),
                            out_dir=out)
    return src, test, model, res, out


@pytest.mark.slow  # ~10-30 s of CPU training (the module fixture)
def test_checkpoints_are_safetensors_dirs_with_steps(trained):
    _, _, _, res, out = trained
    assert [p.name for p in res["checkpoints"]] == ["checkpoint-0", "checkpoint-20", "checkpoint-150"]
    for p in res["checkpoints"]:
        assert any(p.glob("*.safetensors")) and not any(p.glob("*.bin"))
    log = json.loads((out / "train_log.json").read_text())
    assert log["unit"] == "bits" and len(log["loss"]) == 150


@pytest.mark.slow
def test_cross_entropy_reaches_the_entropy_rate(trained):
    src, test, model, res, _ = trained
    rate, info = src.entropy_rate(), src.next_token_information()
    ce0 = lm.next_token_cross_entropy(res["checkpoints"][0], test, start=1)
    ce = lm.next_token_cross_entropy(res["checkpoints"][-1], test, start=1)
    assert ce0 > rate + 1.0                                  # the initialization knows nothing (~log2 8 = 3 bits)
    # an upper bound on the entropy rate, reached within 0.1 bit/token after 150 steps (2000 x 32 tokens)
    assert rate - 0.02 < ce < rate + 0.1
    assert lm.next_token_cross_entropy(model, test, unit="nats") == pytest.approx(ce * math.log(2), rel=1e-6)
    # I(context; next) = H(next) - H(next | context); H(next) by plug-in from the held-out tokens
    counts = np.bincount(test[:, 1:].ravel(), minlength=8) / test[:, 1:].size
    h_next = -(counts[counts > 0] * np.log2(counts[counts > 0])).sum()
    assert h_next - ce == pytest.approx(info, abs=0.1)
    assert info > 0.5                                        # not trivially within tolerance of 0


@pytest.mark.slow  # trains a character GPT on the corpus: ~15-30 s
def test_python_docs_corpus_is_real_text_and_learnable(tmp_path):
    tokens, alphabet = lm.python_docs_corpus()
    assert len(tokens) > 100_000 and 40 < len(alphabet) < 200
    assert "".join(alphabet[i] for i in tokens[:200]).count(" ") > 10
    seqs = lm.chunk(tokens[:40_000], 32)
    torch.manual_seed(0)
    model = lm.tiny_gpt(len(alphabet), n_embd=32, n_positions=32, seed=0)
    before = lm.next_token_cross_entropy(model, seqs[-100:])
    lm.train_tiny_gpt(model, seqs[:-100], steps=60, lr=1e-2, warmup=5)
    after = lm.next_token_cross_entropy(model, seqs[-100:])
    assert before > math.log2(len(alphabet)) - 0.5          # ~uniform at init
    assert after < before - 1.5                             # character statistics learned (unigram ~4.5 bits)


def test_bad_arguments_are_refused():
    m = lm.tiny_gpt(8, n_embd=16, n_positions=8)
    with pytest.raises(ValueError, match="tokens"):
        lm.train_tiny_gpt(m, np.zeros((4,), dtype=np.int64))
    with pytest.raises(ValueError, match="checkpoint_steps"):
        lm.train_tiny_gpt(m, np.zeros((4, 8), dtype=np.int64), steps=2, checkpoint_steps=[5])
    with pytest.raises(ValueError, match="start"):
        lm.next_token_cross_entropy(m, np.zeros((2, 4), dtype=np.int64), start=4)
    with pytest.raises(ValueError, match="n_head"):
        lm.tiny_gpt(8, n_embd=30, n_head=4)
