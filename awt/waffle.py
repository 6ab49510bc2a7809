"""WaffleCLIP's random descriptors (Roth et al., ICCV 2023), seeded.

Follows ``load_gpt_descriptions(mode='waffle')`` of github.com/ExplainableML/WaffleCLIP
(``waffle_tools.py``): ``pairs`` pairs of one random-word descriptor (as many words as a class name
has on average, each cut to the average word length of the class names) and one random-character
descriptor (groups of random characters shaped like an average class name, joined by ``", "``),
the same list for every class, each turned into a clause by DCLIP's rule ("which is/has ...") and
appended to the class's prompt: ``"a photo of a {name}, which has {descriptor}."``.

Two sources differ from the authors', who ship neither as a reusable list: the words are the
whole lower-case words of CLIP's own BPE vocabulary (shipped with open_clip; theirs is a pickled
English word list), and the characters are ASCII letters and digits (theirs: the characters of
their GPT descriptor file). A ``random.Random(seed)`` draws everything, so a seed is a run.
"""

from __future__ import annotations

import functools
import gzip
import math
import random
import string
from typing import Sequence

CHARACTERS = string.ascii_letters + string.digits


@functools.cache
def word_list() -> tuple[str, ...]:
    """Sorted lower-case ASCII words (3+ letters) that CLIP's tokenizer has as whole-word tokens."""
    from open_clip.tokenizer import default_bpe

    with gzip.open(default_bpe(), "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1:49152 - 256 - 2 + 1]     # the merges CLIP's tokenizer uses
    words = set()
    for line in merges:
        token = line.replace(" ", "")
        if token.endswith("</w>"):
            word = token[:-4]
            if len(word) >= 3 and word.isascii() and word.isalpha() and word.islower():
                words.add(word)
    return tuple(sorted(words))


def descriptor_clause(descriptor: str) -> str:
    """DCLIP's ``make_descriptor_sentence``: "which is/has ..." by the descriptor's first word."""
    if descriptor.startswith("a"):          # "a", "an" -- and, as in the authors' code, any word with an a
        return f"which is {descriptor}"
    if descriptor.startswith(("has", "often", "typically", "may", "can")):
        return f"which {descriptor}"
    if descriptor.startswith("used"):
        return f"which is {descriptor}"
    return f"which has {descriptor}"


def _half_even(x: float) -> int:
    return int(round(x))    # Python's round, like numpy's: halves to even


def waffle_descriptors(classnames: Sequence[str], pairs: int = 15, seed: int = 0) -> list[str]:
    """The shared list of ``2 * pairs`` descriptors: word, characters, word, characters, ..."""
    names = list(classnames)
    rng = random.Random(seed)
    words_per = max(_half_even(sum(len(n.split(" ")) for n in names) / len(names)), 1)
    word_len = _half_even(sum(sum(len(w) for w in n.split(" ")) / len(n.split(" ")) for n in names) / len(names))
    words = word_list()
    groups = _half_even(sum(n.count(" ") for n in names) / len(names)) + 1
    chars = math.ceil(sum(max(len(w) for w in n.split(" ")) for n in names) / len(names))
    chars += groups - chars % groups
    per_group = chars // groups
    out = []
    for _ in range(pairs):
        out.append(" ".join(words[rng.randrange(len(words))][:word_len] for _ in range(words_per)))
        out.append(", ".join("".join(CHARACTERS[rng.randrange(len(CHARACTERS))] for _ in range(per_group))
                             for _ in range(groups)))
    return out
