"""Federated learning: clients train on data that never leaves them; the server averages weights.

- `partition`: a dataset's training examples dealt among K clients, IID or with Dirichlet(alpha)
  label skew, and each client's label mix.
- `client`: a client's round, local training through `maaslab.train.train`, FedProx's proximal
  term, the client's drift from the global weights.
- `fedavg`: the server's loop (`run_federated`), its config, FedAvg's example-weighted average,
  client sampling, the per-round history and the callbacks a live view watches it through.
"""

from maaslab.federated.client import (
    ClientRecord,
    ClientUpdate,
    fedprox_loss,
    local_update,
    proximal_term,
    weight_distance,
)
from maaslab.federated.fedavg import (
    ALGORITHMS,
    FederatedCallback,
    FederatedConfig,
    FederatedResult,
    FederatedState,
    RoundRecord,
    client_seed,
    run_federated,
    sample_clients,
    weighted_average,
)
from maaslab.federated.partition import (
    MAX_DRAWS,
    Partition,
    client_dataset,
    label_skew,
    partition_dataset,
    split_dirichlet,
    split_iid,
)

__all__ = [
    "ALGORITHMS",
    "MAX_DRAWS",
    "ClientRecord",
    "ClientUpdate",
    "FederatedCallback",
    "FederatedConfig",
    "FederatedResult",
    "FederatedState",
    "Partition",
    "RoundRecord",
    "client_dataset",
    "client_seed",
    "fedprox_loss",
    "label_skew",
    "local_update",
    "partition_dataset",
    "proximal_term",
    "run_federated",
    "sample_clients",
    "split_dirichlet",
    "split_iid",
    "weight_distance",
    "weighted_average",
]
