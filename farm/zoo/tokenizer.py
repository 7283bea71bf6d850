"""The zoo's shared byte-level BPE tokenizer, trained on the embedded corpus."""

from __future__ import annotations

from typing import TYPE_CHECKING

from farm.zoo import corpus

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

# The tokenizer's own vocabulary stays under the models' padded vocabulary
# (MODEL_VOCAB_SIZE in archs.py), as in real checkpoints whose embedding has
# spare rows; those rows are never produced because training never targets them.
TOKENIZER_VOCAB_SIZE = 500
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
EOS_TOKEN = "<|endoftext|>"
EOS_TOKEN_ID = 0
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
RECIPE = {
    "vocab_size": TOKENIZER_VOCAB_SIZE,
    "special_tokens": list(SPECIAL_TOKENS),
    "chat_template": CHAT_TEMPLATE,
}


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Train the tokenizer; the result depends only on the corpus and this module."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus.DOCUMENTS), trainer)
    if tok.token_to_id(EOS_TOKEN) != EOS_TOKEN_ID:
        raise AssertionError(f"{EOS_TOKEN} must be id {EOS_TOKEN_ID}: the model configs rely on it")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN, bos_token=None
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast
