"""Data-parallel training: 2 gloo processes under torchrun follow the single-process loss curve."""

import json
import os
import subprocess
import sys
import textwrap

import torch

from reftx_lib.train.trainer import train

SETUP = """
import random
import torch
from reftx_lib import ReferenceTransformer
from reftx_lib.train.trainer import TrainConfig

def rows(n, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        src = [rng.randrange(4, 40) for _ in range(rng.randrange(3, 12))]
        out.append(src + [3] + src + [2])
    return out

def model():
    torch.manual_seed(0)  # dropout 0: the ranks' random streams must not matter
    return ReferenceTransformer(vocab_size=40, d_model=32, n_layers=1, n_heads=2, d_ff=64, dropout=0.0)

CONFIG = TrainConfig(max_steps=8, lr=3e-3, warmup_steps=2, batch_tokens=300, eval_every=4, eval_batches=2,
                     progress=False, device="cpu")
"""

WORKER = (
    SETUP
    + """
import json, sys
import torch.distributed as dist
from reftx_lib.train.trainer import init_distributed, train

rank, world = init_distributed()
data = rows(80)
history = train(model(), data[:70], data[70:], CONFIG)
if rank == 0:
    json.dump({"world": world, "losses": [r["train_loss"] for r in history],
               "val": [r["val_loss"] for r in history.evals()]}, open(sys.argv[1], "w"))
dist.destroy_process_group()
"""
)


def test_two_process_ddp_matches_single_process(tmp_path):
    script, out = tmp_path / "worker.py", tmp_path / "ddp.json"
    script.write_text(textwrap.dedent(WORKER))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        str(script),
        str(out),
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads(out.read_text())
    assert ddp["world"] == 2

    namespace: dict = {}
    exec(textwrap.dedent(SETUP), namespace)
    data = namespace["rows"](80)
    single = train(namespace["model"](), data[:70], data[70:], namespace["CONFIG"])
    assert len(ddp["losses"]) == len(single) == 8
    torch.testing.assert_close(
        torch.tensor(ddp["losses"]), torch.tensor([r["train_loss"] for r in single]), rtol=1e-4, atol=1e-5
    )
    torch.testing.assert_close(
        torch.tensor(ddp["val"]), torch.tensor([r["val_loss"] for r in single.evals()]), rtol=1e-4, atol=1e-5
    )
