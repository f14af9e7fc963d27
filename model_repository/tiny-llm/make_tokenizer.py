"""Rebuild ``1/hf/tokenizer.json``: a byte-level BPE trained on Python's own docstrings.

Run once with the project's interpreter (``python model_repository/tiny-llm/make_tokenizer.py``);
the result is committed, so serving never trains or downloads anything.
"""

import inspect
import pkgutil
import importlib
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

SPECIAL = ["<|pad|>", "<|bos|>", "<|eos|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
MODULES = [
    "json",
    "asyncio",
    "collections",
    "functools",
    "itertools",
    "pathlib",
    "re",
    "string",
    "textwrap",
    "typing",
    "unittest",
    "argparse",
    "logging",
    "email",
    "http",
]


def corpus():
    for name in MODULES:
        module = importlib.import_module(name)
        for _, member in inspect.getmembers(module):
            doc = inspect.getdoc(member)
            if doc:
                yield doc


def main():
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=2048,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(sorted(set(corpus())), trainer=trainer)
    out = Path(__file__).parent / "1" / "hf" / "tokenizer.json"
    tokenizer.save(str(out))
    print(f"wrote {out} ({tokenizer.get_vocab_size()} tokens)")


if __name__ == "__main__":
    main()
