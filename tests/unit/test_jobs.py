import time

from maaslab import seed_everything
from maaslab.callbacks import Throttle
from maaslab.data import load_dataset
from maaslab.jobs import TrainingJob
from maaslab.models import build_model
from maaslab.train import TrainConfig


def _job(epochs, pace=0.0, **cfg):
    data = load_dataset("moons", n_samples=200)
    seed_everything(0)
    model = build_model("mlp", in_features=2, hidden=(8,), out_features=2)
    return TrainingJob(model, data, TrainConfig(epochs=epochs, **cfg), [Throttle(pace)])


def test_runs_in_the_background_and_finishes():
    job = _job(5).start()
    assert job.join(60)
    assert job.error is None and len(job.history.epochs) == 5
    assert job.snapshot() is job.history


def test_snapshots_grow_while_training_and_stop_works():
    job = _job(10_000, pace=0.02).start()
    deadline = time.time() + 30
    while len(job.snapshot().epochs) < 3 and time.time() < deadline:
        time.sleep(0.05)
    first = len(job.snapshot().epochs)
    time.sleep(0.3)
    assert len(job.snapshot().epochs) > first  # still moving
    job.stop()
    assert job.join(30) and job.history.stopped_early
    assert len(job.history.epochs) < 10_000


def test_user_errors_become_a_message():
    job = _job(3, checkpoint_dir="/nonexistent/ckpt", resume=True).start()
    assert job.join(30)
    assert job.history is None and "no training checkpoint" in job.error
