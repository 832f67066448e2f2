"""Run inside reconciler/torchserve: writes one TorchServe archive per variant given as
DIR/NAME:BIAS1,BIAS2:LOAD_SECONDS as DIR/NAME.mar under the export directory (argv[1]). The weights are set, not drawn:
W = [[1, 2, 3], [0, 1, -1]], so {"data": [1, 2, 3]} scores [14 + b1, -1 + b2] exactly."""
import json
import os
import subprocess
import sys
import tempfile

import torch

WEIGHT = [[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]]
HANDLER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_handler.py")


def archive(export: str, spec: str) -> None:
    where, bias, load_seconds = spec.split(":")
    folder, _, name = where.rpartition("/")
    export = os.path.join(export, folder)
    os.makedirs(export, exist_ok=True)
    work = tempfile.mkdtemp()
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor(WEIGHT))
        model.bias.copy_(torch.tensor([float(b) for b in bias.split(",")]))
    torch.save(model.state_dict(), os.path.join(work, "tiny.pt"))
    with open(os.path.join(work, "tiny.json"), "w") as handle:
        json.dump({"load_seconds": float(load_seconds)}, handle)
    # One worker: TorchServe's default is one per core, each importing torch on a small machine.
    with open(os.path.join(work, "model-config.yaml"), "w") as handle:
        handle.write("minWorkers: 1\nmaxWorkers: 1\n")
    subprocess.run(["torch-model-archiver", "--model-name", name, "--version", "1.0",
                    "--serialized-file", os.path.join(work, "tiny.pt"), "--handler", HANDLER,
                    "--extra-files", os.path.join(work, "tiny.json"),
                    "--config-file", os.path.join(work, "model-config.yaml"), "--export-path", export, "--force"],
                   check=True)


if __name__ == "__main__":
    for variant in sys.argv[2:]:
        archive(sys.argv[1], variant)
