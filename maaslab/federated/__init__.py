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
- `privacy`: DP-SGD on the clients with Opacus (per-example clipping, noise, Poisson batches)
  and each client's epsilon from its accountant, composed over the rounds it trains in.
- `attack`: the loss-threshold membership-inference attack: ROC, AUC, advantage (TPR - FPR).
- `tradeoff`: the same federation at several noise levels: accuracy, epsilon, attack advantage.
- `flower`: the same FedAvg as a Flower app: a ServerApp with Flower's own FedAvg strategy, a
  ClientApp per node taking `local_update`'s step; how the Deployment Engine maps to devices.
- `flower_runner`: that app on Flower's Deployment Engine, a SuperLink and SuperNodes on
  loopback (`run_flower_deployment`), with a result shaped like `run_federated`'s.
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
from maaslab.federated.attack import (
    AttackResult,
    advantage_bound,
    example_losses,
    loss_threshold_attack,
    membership_attack,
    roc,
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
from maaslab.federated.flower import FlowerSpec, flower_average
from maaslab.federated.flower_runner import FlowerResult, run_flower_deployment
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
from maaslab.federated.privacy import (
    ACCOUNTANTS,
    ClientPrivacy,
    check_dp_settings,
    check_private,
    dp_epsilon,
    private_train,
    sample_rate,
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
from maaslab.federated.tradeoff import (
    DEFAULT_FEDERATION,
    TradeoffConfig,
    TradeoffPoint,
    TradeoffResult,
    privacy_utility,
)

__all__ = [
    "ACCOUNTANTS",
    "AGGREGATIONS",
    "ALGORITHMS",
    "DEFAULT_FEDERATION",
    "MAX_DRAWS",
    "Aggregation",
    "AttackResult",
    "CKKSConfig",
    "CKKSKeys",
    "ClientPrivacy",
    "ClientRecord",
    "ClientUpdate",
    "EncryptedSum",
    "FederatedCallback",
    "FederatedConfig",
    "FederatedResult",
    "FederatedState",
    "FlowerResult",
    "FlowerSpec",
    "Partition",
    "RoundRecord",
    "SecAggConfig",
    "SecureSum",
    "TradeoffConfig",
    "TradeoffPoint",
    "TradeoffResult",
    "advantage_bound",
    "aggregate",
    "aggregate_vectors",
    "check_dp_settings",
    "check_private",
    "client_dataset",
    "client_seed",
    "decrypt_sum",
    "dequantize",
    "dp_epsilon",
    "encrypt_update",
    "encrypted_sum",
    "example_losses",
    "fedprox_loss",
    "flatten_state",
    "flower_average",
    "label_skew",
    "local_update",
    "loss_threshold_attack",
    "make_keys",
    "mask_update",
    "membership_attack",
    "pair_mask",
    "partition_dataset",
    "privacy_utility",
    "private_train",
    "proximal_term",
    "quantization_bound",
    "quantize",
    "ring_sum",
    "roc",
    "run_federated",
    "run_flower_deployment",
    "sample_clients",
    "sample_rate",
    "secure_sum",
    "split_dirichlet",
    "split_iid",
    "sum_ciphertexts",
    "unflatten_state",
    "weight_distance",
    "weighted_average",
    "weighted_update",
]
