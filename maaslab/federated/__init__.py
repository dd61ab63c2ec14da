"""Federated learning: clients train on data that never leaves them; the server averages weights.

- `partition`: a dataset's training examples dealt among K clients, IID or with Dirichlet(alpha)
  label skew, and each client's label mix.
- `client`: a client's round, local training through `maaslab.train.train`, FedProx's proximal
  term, the client's drift from the global weights.
- `fedavg`: the server's loop (`run_federated`), its config, FedAvg's example-weighted average,
  client sampling, the per-round history and the callbacks a live view watches it through.
- `aggregation`: FedAvg's average computed "plain", "masked" or "ckks" (`aggregate`), with what
  the server saw from each client and the cost in bytes and seconds.
- `secagg`: secure aggregation with pairwise masks: the server sees masked updates only.
- `homomorphic`: CKKS with TenSEAL: the server adds ciphertexts it cannot decrypt.
"""

from maaslab.federated.aggregation import (
    AGGREGATIONS,
    Aggregation,
    aggregate,
    aggregate_vectors,
    flatten_state,
    unflatten_state,
    weighted_update,
)
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
from maaslab.federated.homomorphic import (
    CKKSConfig,
    CKKSKeys,
    EncryptedSum,
    decrypt_sum,
    encrypt_update,
    encrypted_sum,
    make_keys,
    sum_ciphertexts,
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
from maaslab.federated.secagg import (
    SecAggConfig,
    SecureSum,
    dequantize,
    mask_update,
    pair_mask,
    quantization_bound,
    quantize,
    ring_sum,
    secure_sum,
)

__all__ = [
    "AGGREGATIONS",
    "ALGORITHMS",
    "MAX_DRAWS",
    "Aggregation",
    "CKKSConfig",
    "CKKSKeys",
    "ClientRecord",
    "ClientUpdate",
    "EncryptedSum",
    "FederatedCallback",
    "FederatedConfig",
    "FederatedResult",
    "FederatedState",
    "Partition",
    "RoundRecord",
    "SecAggConfig",
    "SecureSum",
    "aggregate",
    "aggregate_vectors",
    "client_dataset",
    "client_seed",
    "decrypt_sum",
    "dequantize",
    "encrypt_update",
    "encrypted_sum",
    "fedprox_loss",
    "flatten_state",
    "label_skew",
    "local_update",
    "make_keys",
    "mask_update",
    "pair_mask",
    "partition_dataset",
    "proximal_term",
    "quantization_bound",
    "quantize",
    "ring_sum",
    "run_federated",
    "sample_clients",
    "secure_sum",
    "split_dirichlet",
    "split_iid",
    "sum_ciphertexts",
    "unflatten_state",
    "weight_distance",
    "weighted_average",
    "weighted_update",
]
