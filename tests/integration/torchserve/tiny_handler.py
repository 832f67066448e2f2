"""TorchServe handler of the tests' tiny model: a torch.nn.Linear(3, 2) whose weights come from
the archive's tiny.pt, and whose initialize() first sleeps the archive's tiny.json "load_seconds"
(a model that takes that long to load, as a large one does). It scores `{"data": [x1, x2, x3]}`
(or a list of rows) with the real module; a request without a body (a GET, as a readiness probe
sends) answers that the model is loaded: TorchServe only hands a request to a worker whose model
has loaded, so it answers only then."""
import json
import os
import time

import torch


class TinyLinearHandler:
    def __init__(self):
        self.model = None
        self.name = ""
        self.initialized = False

    def initialize(self, context):
        model_dir = context.system_properties["model_dir"]
        with open(os.path.join(model_dir, "tiny.json")) as handle:
            settings = json.load(handle)
        time.sleep(float(settings.get("load_seconds", 0)))
        model = torch.nn.Linear(3, 2)
        model.load_state_dict(torch.load(os.path.join(model_dir, "tiny.pt"), weights_only=True))
        self.model = model.eval()
        self.name = context.manifest["model"]["modelName"]
        self.initialized = True

    def handle(self, data, context):
        answers = []
        for item in data:
            body = item.get("body") if item.get("body") is not None else item.get("data")
            if isinstance(body, (bytes, bytearray)):
                body = json.loads(body) if body.strip() else None
            if not body:
                answers.append({"model": self.name, "ready": True})
                continue
            rows = body["data"] if isinstance(body["data"][0], list) else [body["data"]]
            with torch.no_grad():
                outputs = self.model(torch.tensor(rows, dtype=torch.float32))
            answers.append({"model": self.name, "predictions": outputs.tolist()})
        return answers
