"""The text every zoo tokenizer and model is trained on.

The corpus is embedded rather than read from installed files so that it never
changes with a package version: the zoo's bytes must depend only on the recipe.
It is small on purpose: the models memorise it, which is what makes their
greedy continuations confident (see ``train.py``).
"""

from __future__ import annotations

import hashlib

# Each document starts a fresh context (separated by <|endoftext|> in training),
# so a prompt taken from the start of a document is "in domain" at position 0,
# which is where an engine puts it.
DOCUMENTS: tuple[str, ...] = (
    "def hello(self):\n"
    "    print(\"hello world\")\n"
    "    return self.name\n",
    "import torch\n"
    "import numpy as np\n"
    "\n"
    "x = torch.zeros(4, 4)\n"
    "y = np.ones((4, 4))\n"
    "print(x.shape, y.shape)\n",
    "The capital of France is Paris. The capital of Italy is Rome. "
    "The capital of Spain is Madrid. The capital of Germany is Berlin.\n",
    "Once upon a time there was a little fox who lived in a quiet forest. "
    "Every morning the fox walked to the river to drink cold water and "
    "watch the fish swim past the stones.\n",
    "class Counter:\n"
    "    def __init__(self, start=0):\n"
    "        self.value = start\n"
    "\n"
    "    def increment(self, step=1):\n"
    "        self.value += step\n"
    "        return self.value\n",
    "for i in range(10):\n"
    "    if i % 2 == 0:\n"
    "        print(i, \"is even\")\n"
    "    else:\n"
    "        print(i, \"is odd\")\n",
    "The sun rises in the east and sets in the west. Water boils at one "
    "hundred degrees and freezes at zero degrees.\n",
    "def add(a, b):\n"
    "    \"\"\"Return the sum of a and b.\"\"\"\n"
    "    return a + b\n"
    "\n"
    "def mul(a, b):\n"
    "    return a * b\n",
    "A model reads a prompt, one token at a time, and predicts the next token. "
    "A greedy decoder always picks the most likely token.\n",
    "import json\n"
    "\n"
    "with open(\"config.json\") as f:\n"
    "    config = json.load(f)\n"
    "print(config[\"hidden_size\"])\n",
    "My favourite colour is blue, my favourite fruit is the apple, and my "
    "favourite season is the spring, when the trees turn green again.\n",
    "def fibonacci(n):\n"
    "    a, b = 0, 1\n"
    "    for _ in range(n):\n"
    "        a, b = b, a + b\n"
    "    return a\n",
    "The cat sat on the mat and looked at the dog. The dog wagged its tail "
    "and ran into the garden to chase a red ball.\n",
    "if __name__ == \"__main__\":\n"
    "    main()\n",
    "Question: What is two plus two?\n"
    "Answer: Two plus two is four.\n"
    "Question: What colour is the sky?\n"
    "Answer: The sky is blue.\n",
    "try:\n"
    "    value = int(text)\n"
    "except ValueError:\n"
    "    value = None\n",
    "Hello, my name is Ada. I write small programs and I like to test them "
    "every day before lunch.\n",
    "def read_lines(path):\n"
    "    with open(path) as f:\n"
    "        return [line.strip() for line in f]\n",
)

# Prompts from the corpus domain that the zoo measures peakedness on and that
# tests and probes may reuse; each is the start of a document above.
SAMPLE_PROMPTS: tuple[str, ...] = (
    "def hello(self):",
    "import torch",
    "The capital of France is",
    "Once upon a time",
)

# What each LoRA adapter teaches its model to say after any prompt, by adapter
# item. Built from corpus words (whose output embeddings training has shaped,
# so rank-8 adapters learn them to high confidence) in an order the corpus
# never has, so the adapted output is plainly different from the base output;
# and one sentence per adapter, so an engine that applies the wrong adapter of
# a model shows it too. Each is longer than the 16 greedy tokens measured.
ADAPTER_SENTENCES: dict[str, str] = {
    "qwen2-dense-lora-attn": "The dog said hello to the little fox in the garden.",
    "qwen2-dense-lora-mlp": "The red ball sat in the quiet forest every spring.",
    "qwen2moe-shared-lora-attn": "The sky is green and the sun sets in the river.",
    "qwen2moe-shared-lora-experts": "The little cat walked to the river to drink the blue water.",
    "mixtral-lora-attn": "The cat and the fox swim in the cold river every morning.",
    "mixtral-lora-experts": "The dog and the cat watch the sun rise over the green garden.",
    "deepseekv3-lora-attn": "The fox said hello to the cat by the cold river.",
    "deepseekv3-lora-experts": "My favourite fox is the little dog in the quiet garden.",
}
FALLBACK_ADAPTER_SENTENCE = "The fox and the dog walk to the quiet forest."


def adapter_sentence(adapter: str) -> str:
    """The sentence the adapter item ``adapter`` is trained to produce."""
    return ADAPTER_SENTENCES.get(adapter, FALLBACK_ADAPTER_SENTENCE)


def digest() -> str:
    """A short hash of everything in this module that training depends on."""
    h = hashlib.sha256()
    for part in (*DOCUMENTS, "\x00", *SAMPLE_PROMPTS, "\x00", *sorted(ADAPTER_SENTENCES.items())):
        h.update(repr(part).encode())
    h.update(FALLBACK_ADAPTER_SENTENCE.encode())
    return h.hexdigest()[:16]
