"""The GPU path, for real: `--device cuda` end to end on a CUDA device. Without one every test
here is skipped with the reason below (with GSEARCH_REQUIRE_CUDA set they fail instead, as
bench/gpu_check.sh sets it on the GPU machine, so that a run there cannot pass by skipping).

- a population trained on CUDA computes what it computes on the CPU (same members, float32
  tolerance), and its member models come back on CUDA;
- every tensor of a CUDA population lives on CUDA, and a CUDA search records device 'cuda'
  on every trial and really allocates GPU memory: nothing falls back to the CPU silently;
- export from a CUDA-trained study, and prediction from that export. `gsearch predict` has no
  --device: its torch backend loads model.pt onto the CPU (models/predict.py,
  map_location="cpu") and runs there, so what is checked is that a CUDA-trained export loads
  and predicts on the CPU, the same as its ONNX model;
- two workers sharing one GPU (`--workers 2 --device cuda`).

Data: tiny synthetic tables (tests/conftest.py), few epochs."""

import json
import os

import numpy as np
import optuna
import pytest
import torch
from conftest import synthetic_frame

from gsearch.data.load import load_dataset
from gsearch.models.config import TrialConfig
from gsearch.models.population import Population, train_population
from gsearch.search import records
from gsearch.search.protocol import Protocol
from gsearch.search.storage import open_storage

HAS_CUDA = torch.cuda.is_available()
REASON = "needs a CUDA device (torch.cuda.is_available() is False)"
REQUIRE = bool(os.environ.get("GSEARCH_REQUIRE_CUDA"))

pytestmark = [pytest.mark.skipif(not HAS_CUDA and not REQUIRE, reason=REASON),
              pytest.mark.usefixtures("one_thread")]  # see conftest.py

# Short runs of the real search space: 20 epochs (its least), no pruner (every trial completes).
FAST = ("--fix", "epochs=20", "--pruner", "none", "--seed", "5")


@pytest.fixture(scope="module", autouse=True)
def cuda_device():
    """Runs before every module fixture: with GSEARCH_REQUIRE_CUDA a missing device fails."""
    if not HAS_CUDA:
        pytest.fail(f"{REASON}, and GSEARCH_REQUIRE_CUDA is set")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("cuda") / "f.csv"
    synthetic_frame(tracks_per_class=50, separation=0.3, seed=3).to_csv(path, index=False)
    return Protocol().trial_data(load_dataset(path))[0]


def full_batch(**kwargs) -> TrialConfig:
    """One batch of all rows, no dropout, no noise: nothing random after the initial weights
    (which the CPU draws for every device), so CPU and CUDA runs can be compared number by
    number. With mini-batches CUDA's generator shuffles other permutations: other numbers,
    the same distribution."""
    return TrialConfig(**{"batch_size": 4096, "dropout": 0.0, **kwargs})


MEMBERS = [
    full_batch(n_layers=2, width=48, batch_norm=True, epochs=12, lr=3e-3),
    full_batch(n_layers=1, width=96, batch_norm=False, epochs=8, lr=1e-2, weight_decay=1e-2,
               label_smoothing=0.1),
    full_batch(n_layers=3, width=16, batch_norm=True, epochs=10, lr=2e-3, lr_schedule="onecycle"),
    full_batch(n_layers=0, width=16, epochs=9, lr=1e-2, lr_schedule="cosine"),
]


def cuda_tensors(obj, seen=None):
    """Every tensor reachable from obj's attributes, lists, tuples and dicts: (path, tensor)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield "", obj
        return
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("gsearch"):
        items = vars(obj).items()
    else:
        return
    for key, value in items:
        for path, tensor in cuda_tensors(value, seen):
            yield f".{key}{path}", tensor


def test_a_population_on_cuda_computes_what_it_computes_on_the_cpu(data):
    """Same members, same seeds: the curves agree to float32 rounding. GPU kernels sum in
    another order, and Adam divides by small second moments, so the per-epoch losses are
    compared to 1e-3 (batch-norm validation loss to 2e-2: the Linear bias before batch norm
    gets a zero gradient up to rounding, which Adam scales to full steps, and the running
    mean follows it), validation accuracy to two rows."""
    seeds = list(range(len(MEMBERS)))
    cpu = train_population(MEMBERS, [data] * len(MEMBERS), seeds, device="cpu")
    gpu = train_population(MEMBERS, [data] * len(MEMBERS), seeds, device="cuda")
    X_val = torch.as_tensor(data.X_val)
    for config, (cpu_model, cpu_h), (gpu_model, gpu_h) in zip(MEMBERS, cpu, gpu):
        assert gpu_h.epochs_run == cpu_h.epochs_run == config.epochs, config
        np.testing.assert_allclose(gpu_h.train_loss, cpu_h.train_loss, atol=1e-3, err_msg=str(config))
        np.testing.assert_allclose(gpu_h.val_loss, cpu_h.val_loss, atol=2e-2 if config.batch_norm else 1e-3,
                                   err_msg=str(config))
        np.testing.assert_allclose(gpu_h.val_accuracy, cpu_h.val_accuracy, atol=2 / data.n_val + 1e-6,
                                   err_msg=str(config))
        assert {p.device.type for p in gpu_model.parameters()} == {"cuda"}, config
        assert {p.device.type for p in cpu_model.parameters()} == {"cpu"}, config
        with torch.no_grad():   # the member models as export gets them, on the rows of their device
            on_gpu = gpu_model(X_val.cuda()).cpu().numpy()
            on_cpu = cpu_model(X_val).numpy()
        if config.batch_norm:   # the running mean carries that bias: the same predictions, nearly
            assert (on_gpu.argmax(1) == on_cpu.argmax(1)).mean() >= 0.95, config
        else:
            np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-2, err_msg=str(config))


def test_every_tensor_of_a_cuda_population_lives_on_cuda(data):
    pop = Population(device="cuda", seed=0)
    ids = [pop.add(TrialConfig(n_layers=2, width=32, epochs=3, batch_size=64, dropout=0.2,
                               input_noise=0.1), data, seed=s) for s in range(3)]
    pop.run_epoch()
    assert pop.generator.device.type == "cuda"
    found = dict(cuda_tensors(pop._packed, set()))
    for m in pop._members:
        assert m.generator.device.type == "cuda"
        found.update({f".member{m.id}{path}": t for path, t in cuda_tensors(m, set())})
    assert len(found) > 20, sorted(found)   # the walk reached the stacks and the members' records
    on_cpu = sorted(path for path, t in found.items() if t.device.type != "cuda")
    assert not on_cpu, f"tensors left on the CPU: {on_cpu}"
    assert {p.device.type for p in pop.to_module(ids[0]).parameters()} == {"cuda"}


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_a_cuda_search_trains_on_cuda_and_says_so(cli, make_csv, tmp_path, device):
    """`--device cuda`, and `--device auto` on a machine with CUDA: every trial records
    device 'cuda', and the run allocated GPU memory (it ran in this process)."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.max_memory_allocated()
    result = cli("run", "--trials", 4, "--data", make_csv(), "--storage", url, "--study", "c",
                 "--device", device, *FAST)
    assert result.exit_code == 0, result.output
    assert "device cuda" in result.output, result.output
    trials = optuna.load_study(study_name="c", storage=open_storage(url)).trials
    assert len(trials) == 4
    assert {t.user_attrs.get(records.DEVICE) for t in trials} == {"cuda"}
    assert torch.cuda.max_memory_allocated() > before


@pytest.fixture(scope="module")
def cuda_export(tmp_path_factory):
    """`gsearch run --device cuda` then `gsearch export-best --device cuda`, once per module."""
    from click.testing import CliRunner

    from gsearch.cli import main

    root = tmp_path_factory.mktemp("cuda-export")
    csv = root / "f.csv"
    synthetic_frame(tracks_per_class=30, seed=1).to_csv(csv, index=False)
    url = f"sqlite:///{root / 's.db'}"
    runner = CliRunner()
    run = runner.invoke(main, ["run", "--trials", "6", "--data", str(csv), "--storage", url, "--study", "e",
                               "--device", "cuda", *FAST], catch_exceptions=False)
    assert run.exit_code == 0, run.output
    export = runner.invoke(main, ["export-best", "--storage", url, "--study", "e", "--out", str(root / "export"),
                                  "--device", "cuda", "--ensemble", "3"], catch_exceptions=False)
    assert export.exit_code == 0, export.output
    return root, csv, url


def test_export_of_a_cuda_study_writes_a_model(cuda_export):
    root, _, url = cuda_export
    trials = optuna.load_study(study_name="e", storage=open_storage(url)).trials
    assert {t.user_attrs.get(records.DEVICE) for t in trials} == {"cuda"}
    meta = json.loads((root / "export" / "model.json").read_text())
    assert 0.0 <= meta["test_accuracy"] <= 1.0
    assert len(meta["members"]) == 3
    for name in ("model.pt", "model.onnx"):
        assert (root / "export" / name).is_file(), name
    # saved from CUDA, loadable on a machine without it: every tensor in model.pt is a CPU tensor
    state = torch.load(root / "export" / "model.pt", map_location=None, weights_only=True)
    assert {t.device.type for t in state.values()} == {"cpu"}


def test_a_cuda_trained_export_predicts_with_the_torch_backend(cli, cuda_export):
    """predict --backend torch runs on the CPU (it has no --device); it must agree with the
    ONNX model on every row."""
    root, csv, _ = cuda_export
    rows = {}
    for backend in ("torch", "onnx"):
        result = cli("predict", "--model", root / "export", csv, "--json", "--backend", backend)
        assert result.exit_code == 0, result.output
        rows[backend] = json.loads(result.output)
    assert len(rows["torch"]) == len(synthetic_frame(tracks_per_class=30, seed=1))
    assert [r["genre"] for r in rows["torch"]] == [r["genre"] for r in rows["onnx"]]
    for t, o in zip(rows["torch"], rows["onnx"]):
        np.testing.assert_allclose([t["probabilities"][g] for g in sorted(t["probabilities"])],
                                   [o["probabilities"][g] for g in sorted(o["probabilities"])], atol=1e-4)


def test_two_workers_share_one_gpu(cli, make_csv, tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    result = cli("run", "--trials", 8, "--data", make_csv(), "--storage", url, "--study", "w",
                 "--workers", 2, "--population", 2, "--device", "cuda", *FAST)
    assert result.exit_code == 0, result.output
    trials = optuna.load_study(study_name="w", storage=open_storage(url)).trials
    finished = [t for t in trials if t.state.is_finished()]
    assert len(finished) == 8 and all(t.state == optuna.trial.TrialState.COMPLETE for t in finished)
    assert {t.user_attrs.get(records.DEVICE) for t in trials} == {"cuda"}
    assert len({t.system_attrs.get(records.WORKER) for t in trials}) == 2, "both workers ran trials"
