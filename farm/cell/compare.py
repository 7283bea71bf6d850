"""Comparing two greedy generations, naming both sides (after vLLM's ``check_logprobs_close``).

Per prompt, tokens are compared position by position. Identical sequences agree.
At the first divergence the two sides still agree when each side's token is in the
other side's top-k: a near-tie that numerical noise may flip. Past that point the
sequences are conditioned on different prefixes, so nothing more is compared.

On top of vLLM's rule, the logprobs of the tokens in both sides' top-k are compared
at the positions before any divergence (``max_logprob_diff``). The zoo's models are
trained to confident outputs, so greedy tokens alone survive large weight errors
(measured: zeroing a whole MLP projection of the dense model kept all 64 tokens),
while the top-k logprobs move by nats: a right engine agrees within a tolerance and
a wrong one cannot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from farm.cell.types import Completion


@dataclass
class Divergence:
    prompt_index: int
    position: int
    tokens: dict[str, int]  # side name → token chosen there
    top: dict[str, list[int]]  # side name → its top-k token ids there
    texts: dict[str, str]  # side name → the whole generated text
    near_tie: bool  # each token is in the other side's top-k


@dataclass
class Comparison:
    name_ref: str
    name_cand: str
    prompts: int
    identical: int = 0
    near_ties: int = 0
    mismatched: int = 0
    # Over every token in both sides' top-k, at the positions before any divergence. Not just the
    # chosen token: a confident model keeps its argmax (and a chosen-token logprob near 0) under
    # large weight errors, while the rest of its top-k moves by nats.
    max_logprob_diff: float = 0.0
    tolerance: float = 0.0
    divergences: list[Divergence] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.mismatched == 0 and self.max_logprob_diff <= self.tolerance

    def summary(self) -> str:
        text = (
            f"{self.name_cand} vs {self.name_ref}: {self.identical}/{self.prompts} identical, "
            f"{self.near_ties} near-tie, {self.mismatched} mismatched; "
            f"max top-k logprob diff {self.max_logprob_diff:.3f} (tolerance {self.tolerance:g})"
        )
        first = next((d for d in self.divergences if not d.near_tie), None)
        if first:
            ref, cand = first.tokens[self.name_ref], first.tokens[self.name_cand]
            text += (
                f"; first mismatch prompt {first.prompt_index} position {first.position}: "
                f"{self.name_ref} {ref} vs {self.name_cand} {cand}"
            )
        return text

    def metrics(self) -> dict[str, Any]:
        return {
            "prompts": self.prompts,
            "identical": self.identical,
            "near_ties": self.near_ties,
            "mismatched": self.mismatched,
            "max_logprob_diff": round(self.max_logprob_diff, 4),
            "tolerance": self.tolerance,
        }

    def side_by_side(self) -> list[dict[str, Any]]:
        """The first divergence of each diverging prompt, for the result document."""
        return [
            {
                "prompt_index": d.prompt_index,
                "position": d.position,
                "near_tie": d.near_tie,
                "tokens": d.tokens,
                "top": d.top,
                "texts": d.texts,
            }
            for d in self.divergences
        ]


def compare_outputs(
    *,
    reference: Sequence[Completion],
    candidate: Sequence[Completion],
    name_ref: str = "transformers",
    name_cand: str = "vllm",
    logprob_tolerance: float = 1.0,
) -> Comparison:
    """Compare greedy generations prompt by prompt; both sides must carry top-k logprobs."""
    if len(reference) != len(candidate):
        raise ValueError(f"{name_ref} has {len(reference)} outputs, {name_cand} has {len(candidate)}")
    comparison = Comparison(name_ref, name_cand, prompts=len(reference), tolerance=logprob_tolerance)
    for index, (ref, cand) in enumerate(zip(reference, candidate)):
        for position, (ref_token, cand_token) in enumerate(zip(ref.token_ids, cand.token_ids)):
            ref_top = (ref.logprobs or ())[position] if position < len(ref.logprobs or ()) else {}
            cand_top = (cand.logprobs or ())[position] if position < len(cand.logprobs or ()) else {}
            if ref_token == cand_token:
                for shared in ref_top.keys() & cand_top.keys():
                    diff = abs(ref_top[shared] - cand_top[shared])
                    comparison.max_logprob_diff = max(comparison.max_logprob_diff, diff)
                continue
            near_tie = ref_token in cand_top and cand_token in ref_top
            comparison.divergences.append(
                Divergence(
                    prompt_index=index,
                    position=position,
                    tokens={name_ref: ref_token, name_cand: cand_token},
                    top={name_ref: _ranked(ref_top), name_cand: _ranked(cand_top)},
                    texts={name_ref: ref.text, name_cand: cand.text},
                    near_tie=near_tie,
                )
            )
            if near_tie:
                comparison.near_ties += 1
            else:
                comparison.mismatched += 1
            break
        else:
            if len(ref.token_ids) != len(cand.token_ids):
                comparison.mismatched += 1
            else:
                comparison.identical += 1
    return comparison


def _ranked(top: dict[int, float]) -> list[int]:
    return [token for token, _ in sorted(top.items(), key=lambda item: -item[1])]
