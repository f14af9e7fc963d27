"""Token ids -> the exact UTF-8 bytes they stand for, token by token.

A streamed response carries only its new tokens, and this model keeps no state between
responses, so decoding each response to text on its own turns a character whose bytes
span two tokens (any byte-level BPE, e.g. Llama 3's, splits rare characters) into two
U+FFFD. Emitting bytes instead lets the client join them and decode incrementally
(app/llm/generation.py), the way vLLM detokenizes incrementally inside its engine.

Byte-level BPE vocabularies spell each byte as one printable character (the GPT-2
byte alphabet, rebuilt here); SentencePiece ones spell raw bytes as ``<0xNN>`` and
spaces as U+2581. Special tokens are skipped, as ``skip_special_tokens`` would.
"""

import json
import re

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def byte_alphabet():
    """Character -> byte of the GPT-2 byte-level alphabet: printable Latin-1 bytes stand
    for themselves, every other byte for the next unused code point from 256 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars = {}
    extra = 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _is_byte_level(tokenizer):
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    return "ByteLevel" in json.dumps(json.loads(backend.to_str()).get("decoder"))


class TokenBytes:
    """``tokenizer``: a Hugging Face tokenizer; the table is built once, at load."""

    def __init__(self, tokenizer):
        alphabet = byte_alphabet() if _is_byte_level(tokenizer) else None
        special = set(tokenizer.all_special_ids)
        tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        self._table = [
            b"" if i in special or token is None else _token_bytes(token, alphabet)
            for i, token in enumerate(tokens)
        ]

    def of(self, ids):
        table = self._table
        return b"".join(table[i] for i in ids if 0 <= i < len(table))


def _token_bytes(token, alphabet):
    if alphabet is not None and all(c in alphabet for c in token):
        return bytes(alphabet[c] for c in token)
    match = _BYTE_TOKEN.match(token)
    if match:
        return bytes([int(match.group(1), 16)])
    return token.replace("\u2581", " ").encode("utf-8")
