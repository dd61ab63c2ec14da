"""Recurrent networks beside attention: an Elman RNN written by hand, and nn.LSTM.

Lesson 07's second model family, top to bottom in one file. A recurrent network reads a sequence
one token at a time and carries everything it has seen in one hidden vector,

    h_t = tanh(W_x x_t + W_h h_{t-1} + b),

so a token at position s reaches the output at position T-1 only through T-1-s multiplications by
W_h (and as many tanh): information and gradients from far back fade unless the network learns
to keep them. An LSTM adds a cell state that a forget gate can pass on almost unchanged; attention
(maaslab.models.attention) reaches every position in one step. `recall_dataset` makes the toy task
that measures this, `position_gradient_norms` the gradient that reaches each position.
`ElmanRNN` is checked against `torch.nn.RNN` with copied weights (`copy_to_torch_rnn`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from maaslab.data import Dataset, token_sequences
from maaslab.errors import MaaslabError

CELLS = ("rnn", "lstm")  # the hand-written Elman RNN, torch's LSTM


def rnn_step(
    x_t: torch.Tensor,
    h_prev: torch.Tensor,
    w_x: torch.Tensor,
    w_h: torch.Tensor,
    b: torch.Tensor,
) -> torch.Tensor:
    """One Elman step, h_t = tanh(W_x x_t + W_h h_{t-1} + b), for a batch of rows.

    Parameters
    ----------
    x_t: (B, E) the inputs at step t.
    h_prev: (B, H) the hidden state after step t-1 (zeros before the first step).
    w_x, w_h, b: (H, E), (H, H) and (H,), laid out as nn.Linear / nn.RNN store them.
    """
    return torch.tanh(x_t @ w_x.T + h_prev @ w_h.T + b)  # (B, H)


class ElmanRNN(nn.Module):
    """A one-layer tanh RNN over (B, T, E) inputs, one `rnn_step` per position."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.x_proj = nn.Linear(input_size, hidden_size)  # W_x and b
        self.h_proj = nn.Linear(hidden_size, hidden_size, bias=False)  # W_h

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, E) -> every hidden state (B, T, H) and the last one (B, H), like nn.RNN."""
        B, T, _ = x.shape
        h = x.new_zeros(B, self.hidden_size) if h0 is None else h0
        states = []
        for t in range(T):  # the recurrence: step t needs h_{t-1}, so steps cannot run in parallel
            h = rnn_step(x[:, t], h, self.x_proj.weight, self.h_proj.weight, self.x_proj.bias)
            states.append(h)
        return torch.stack(states, dim=1), h


@torch.no_grad()
def copy_to_torch_rnn(ours: ElmanRNN) -> nn.RNN:
    """An nn.RNN(batch_first=True) holding our weights: the oracle for tests."""
    theirs = nn.RNN(ours.x_proj.in_features, ours.hidden_size, batch_first=True)
    theirs.weight_ih_l0.copy_(ours.x_proj.weight)
    theirs.bias_ih_l0.copy_(ours.x_proj.bias)
    theirs.weight_hh_l0.copy_(ours.h_proj.weight)
    theirs.bias_hh_l0.zero_()  # nn.RNN has a second bias; one b is the same function
    return theirs


@dataclass(frozen=True)
class RNNConfig:
    """A recurrent sequence classifier: embeddings -> a recurrent layer -> the last state."""

    cell: str = "rnn"  # one of CELLS: "rnn" (ElmanRNN, written here) or "lstm" (torch's nn.LSTM)
    vocab_size: int = 10  # token ids 0..vocab_size-1
    embed_dim: int = 16  # E: width of each token's embedding, the recurrent layer's input
    hidden_size: int = 32  # H: the one vector that carries everything read so far
    n_classes: int = 10  # logits read from the last hidden state

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise MaaslabError(f"unknown cell {self.cell!r}: choose one of {', '.join(CELLS)}")
        sizes = (self.vocab_size, self.embed_dim, self.hidden_size, self.n_classes)
        if min(sizes) < 1:
            raise MaaslabError(
                "vocab_size, embed_dim, hidden_size and n_classes must be positive integers, "
                f"got {sizes}"
            )


class RecurrentClassifier(nn.Module):
    """Token embeddings -> ElmanRNN or nn.LSTM -> logits from the hidden state after the last token.

    The recurrent counterpart of attention's SequenceClassifier, trained by maaslab.train on the
    same toy tasks; its inputs are token ids, as floats when they come from a Dataset.
    """

    def __init__(self, config: RNNConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim)
        if config.cell == "rnn":
            self.recurrent: nn.Module = ElmanRNN(config.embed_dim, config.hidden_size)
        else:
            self.recurrent = nn.LSTM(config.embed_dim, config.hidden_size, batch_first=True)
            self._open_forget_gates(self.recurrent)
        self.head = nn.Linear(config.hidden_size, config.n_classes)

    @staticmethod
    @torch.no_grad()
    def _open_forget_gates(lstm: nn.LSTM) -> None:
        # Forget-gate biases start at 1 (their sum over torch's two biases), not about 0: the
        # cell state then starts out passing on most of what it holds, the usual LSTM
        # initialisation (Jozefowicz et al., 2015). torch orders the gates input, forget, cell,
        # output.
        H = lstm.hidden_size
        lstm.bias_ih_l0[H : 2 * H].fill_(1.0)
        lstm.bias_hh_l0[H : 2 * H].zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, n_classes) logits."""
        states, _ = self.recurrent(self.embed(x.long()))  # (B, T, H)
        return self.head(states[:, -1])  # only the last state has read the whole sequence


def recall_dataset(
    n_samples: int = 2000, distance: int = 16, vocab_size: int = 10, seed: int = 0
) -> Dataset:
    """Toy task: recall the first digit of a sequence after `distance` random digits.

    Each sequence has distance + 1 digits and is labelled with its first one, so the model must
    carry that digit over `distance` steps to the last position, where the answer is read. The
    split is 70 % train, 10 % validation, 20 % test, as in max_token_dataset.
    """
    if distance < 1 or n_samples < 10 or vocab_size < 2:
        raise MaaslabError(
            "recall_dataset needs distance >= 1, n_samples >= 10 and vocab_size >= 2, got "
            f"distance={distance}, n_samples={n_samples}, vocab_size={vocab_size}"
        )
    rng = np.random.default_rng(seed)
    X = rng.integers(0, vocab_size, size=(n_samples, distance + 1))
    description = f"random digits; the label is the first digit, {distance} steps back"
    return token_sequences(
        f"recall-{distance}",
        X,
        X[:, 0],
        vocab_size,
        description,
        distance=distance,
        seed=seed,
        n_samples=n_samples,
    )


def position_gradient_norms(
    model: nn.Module, embedding: nn.Embedding, x: object, y: object
) -> np.ndarray:
    """How much gradient of the loss reaches each input position: ‖∂loss/∂e_t‖, batch-averaged.

    Parameters
    ----------
    model: a classifier of (B, T) token ids, e.g. RecurrentClassifier or SequenceClassifier.
    embedding: the model's token embedding (`model.embed`, `model.tok_emb`); its output e_t at
        each position is where the gradient is read.
    x, y: (B, T) token ids and (B,) labels.

    Returns
    -------
    (T,) the L2 norm of the cross-entropy's gradient w.r.t. each position's embedding, averaged
    over the batch (the loss is summed over the batch, so each row's gradient is its own).
    """
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: object, out: torch.Tensor) -> None:
        out.retain_grad()
        captured.append(out)

    device = embedding.weight.device
    x = torch.as_tensor(x, device=device)
    y = torch.as_tensor(y, device=device).long()
    was_training = model.training
    model.eval()
    handle = embedding.register_forward_hook(keep)
    try:
        model.zero_grad(set_to_none=True)
        # cuDNN's LSTM has no backward in eval mode; its plain kernels have (a no-op on CPU).
        with torch.backends.cudnn.flags(enabled=False):
            loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
            loss.backward()
    finally:
        handle.remove()
        model.train(was_training)
    if len(captured) != 1:
        raise MaaslabError("the embedding given is not the model's token embedding (used once)")
    grad = captured[0].grad  # (B, T, E)
    model.zero_grad(set_to_none=True)
    return grad.norm(dim=-1).mean(0).cpu().numpy()  # (T,)
