"""Hugging Face models in the recorder and the plane: tiny GPT-2 / BERT from configs (random init, no download)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

transformers = pytest.importorskip("transformers")

from ibscope.tracking import ActivationRecorder, InformationPlane, information_plane  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "information_plane.md"


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=32)
    return transformers.BertModel(cfg).eval()


def _padded(n, seq, left, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, seq + 1, (n,), generator=g)
    pos = torch.arange(seq)
    mask = ((pos >= seq - lengths[:, None]) if left else (pos < lengths[:, None])).long()
    return torch.randint(1, 64, (n, seq), generator=g) * mask, mask


def test_gpt2_blocks_by_pattern_pooled_at_the_last_token(gpt2):
    ids, mask = _padded(12, 10, left=True)
    with torch.no_grad():
        hs = gpt2(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    rec = ActivationRecorder(gpt2, {"input_ids": ids, "attention_mask": mask}, layers="transformer.h.*",
                             pool="last", batch_size=5)
    assert rec.layers == ["transformer.h.0", "transformer.h.1"]
    acts, _ = rec.capture(inputs=True)
    # left padding: the last token is the last position; hidden_states[1] is block 0's output and
    # hidden_states[2] block 1's after the final layer norm
    assert torch.allclose(acts["transformer.h.0"], hs[1][:, -1], atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(gpt2.transformer.ln_f(acts["transformer.h.1"]), hs[2][:, -1], atol=1e-5)
    assert torch.equal(acts["__input__"].long(), torch.where(mask.bool(), ids, -1))
    # right padding: the last non-padded token, not the last position
    ids_r, mask_r = _padded(12, 10, left=False)
    with torch.no_grad():
        hs_r = gpt2(input_ids=ids_r, attention_mask=mask_r, output_hidden_states=True).hidden_states
    last = mask_r.sum(1) - 1
    got = ActivationRecorder(gpt2, {"input_ids": ids_r, "attention_mask": mask_r}, layers="transformer.h.0",
                             pool="last").capture()[0]["transformer.h.0"]
    assert torch.allclose(got, hs_r[1][torch.arange(12), last], atol=1e-5)
    # the attention module returns (hidden, None): its one tensor is taken without output=
    attn = ActivationRecorder(gpt2, {"input_ids": ids, "attention_mask": mask}, layers="transformer.h.*.attn",
                              pool="mean").capture()[0]
    assert set(attn) == {"transformer.h.0.attn", "transformer.h.1.attn"}
    assert attn["transformer.h.0.attn"].shape == (12, 32)
    # unpooled: the full seq x hidden width, counted as such against max_bytes
    rec = ActivationRecorder(gpt2, {"input_ids": ids, "attention_mask": mask}, layers="transformer.h.*")
    assert rec.widths() == {"transformer.h.0": 320, "transformer.h.1": 320}
    with pytest.raises(ValueError, match="max_bytes"):
        ActivationRecorder(gpt2, {"input_ids": ids, "attention_mask": mask}, layers="transformer.h.0",
                           max_bytes=12 * 320 * 4 - 1, batch_size=4).capture()


def test_bert_cls_and_mean_pooling_with_a_batch_encoding(bert):
    ids, mask = _padded(9, 8, left=False, seed=1)
    enc = transformers.BatchEncoding({"input_ids": ids, "attention_mask": mask,
                                      "token_type_ids": torch.zeros_like(ids)})
    with torch.no_grad():
        hs = bert(**enc, output_hidden_states=True).hidden_states
    rec = ActivationRecorder(bert, enc, layers=["encoder.layer.*", "encoder"],
                             pool={"encoder.layer.*": "cls", "encoder": "mean"}, batch_size=4)
    acts, _ = rec.capture()
    assert list(acts) == ["encoder.layer.0", "encoder.layer.1", "encoder"]
    for i in range(2):
        assert torch.allclose(acts[f"encoder.layer.{i}"], hs[i + 1][:, 0], atol=1e-5)
    w = mask.unsqueeze(-1).float()
    # 'encoder' returns a ModelOutput with one tensor (last_hidden_state): recorded without output=
    assert torch.allclose(acts["encoder"], (hs[2] * w).sum(1) / w.sum(1), atol=1e-5)
    # the pooler's output is (batch, hidden): a pool there is refused, naming the layer
    with pytest.raises(ValueError, match="pool='cls' for layer 'pooler' needs a \\(batch, seq, hidden\\)"):
        ActivationRecorder(bert, enc, layers="pooler", pool="cls").capture()


def test_plane_on_a_loader_of_mappings_with_labels(gpt2):
    from torch.utils.data import DataLoader

    ids, mask = _padded(64, 8, left=True, seed=2)
    y = (ids[:, -1] >= 32).long()
    rows = [{"input_ids": ids[i], "attention_mask": mask[i], "labels": y[i]} for i in range(64)]
    df = information_plane(gpt2, DataLoader(rows, batch_size=16), layers="transformer.h.*", pool="last",
                           estimators="kde_upper")
    assert df["layer"].tolist() == ["transformer.h.0", "transformer.h.1"] and set(df["unit"]) == {"bits"}
    plane = InformationPlane(gpt2, {"input_ids": ids, "attention_mask": mask}, y, layers="transformer.h.*",
                             pool="last", estimators="kde_upper")
    again = plane.record(0)
    assert np.allclose(again["i_ty"].to_numpy(), df["i_ty"].to_numpy(), atol=1e-6)


def _doc_block(heading: str) -> str:
    section = DOC.read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_docs_gpt2_example_runs_verbatim(capsys):
    ns: dict = {}
    exec(compile(_doc_block("Hugging Face models (extra `hf`)"), str(DOC), "exec"), ns)
    table = ns["table"]
    assert table["layer"].tolist() == ["transformer.h.0", "transformer.h.1"] and set(table["unit"]) == {"bits"}
    assert "transformer.h.1" in capsys.readouterr().out
    # Y is a function of the last token, which reaches the pooled state: I(T;Y) near H(Y) ~ 1 bit;
    # the same layers with the labels shuffled carry (about) none of it
    assert (table["i_ty"] > 0.6).all() and (table["i_ty"] < 1.1).all()
    g = torch.Generator().manual_seed(1)
    shuffled = ns["labels"][torch.randperm(len(ns["labels"]), generator=g)]
    null = information_plane(ns["model"], {"input_ids": ns["input_ids"], "attention_mask": ns["attention_mask"]},
                             shuffled, layers="transformer.h.*", pool="last")
    assert (null["i_ty"] < 0.2).all()


def test_gpt2_every_estimator_the_plane_offers(gpt2, recwarn):
    """Acceptance on a tiny GPT-2: every estimator runs on the token embedding and the pooled blocks, each
    law violation carries its flag, the (injective) token embedding of distinct sequences is near log2 n."""
    from _plane_laws import assert_laws_flagged, every_estimator, h_bits, offered, wkl_plane

    g = torch.Generator().manual_seed(3)
    ids = torch.unique(torch.randint(1, 64, (300, 8), generator=g), dim=0)  # distinct sequences
    n = len(ids)
    y = (ids[:, -1] % 2).long()  # a label of the last token
    layers = ["transformer.wte", "transformer.h.0", "transformer.h.1"]
    kw = {"layers": layers, "pool": {"transformer.h.*": "last"}}
    df = information_plane(gpt2, ids, y, estimators=every_estimator(), chain=layers, max_features=64, **kw)
    df = pd.concat([df, wkl_plane(gpt2, ids, y, **kw)], ignore_index=True)
    assert set(df["estimator"]) == set(offered()) and set(df["layer"]) == set(layers)
    assert df["discrete_input"].all()
    assert_laws_flagged(df, n, h_bits(y), layers)
    embed = df[df["layer"] == "transformer.wte"].set_index("estimator")
    # GPT-2's embeddings have std 0.02: the fixed-noise KDE bounds (s2 = 0.1) measure T + noise there, far
    # below log2 n, and must say so; every other estimator is within 25% of log2 n
    blurred = embed["flags"].str.contains("noise_dominated")
    assert set(embed.index[blurred]) <= {"kde_upper", "kde_lower"}
    ok = embed.loc[~blurred, "i_xt"]
    assert len(ok) >= len(embed) - 2 and (abs(ok - np.log2(n)) <= 0.25 * np.log2(n)).all(), ok.to_string()
