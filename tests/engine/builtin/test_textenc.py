"""The plain-torch MiniLM computes what transformers' BertModel computes on the same weights."""

import os
from pathlib import Path

import pytest
import torch

from dreamserve.engine.builtin.minilm import export_half
from dreamserve.engine.builtin.textenc import MAX_TOKENS, TEXT_DIM, TextEncoder, model_dir, pool

TEXTS = [
    "a red circle",
    "A LARGE Blue Hexagon at the top left, in a night sky with stars",
    "put the object from image 1 onto the background of image 2 " * 4,  # past MAX_TOKENS
    "",
]


@pytest.fixture(scope="module")
def ours() -> tuple[torch.Tensor, torch.Tensor]:
    return TextEncoder()(TEXTS)


def test_shapes_mask_and_truncation(ours: tuple[torch.Tensor, torch.Tensor]) -> None:
    states, mask = ours
    assert states.shape == (len(TEXTS), MAX_TOKENS, TEXT_DIM) and states.dtype == torch.float32
    assert mask.sum(1).tolist()[2:] == [MAX_TOKENS, 2]  # truncated; [CLS] [SEP] only


@pytest.mark.slow
def test_matches_transformers_bert_on_the_same_weights(
    ours: tuple[torch.Tensor, torch.Tensor],
) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    path = str(model_dir())
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    batch = tok(
        [t.lower() for t in TEXTS],
        padding=True,
        truncation=True,
        max_length=MAX_TOKENS,
        return_tensors="pt",
    )
    with torch.inference_mode():
        ref = model(**batch).last_hidden_state
    states, mask = ours
    assert torch.equal(mask, batch["attention_mask"].bool())
    assert torch.allclose(states[mask], ref[mask], atol=1e-4)


def test_an_fp16_copy_loads_through_the_override_and_agrees(
    ours: tuple[torch.Tensor, torch.Tensor],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    export_half(model_dir(), tmp_path / "minilm")
    size = (tmp_path / "minilm" / "model.safetensors").stat().st_size
    assert size < 0.55 * (model_dir() / "model.safetensors").stat().st_size
    monkeypatch.setenv("DREAMSERVE_MINILM_DIR", str(tmp_path / "minilm"))
    assert model_dir() == tmp_path / "minilm"
    states, mask = TextEncoder()(TEXTS)
    assert torch.equal(mask, ours[1])
    assert torch.allclose(states[mask], ours[0][mask], atol=0.05)


def test_a_sentence_is_pooled_over_its_tokens_only_to_unit_length() -> None:
    states = torch.zeros(1, 3, TEXT_DIM)
    states[0, 0, 0], states[0, 1, 1], states[0, 2, 2] = 2.0, 2.0, 99.0
    mask = torch.tensor([[True, True, False]])
    p = pool(states, mask)
    assert torch.allclose(p[0, :3], torch.tensor([0.5**0.5, 0.5**0.5, 0.0]))
