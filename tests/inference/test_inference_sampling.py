"""Greedy picks: ``argmax_rows`` gives ``torch.argmax``'s answer by whichever path it takes."""

from __future__ import annotations

import pytest
import torch

from blocks.inference.params import SamplingParams
from blocks.inference.sampling import argmax_rows, sample_rows


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_argmax_rows_is_torch_argmax_ties_included(dtype: torch.dtype) -> None:
    rows = torch.randn(5, 300, generator=torch.Generator().manual_seed(3)).to(dtype)
    rows[1, 7] = rows[1, 250] = rows[1].max() + 1  # a tie: the first index wins
    rows[2] = 0.0  # all tied
    rows[3, 299] = float("inf")
    got = argmax_rows(rows)
    assert got == rows.argmax(dim=-1).tolist()
    assert got[1] == 7 and got[2] == 0 and got[3] == 299


def test_plain_greedy_rows_are_their_argmax() -> None:
    rows = torch.randn(3, 50, generator=torch.Generator().manual_seed(4))
    greedy = SamplingParams(temperature=0.0)
    tokens, logprobs = sample_rows(rows, [greedy] * 3, [None] * 3)
    assert tokens == rows.argmax(dim=-1).tolist()
    assert logprobs == [None, None, None]
