"""The shipped model folders in assets/models, and the recipes that rebuild them.

`python -m maaslab assets` reruns every recipe (seeded, on the CPU) and writes the folders the
app, the notebooks and the server load by name, so nothing has to be trained before a first
demo. Each recipe is a plain call of the shared training loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maaslab.callbacks import Callback, TrainState
from maaslab.data import load_dataset
from maaslab.errors import MaaslabError
from maaslab.models import build_model
from maaslab.paths import MODELS_DIR
from maaslab.registry import atomic_folder, save_model, write_json
from maaslab.runtime import fast_mode, seed_everything
from maaslab.train import TrainConfig, evaluate_split, run_metadata, train

# digits-cnn, sentiment-minilm and its student train without these validation rows
# (load_dataset's and review_dataset's, seed 0): lesson 12 chooses each compressed variant on them
# (maaslab.compress.variants.VAL_FRACTION), so no variant saw them; sentiment-minilm's epochs and
# the student's distillation settings are chosen on them too.
VAL_FRACTION = 0.15


@dataclass(frozen=True)
class Recipe:
    """How one shipped model is made."""

    name: str  # the model's name everywhere (CLI, app, server)
    description: str  # one line for listings
    build: Callable[[Path], Path]  # writes the model folder into the given parent, returns it


def _digits(
    name: str, model_type: str, config: dict, epochs: int, val_fraction: float = 0.0
) -> Callable[[Path], Path]:
    def build(parent: Path) -> Path:
        # A fixed recipe (its epochs and learning rate are not chosen by this run) may train on
        # every example outside the test split (val_fraction 0); a model whose validation rows
        # choose something later (digits-cnn: lesson 12's compressed variant) leaves them out.
        data = load_dataset("digits", seed=0, val_fraction=val_fraction)
        seed_everything(0)
        model = build_model(model_type, **config)
        cfg = TrainConfig(
            epochs=epochs,
            batch_size=32,
            optimizer="adam",
            lr=0.003,
            seed=0,
            device="cpu",
            cpu_threads=1,
        )
        history = train(model, data, cfg)
        meta = run_metadata(data, cfg, history, model=model)
        meta["input"] = "pixels (N, 64), sklearn digits scale 0-16"
        return save_model(model, parent / name, metadata=meta, overwrite=True)

    return build


GPT_EPOCHS = 10


def _mini_gpt(parent: Path) -> Path:
    from maaslab.callbacks import TqdmProgress
    from maaslab.models.gpt import GPTConfig, MiniGPT, tokens_per_second
    from maaslab.textdata import CharTokenizer, load_text_dataset

    data = load_text_dataset(context=64, val_fraction=0.0)  # a fixed recipe: all training text
    tokenizer = CharTokenizer.from_dict(data.meta["tokenizer"])
    seed_everything(0)
    model = MiniGPT(GPTConfig(vocab_size=tokenizer.vocab_size, context=64))
    cfg = TrainConfig(
        epochs=GPT_EPOCHS,
        batch_size=32,
        optimizer="adamw",
        lr=0.003,
        weight_decay=0.01,
        seed=0,
        device="cpu",
        cpu_threads=1,
    )
    history = train(model, data, cfg, callbacks=[TqdmProgress()])
    meta = run_metadata(data, cfg, history, model=model)
    # 104 class names and 64 feature names say nothing a reader needs; the tokenizer does.
    meta.pop("class_names")
    meta.pop("feature_names")
    meta["tokenizer"] = tokenizer.to_dict()
    meta["input"] = "text; one token per character"
    meta["tokens_per_second_1_thread"] = round(tokens_per_second(model, tokenizer), 1)
    return save_model(model, parent / "mini-gpt", metadata=meta, overwrite=True)


# sentiment-minilm trains up to SENTIMENT_MAX_EPOCHS (the warm-up and linear decay span them all)
# and stops once the validation loss has not improved for SENTIMENT_PATIENCE epochs; the weights
# of the epoch with the lowest validation loss are the ones saved (metadata "epoch_choice").
SENTIMENT_MAX_EPOCHS = 8
SENTIMENT_PATIENCE = 2


def sentiment_accuracy(model, split: str = "test") -> dict[str, float]:
    """Accuracy of a sentiment model on a split of the review corpus: overall and per phenomenon."""
    from maaslab.evaluation import predict_proba
    from maaslab.reviews import accuracy_by_phenomenon, load_reviews

    reviews = load_reviews(split)
    ids, _ = model.encode(list(reviews.texts))
    predictions = predict_proba(model, ids).argmax(1)
    overall = float((predictions == reviews.labels).mean())
    return {"overall": overall, **accuracy_by_phenomenon(predictions, reviews)}


class BestEpoch(Callback):
    """Keep a copy of what training changes at the epoch of lowest validation loss.

    After training, `model.load_trained_state(best.state)` puts that epoch's weights back, and
    `best.epoch` says which it was (1-based; 0 before any epoch ended). The model must have
    `trained_state()` (a SentimentClassifier or a StudentClassifier).
    """

    def __init__(self) -> None:
        self.loss, self.epoch, self.state = math.inf, 0, {}

    def on_epoch_end(self, state: TrainState) -> None:
        """Copy the trained weights when this epoch's validation loss is the lowest so far."""
        loss = state.history.epochs[-1].val_loss
        if loss < self.loss:
            self.loss, self.epoch = loss, state.epoch
            self.state = {k: v.detach().clone() for k, v in state.model.trained_state().items()}


def _sentiment(parent: Path) -> Path:
    from maaslab.callbacks import EarlyStopping, TqdmProgress
    from maaslab.models.sentiment import SentimentClassifier, SentimentConfig, review_dataset
    from maaslab.reviews import load_reviews, tfidf_baseline

    seed_everything(0)
    model = SentimentClassifier(SentimentConfig())
    data = review_dataset(model, val_fraction=VAL_FRACTION, seed=0)
    cfg = TrainConfig(
        epochs=SENTIMENT_MAX_EPOCHS,
        batch_size=16,
        optimizer="adamw",
        lr=0.001,
        weight_decay=0.01,
        schedule="warmup_linear",
        seed=0,
        device="cpu",
    )
    best = BestEpoch()
    stopping = EarlyStopping(patience=SENTIMENT_PATIENCE)
    history = train(model, data, cfg, callbacks=[TqdmProgress(), best, stopping])
    model.load_trained_state(best.state)
    meta = run_metadata(data, cfg, history, model=model)  # test read once, after the choice
    chosen = history.epochs[best.epoch - 1]
    meta["metrics"].update(val_loss=chosen.val_loss, val_accuracy=chosen.val_accuracy)
    meta["epoch_choice"] = {
        "rule": (
            f"lowest validation loss; stop after {SENTIMENT_PATIENCE} epochs without improvement"
        ),
        "max_epochs": SENTIMENT_MAX_EPOCHS,
        "chosen_epoch": best.epoch,
        "val_loss": [round(e.val_loss, 4) for e in history.epochs],
        "val_accuracy": [round(e.val_accuracy, 4) for e in history.epochs],
    }
    meta.pop("feature_names")
    meta["input"] = "text (English reviews); longer than max_length tokens is truncated"
    meta["test_accuracy"] = sentiment_accuracy(model)
    meta["tfidf_baseline_test_accuracy"] = tfidf_baseline(
        load_reviews("train"), load_reviews("test")
    ).accuracy
    return save_model(model, parent / "sentiment-minilm", metadata=meta, overwrite=True)


def _student(parent: Path) -> Path:
    import time
    from dataclasses import asdict

    from maaslab.compress.distill import LAYERS, STUDENT_NAME, select_settings, size_report
    from maaslab.registry import load_model

    seed_everything(0)
    teacher = load_model(parent / "sentiment-minilm").merge()
    started = time.perf_counter()
    # one student per candidate setting, each trained on the training reviews outside the
    # validation ones (VAL_FRACTION, seed 0); the best on validation is the one shipped
    candidates, student = select_settings(teacher, seed=0)
    seconds = time.perf_counter() - started
    chosen = candidates[0]
    meta = {
        "teacher": "sentiment-minilm",
        "distillation": {
            "layers": LAYERS,
            "temperature": chosen.temperature,
            "alpha": chosen.alpha,
            "epochs": chosen.epochs,
            "lr": chosen.lr,
            "seed": 0,
            "val_fraction": VAL_FRACTION,
            "selection_seconds": round(seconds, 1),
        },
        "candidates": [asdict(c) for c in candidates],  # best first, by validation accuracy
        "class_names": list(student.config.labels),
        "input": "text (English reviews); longer than max_length tokens is truncated",
        "test_accuracy": sentiment_accuracy(student),
        "teacher_test_accuracy": sentiment_accuracy(teacher),
        **size_report(student, teacher),
    }
    return save_model(student, parent / STUDENT_NAME, metadata=meta, overwrite=True)


LLAMA_NOTES = "maaslab.json"  # our notes in a mini-llama folder (config.json is transformers')
LLAMA_EPOCHS = 8
# mini-llama's draft for speculative decoding: a tenth of its size, on its tokenizer
DRAFT_SIZE = {"hidden": 128, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate": 352}
DRAFT_EPOCHS = 3
LLAMA_FAST_DOCUMENTS = 25  # fast mode keeps every 25th document of each part
LLAMA_FAST_WINDOWS = 64  # and at most this many training windows


def save_llama(
    model: Any, tokenizer: Any, folder: str | Path, metadata: dict[str, Any], *, overwrite: bool
) -> Path:
    """Write a MiniLlama and its tokenizer as a plain Hugging Face folder, atomically.

    Parameters
    ----------
    model : a maaslab.models.llama.MiniLlama.
    tokenizer : its tokenizer (maaslab.subwords.train_tokenizer).
    folder : destination; refused if it exists unless `overwrite`.
    metadata : JSON-able notes on the run (data, time, perplexity), written to LLAMA_NOTES.
    overwrite : replace an existing folder.
    """
    from transformers import GenerationConfig

    from maaslab.subwords import TURN_END

    spec = model.spec
    ids = (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    if ids != (spec.bos_token_id, spec.eos_token_id, spec.pad_token_id) or (
        len(tokenizer) != spec.vocab_size
    ):
        raise MaaslabError(
            f"the tokenizer ({len(tokenizer)} tokens, begin/end/pad ids {ids}) does not match "
            f"the model's spec ({spec}); build the spec from the tokenizer"
        )
    # generate() stops at the end of a text or of a chat turn; it samples by default, as Llama's
    # own folders do (greedy decoding of a small model soon repeats itself).
    model.llama.generation_config = GenerationConfig(
        bos_token_id=spec.bos_token_id,
        eos_token_id=[spec.eos_token_id, tokenizer.convert_tokens_to_ids(TURN_END)],
        pad_token_id=spec.pad_token_id,
        do_sample=True,
        temperature=0.7,
        top_p=0.9,
    )
    tokenizer.model_max_length = spec.context
    with atomic_folder(folder, overwrite=overwrite) as staging:
        model.llama.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_json(staging / LLAMA_NOTES, metadata)
    return Path(folder)


def _llama(
    name: str, size: dict[str, int], epochs: int, tokenizer_of: str | None = None
) -> Callable[[Path], Path]:
    """A recipe for a Llama of this size on the subword corpus; `tokenizer_of` names a built
    folder whose tokenizer it reuses (a speculative draft must share its target's)."""

    def build(parent: Path) -> Path:
        return _train_llama(parent, name, size, epochs, tokenizer_of)

    return build


def _train_llama(
    parent: Path, name: str, size: dict[str, int], epochs: int, tokenizer_of: str | None
) -> Path:
    import math
    import platform
    import time
    from dataclasses import asdict

    from transformers import AutoTokenizer

    from maaslab import subwords
    from maaslab.callbacks import TqdmProgress
    from maaslab.models.llama import LlamaSpec, MiniLlama

    fast = fast_mode()
    shared = parent / tokenizer_of if tokenizer_of else None
    if shared is not None and not (shared / "tokenizer.json").is_file():
        raise MaaslabError(
            f"{name} shares {tokenizer_of}'s tokenizer: build that first "
            f"(python -m maaslab assets {tokenizer_of})"
        )
    vocab = len(AutoTokenizer.from_pretrained(shared)) if shared else None
    spec = (
        LlamaSpec(
            vocab_size=vocab or 320,
            context=64,
            hidden=32,
            layers=2,
            heads=4,
            kv_heads=2,
            intermediate=64,
        )
        if fast
        else LlamaSpec(**({"vocab_size": vocab} if vocab else {}), **size)
    )
    docs = subwords.load_documents()
    train_docs, heldout_docs = subwords.split_documents(docs)
    if fast:
        train_docs = train_docs[::LLAMA_FAST_DOCUMENTS]
        heldout_docs = heldout_docs[::LLAMA_FAST_DOCUMENTS]
    seed_everything(0)
    started = time.perf_counter()
    tokenizer = (
        AutoTokenizer.from_pretrained(shared)
        if shared
        else subwords.train_tokenizer([d.text for d in train_docs], spec.vocab_size)
    )
    train_ids = subwords.encode_documents(tokenizer, train_docs)
    heldout_ids = subwords.encode_documents(tokenizer, heldout_docs)
    # a fixed recipe: no validation windows, every training token trains
    data = subwords.window_dataset(
        train_ids,
        heldout_ids,
        spec.context,
        max_windows=LLAMA_FAST_WINDOWS if fast else None,
        val_fraction=0.0,
    )
    tokenizer_seconds = time.perf_counter() - started
    model = MiniLlama(spec)
    cfg = TrainConfig(
        epochs=1 if fast else epochs,
        batch_size=8,
        optimizer="adamw",
        lr=0.002,
        weight_decay=0.1,
        schedule="warmup_linear",
        seed=0,
        device="cpu",
        cpu_threads=1 if fast else 2,
        grad_norm_samples=0,
    )
    history = train(model, data, cfg, callbacks=[TqdmProgress(desc=name)])
    characters = [sum(len(d.text) for d in part) for part in (train_docs, heldout_docs)]
    meta = {
        "name": name,
        "architecture": "LlamaForCausalLM (RoPE, RMSNorm, SwiGLU, grouped-query attention)",
        "spec": asdict(spec),
        "parameters": spec.parameters(),
        "corpus": {
            "sources": "CPython help topics, standard-library docstrings (as chats), reviews",
            "python": platform.python_version(),
            "digest": subwords.corpus_digest(docs),
            "documents": {"training": len(train_docs), "heldout": len(heldout_docs)},
            "characters": {"training": characters[0], "heldout": characters[1]},
            "tokens": {"training": len(train_ids), "heldout": len(heldout_ids)},
            "windows": {"training": len(data.X_train), "heldout": len(data.X_test)},
            "fast_mode": fast,
        },
        "tokenizer": {
            "type": "byte-level BPE (tokenizers)",
            "vocab_size": len(tokenizer),
            "characters_per_token": round(characters[0] / len(train_ids), 2),
        },
        "train_config": asdict(cfg),
        "epochs": [
            {
                "epoch": e.epoch,
                "train_loss": round(e.train_loss, 4),
                "seconds": round(e.seconds, 1),
            }
            for e in history.epochs  # the loop reads no held-out text; it is read once, below
        ],
        "tokenizer_seconds": round(tokenizer_seconds, 1),
        "training_seconds": round(history.wall_time, 1),
        "heldout_perplexity": round(math.exp(evaluate_split(model, data, "test")[0]), 2),
        "unigram_perplexity": round(
            subwords.unigram_perplexity(train_ids, data.y_test, spec.vocab_size), 2
        ),
    }
    if tokenizer_of:
        meta["tokenizer"]["shared_with"] = tokenizer_of
    return save_llama(model, tokenizer, parent / name, meta, overwrite=True)


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "digits-mlp",
            "MLP 64-64-64-10 on 8x8 digits (20 epochs, Adam 0.003)",
            _digits(
                "digits-mlp", "mlp", {"in_features": 64, "hidden": (64, 64), "out_features": 10}, 20
            ),
        ),
        Recipe(
            "digits-cnn",
            "CNN (16, 32 filters, 2x upsampling) on 8x8 digits, its validation rows held out "
            "(20 epochs, Adam 0.003)",
            _digits("digits-cnn", "cnn", {"channels": (16, 32), "upsample": 2}, 20, VAL_FRACTION),
        ),
        Recipe(
            "mini-gpt",
            f"GPT-2 architecture, 4 layers x 128 wide, on CPython's help text, characters "
            f"({GPT_EPOCHS} epochs, AdamW 0.003; about 15 minutes on one core)",
            _mini_gpt,
        ),
        Recipe(
            "sentiment-minilm",
            f"MiniLM-L6 + LoRA rank 8 + linear head, fine-tuned on assets/reviews, its validation "
            f"reviews held out (up to {SENTIMENT_MAX_EPOCHS} epochs, early stopping on validation "
            f"loss; AdamW 0.001; a few minutes on 2 cores)",
            _sentiment,
        ),
        Recipe(
            "sentiment-minilm-student",
            "3 MiniLM blocks + linear head distilled from sentiment-minilm (Hinton loss) on "
            "its training reviews, the settings chosen on its validation reviews among "
            "distill.CANDIDATES (a few CPU minutes each on one thread; build the teacher first)",
            _student,
        ),
        Recipe(
            "mini-llama",
            f"Llama architecture (RoPE, RMSNorm, SwiGLU, GQA), 6 layers x 256 wide, 512-token "
            f"context, byte-level BPE 4096, on help topics, docstrings and reviews.csv "
            f"({LLAMA_EPOCHS} epochs, AdamW 0.002; 20 minutes on 2 idle cores, measured)",
            _llama("mini-llama", {}, LLAMA_EPOCHS),
        ),
        Recipe(
            "mini-llama-draft",
            f"mini-llama's speculative draft: the same tokenizer and corpus, 2 layers x 128 wide "
            f"({DRAFT_EPOCHS} epochs; a few minutes; build mini-llama first)",
            _llama("mini-llama-draft", DRAFT_SIZE, DRAFT_EPOCHS, tokenizer_of="mini-llama"),
        ),
    )
}


def build_assets(names: list[str] | None = None, parent: Path = MODELS_DIR) -> list[Path]:
    """Rebuild the named shipped models (all when None) into `parent`; return their folders."""
    names = names or list(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise MaaslabError(f"no recipe for {', '.join(unknown)}; known: {', '.join(RECIPES)}")
    parent.mkdir(parents=True, exist_ok=True)
    return [RECIPES[name].build(parent) for name in names]
