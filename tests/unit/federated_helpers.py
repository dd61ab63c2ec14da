"""What the federated tests share: the digits and a small seeded MLP for them (imported by the
tests: `from federated_helpers import digits_data, seeded_mlp`)."""

from maaslab.data import load_dataset
from maaslab.models import build_model
from maaslab.runtime import seed_everything


def digits_data():
    """The digits with the default splits (train, validation 15 %, test)."""
    return load_dataset("digits")


def seeded_mlp(data, hidden=(16,), seed=0):
    """A freshly initialised MLP for `data`, the same weights for the same seed."""
    seed_everything(seed)
    return build_model(
        "mlp", in_features=data.n_features, hidden=hidden, out_features=data.out_features
    )
