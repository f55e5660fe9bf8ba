"""Wall seconds of `gsearch predict` on 30-second clips, run as a user runs it (a new process).

It first trains a small model on features_30_sec.csv and exports it with
gsearch.models.export.save_model into a temporary folder (a few seconds), then times:

cold-first:       one clip, a new process, the first run on a new empty cache folder (the
                  features are numpy/scipy code: no compiled kernels are cached, so this
                  differs from the next line only by the operating system's file cache)
cold-warm-cache:  one clip, a new process, a later run
per further clip: (seconds for N clips - seconds for one clip) / (N - 1)
                  (N: the clips given, each copied --copies times into a temporary folder)

Each figure is the fastest of --repeat runs (cold-first: one run per repeat, each on a new empty
cache folder). Usage: python bench/bench_predict.py [--backend onnx|torch] [--clip PATH ...] [--copies K] [--repeat R]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "gtzan"
CLIPS = sorted((SHARED / "genres_original").rglob("*.wav")) + sorted((SHARED / "tempo_clips").rglob("*.wav"))


def export_model(out: Path) -> Path:
    """A small MLP trained on the real feature CSV, written like tests' real_export fixture."""
    import torch

    from gsearch.data.load import load_dataset
    from gsearch.data.schema import FEATURE_NAMES
    from gsearch.models.config import TrialConfig
    from gsearch.models.export import save_model
    from gsearch.models.manifest import ExportManifest
    from gsearch.models.population import TrainData, train

    torch.set_num_threads(1)
    ds = load_dataset(SHARED / "features_30_sec.csv")
    config = TrialConfig(n_layers=1, width=128, dropout=0.1, lr=3e-3, epochs=25)
    model, _ = train(config, TrainData(ds.X, ds.y, len(ds.classes)))
    save_model(model, ExportManifest(ds.classes, FEATURE_NAMES, (config,), clip_samples=ds.clip_samples), out)
    return out


def predict(model: Path, files, cache: str, backend: str) -> tuple[float, str]:
    """(wall seconds, stderr) of one `python -m gsearch predict` process."""
    cmd = [sys.executable, "-m", "gsearch", "predict", "--model", str(model),
           "--backend", backend, *map(str, files)]
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return wall, done.stderr


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["onnx", "torch"], default="onnx")
    ap.add_argument("--clip", action="append", help="a 30 s audio file (repeatable); default: the shared GTZAN clips")
    ap.add_argument("--copies", type=int, default=2, help="copies of each clip in the many-clips run")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each measurement (fastest shown)")
    a = ap.parse_args()
    clips = [Path(c) for c in a.clip or CLIPS]
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        model = export_model(tmp / "export")
        print(f"model trained and exported in {time.perf_counter() - t:.1f} s", flush=True)
        folder = tmp / "clips"
        folder.mkdir()
        for k in range(a.copies):  # copies under new names: temporary, never in the repository
            for clip in clips:
                shutil.copy(clip, folder / f"copy{k}_{clip.name}")
        many = sorted(folder.iterdir())
        cold, first_note = [], ""
        for r in range(a.repeat):
            wall, stderr = predict(model, clips[:1], str(tmp / f"numba-cache-{r}"), a.backend)
            cold.append(wall)
            first_note = first_note or stderr.strip()
        cache = str(tmp / "numba-cache-0")
        warm = [predict(model, clips[:1], cache, a.backend)[0] for _ in range(a.repeat)]
        batch = [predict(model, many, cache, a.backend)[0] for _ in range(a.repeat)]
    further = (min(batch) - min(warm)) / (len(many) - 1)
    print(f"gsearch predict --backend {a.backend}, clip {clips[0].name}, cpu count {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f} (wall seconds, fastest of {a.repeat})")
    print(f"cold-first       {min(cold):6.2f} s for one clip (new process, first run)")
    print(f"                 its stderr: {first_note or '(nothing)'}")
    print(f"cold-warm-cache  {min(warm):6.2f} s for one clip (new process, a later run)")
    print(f"many clips       {min(batch):6.2f} s for {len(many)} clips in one process")
    print(f"per further clip {further:6.2f} s")
