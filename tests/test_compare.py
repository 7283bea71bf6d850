"""The comparison rule: identical, near-tie at the first divergence, mismatch, and top-k logprob drift."""

from __future__ import annotations

from farm.cell.compare import compare_outputs
from farm.cell.types import Completion


def completion(tokens, tops):
    return Completion(text=" ".join(map(str, tokens)), token_ids=tuple(tokens), logprobs=tuple(tops))


def peaked(tokens, second=99, second_lp=-8.0):
    return completion(tokens, [{t: -0.001, second: second_lp} for t in tokens])


def test_identical_outputs_pass():
    result = compare_outputs(reference=[peaked([1, 2, 3])], candidate=[peaked([1, 2, 3])])
    assert result.passed and result.identical == 1 and result.max_logprob_diff == 0.0


def test_near_tie_at_first_divergence_passes_and_stops_comparing():
    ref = completion([1, 2, 3], [{1: -0.1}, {2: -0.6, 7: -0.8}, {3: -0.1}])
    cand = completion([1, 7, 9], [{1: -0.1}, {7: -0.6, 2: -0.7}, {9: -0.1}])
    result = compare_outputs(reference=[ref], candidate=[cand])
    assert result.passed and result.near_ties == 1 and result.mismatched == 0
    [divergence] = result.side_by_side()
    assert divergence["position"] == 1 and divergence["tokens"] == {"transformers": 2, "vllm": 7}
    assert divergence["texts"] == {"transformers": "1 2 3", "vllm": "1 7 9"}


def test_mismatch_outside_top_k_fails_and_names_both_sides():
    ref = completion([1, 2], [{1: -0.1}, {2: -0.01, 5: -6.0}])
    cand = completion([1, 8], [{1: -0.1}, {8: -0.01, 6: -6.0}])
    result = compare_outputs(reference=[ref], candidate=[cand], name_ref="hf", name_cand="engine")
    assert not result.passed and result.mismatched == 1
    assert "first mismatch prompt 0 position 1: hf 2 vs engine 8" in result.summary()


def test_same_tokens_but_drifted_logprobs_fail():
    """A confident model keeps its argmax under wrong weights; its top-k logprobs do not hold still."""
    result = compare_outputs(reference=[peaked([1, 2, 3])], candidate=[peaked([1, 2, 3], second_lp=-3.0)],
                             logprob_tolerance=0.75)
    assert result.identical == 1 and result.max_logprob_diff == 5.0 and not result.passed


def test_length_difference_is_a_mismatch():
    result = compare_outputs(reference=[peaked([1, 2, 3])], candidate=[peaked([1, 2])])
    assert result.mismatched == 1 and not result.passed
