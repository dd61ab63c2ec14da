"""The subword corpus and tokenizer of the language models we train (lesson 15's mini-llama).

Text: what ships with Python and with MaaS Lab, read offline and in a fixed order, so every
machine with the same Python builds the same corpus: CPython's help topics, the docstrings of
the standard library's own source files (read with `ast`, nothing imported), and our labelled
reviews, each distinct text once. A tenth of the documents, chosen by a hash of their names,
is held out for perplexity.

Tokenizer: byte-level BPE trained with the `tokenizers` library, saved as a standard
`tokenizer.json` + `tokenizer_config.json` pair that `AutoTokenizer.from_pretrained` loads.
Byte-level means any Unicode text encodes (a character never seen is spelled in its UTF-8
bytes) and decodes back unchanged. Encoding a text starts it with <|begin|>, as in training.
Special tokens mark a text's start and end and the turns of a chat; the chat template renders

    <|begin|><|user|>
    What does len do?<|end|>
    <|assistant|>
    (the model continues here, and ends its turn with <|end|>)

The model learns that format from the corpus itself: help topics and reviews are plain texts,
and every docstring is one chat exchange (the user asks what `json.dumps` does, the assistant
answers with its docstring), rendered by the same template (`encode_documents`).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maaslab.data import Dataset
from maaslab.errors import MaaslabError
from maaslab.reviews import REVIEWS_CSV, load_reviews
from maaslab.textdata import VAL_FRACTION, language_model_dataset, load_corpus

BOS, EOS, PAD = "<|begin|>", "<|end_of_text|>", "<|pad|>"
ROLES = ("system", "user", "assistant")
TURN_END = "<|end|>"
SPECIAL_TOKENS = (PAD, BOS, EOS, TURN_END, *(f"<|{role}|>" for role in ROLES))  # ids 0..6
# Jinja, as transformers applies it: the text's start, a header line per turn, the turn's end
# marked, and an open assistant header when a reply is wanted.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
HELDOUT_PERCENT = 10  # documents held out for perplexity, chosen by the hash of their names
# Parts of the standard library that are tests, demos, vendored copies or installed packages.
SKIPPED_PARTS = frozenset(
    {
        "test",
        "tests",
        "idlelib",
        "turtledemo",
        "lib2to3",
        "site-packages",
        "dist-packages",
        "__pycache__",
    }
)


@dataclass(frozen=True)
class Document:
    """One piece of the corpus: where it came from, and its text."""

    name: str  # e.g. "help:for", "doc:json/decoder.py:JSONDecoder.decode", "review:17"
    text: str

    @property
    def heldout(self) -> bool:
        """Whether this document belongs to the held-out part (fixed by its name)."""
        digest = hashlib.sha256(self.name.encode()).digest()
        return digest[0] * 100 // 256 < HELDOUT_PERCENT

    @property
    def question(self) -> str | None:
        """What a user asks to get this document as an answer (docstrings only), else None."""
        kind, _, where = self.name.partition(":")
        if kind != "doc":
            return None
        path, _, qualname = where.partition(":")
        module = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        if qualname == "<module>":
            return f"What is the {module} module for?"
        return f"What does {module}.{qualname} do?"


def _docstrings(path: Path, root: Path) -> Iterator[Document]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return
    where = path.relative_to(root).as_posix()
    stack: list[tuple[ast.AST, str]] = [(tree, "")]
    while stack:
        node, prefix = stack.pop(0)
        doc = ast.get_docstring(node, clean=True) if hasattr(node, "body") else None
        if doc and len(doc) >= 40:  # "Return self." teaches nothing
            yield Document(f"doc:{where}:{prefix or '<module>'}", doc)
        for child in getattr(node, "body", []):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                stack.append((child, f"{prefix}.{child.name}" if prefix else child.name))


def _skipped(part: str) -> bool:
    return part in SKIPPED_PARTS or part.startswith("test_")


def stdlib_documents() -> list[Document]:
    """The docstrings of the standard library's source files, in path order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    # os.walk prunes skipped folders before entering them (site-packages can be large).
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [s for s in subfolders if not _skipped(s)]
        files += [Path(folder, n) for n in names if n.endswith(".py") and not _skipped(n)]
    files.sort(key=lambda p: p.relative_to(root).parts)  # path order, whatever the file system's
    return [doc for path in files for doc in _docstrings(path, root)]


@functools.cache
def _corpus() -> tuple[Document, ...]:
    # Parsing the standard library takes seconds; a process reads it once.
    from pydoc_data.topics import topics

    help_docs = [Document(f"help:{name}", topics[name]) for name in sorted(topics)]
    # reviews.csv only: mini-llama was trained on this text, and its digest pins the corpus
    reviews = load_reviews(path=REVIEWS_CSV)
    review_docs = [
        Document(f"review:{rid}", t) for rid, t in zip(reviews.ids, reviews.texts, strict=True)
    ]
    if sum(len(d.text) for d in help_docs) != len(load_corpus()):
        raise MaaslabError("the help topics differ from maaslab.textdata's corpus")
    # A text met twice is kept once, where it first occurs: else a docstring copied into
    # another module could be held out and trained on at the same time.
    seen: set[str] = set()
    unique = []
    for doc in (*help_docs, *stdlib_documents(), *review_docs):
        if doc.text not in seen:
            seen.add(doc.text)
            unique.append(doc)
    return tuple(unique)


def load_documents() -> list[Document]:
    """Every document of the corpus (help topics, standard-library docstrings, reviews), each
    distinct text once."""
    return list(_corpus())


def corpus_digest(docs: list[Document]) -> str:
    """SHA-256 of the documents' names and texts in order: equal digests, equal corpora."""
    digest = hashlib.sha256()
    for d in docs:
        digest.update(f"{len(d.name)}:{d.name}{len(d.text)}:{d.text}".encode())
    return digest.hexdigest()


def split_documents(docs: list[Document]) -> tuple[list[Document], list[Document]]:
    """(training, held-out) documents, each part in corpus order."""
    return [d for d in docs if not d.heldout], [d for d in docs if d.heldout]


def train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer trained on `texts`, as a transformers PreTrainedTokenizerFast.

    Parameters
    ----------
    texts : the training documents (the held-out ones must not be among them).
    vocab_size : tokens in the vocabulary, the 256 bytes and the special tokens included.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
        raise MaaslabError(
            f"vocab_size {vocab_size} is too small: byte-level BPE needs the 256 bytes, "
            f"{len(SPECIAL_TOKENS)} special tokens and at least one merge"
        )
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer, length=len(texts))
    # Every training document starts with <|begin|>; so does every text the tokenizer encodes
    # with its special tokens (as Llama's tokenizers do), so a prompt looks like training data.
    bpe.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bpe.token_to_id(BOS))]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[TURN_END, *(f"<|{role}|>" for role in ROLES)],
        model_max_length=None,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def render(tokenizer: Any, doc: Document) -> str:
    """A document as the model reads it (special tokens written out, <|end_of_text|> excluded).

    A docstring is a chat exchange (its question, then the docstring as the answer), rendered
    by the tokenizer's chat template; any other document is <|begin|> and its text.
    """
    question = doc.question
    if question is None:
        return BOS + doc.text
    chat = [{"role": "user", "content": question}, {"role": "assistant", "content": doc.text}]
    return tokenizer.apply_chat_template(chat, tokenize=False)


def encode_documents(tokenizer: Any, docs: list[Document]) -> list[int]:
    """The documents as one stream of token ids, each one rendered and closed by <|end_of_text|>."""
    ids: list[int] = []
    eos = tokenizer.eos_token_id
    for start in range(0, len(docs), 256):  # batched: the fast tokenizer encodes in Rust
        batch = [render(tokenizer, d) for d in docs[start : start + 256]]
        for encoded in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            ids += [*encoded, eos]
    return ids


def window_dataset(
    train_ids: list[int],
    heldout_ids: list[int],
    context: int,
    max_windows: int | None = None,
    seed: int = 0,
    val_fraction: float = VAL_FRACTION,
) -> Dataset:
    """Two token streams as next-token windows: training windows, and held-out test windows.

    Windows do not overlap (stride = context), so every held-out token is predicted once and the
    mean test loss is the mean token cross-entropy, whose exp is the held-out perplexity.

    Parameters
    ----------
    train_ids, heldout_ids : token streams from encode_documents of the two parts.
    context : tokens per window (the model's context length T).
    max_windows : keep at most this many training windows (a random subset chosen by `seed`)
        and a tenth as many held-out ones; None keeps all.
    seed : chooses the subset when max_windows cuts.
    val_fraction : the end of the training stream kept for validation; 0 for none (the shipped
        mini-llama recipe, which chooses nothing on held-out text).
    """
    if min(len(train_ids), len(heldout_ids)) <= context:
        raise MaaslabError(
            f"context {context} is longer than the training ({len(train_ids)} tokens) or "
            f"held-out ({len(heldout_ids)} tokens) stream; use fewer tokens per window"
        )
    train, heldout = np.asarray(train_ids, np.int64), np.asarray(heldout_ids, np.int64)
    return language_model_dataset(
        "python_docs_subwords",
        train,
        heldout,
        context,
        context,
        max_windows,
        seed,
        lambda train_windows, test_windows: (
            f"help topics, standard-library docstrings and reviews as BPE tokens: "
            f"{train_windows:,} training / {test_windows:,} held-out windows of {context}"
        ),
        meta={"context": context, "stride": context, "max_windows": max_windows, "seed": seed},
        val_fraction=val_fraction,
    )


def unigram_perplexity(
    train_ids: list[int] | np.ndarray, targets: np.ndarray, vocab_size: int
) -> float:
    """Perplexity of `targets` under the training tokens' frequencies (add-one smoothed): the
    baseline a language model must beat by using the context at all."""
    counts = np.bincount(np.asarray(train_ids).ravel(), minlength=vocab_size) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(np.exp(-log_p[np.asarray(targets).ravel()].mean()))
