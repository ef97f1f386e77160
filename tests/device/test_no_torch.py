"""The agent imports and classifies with torch (and the host package) unimportable."""

from __future__ import annotations

import json
import subprocess
import sys

CODE = r"""
import sys
sys.modules["torch"] = None      # `import torch` now raises ImportError
sys.modules["edgectl"] = None
import json, pathlib
import edge_agent.cli, edge_agent.service, edge_agent.bench, edge_agent.camera.replay
from edge_agent.classifier import Classifier
sys.path.insert(0, sys.argv[2])
from devicekit import frame
c = Classifier.load(sys.argv[1])
red = c.classify(frame("red")).probs.argmax()
green = c.classify(frame("green")).probs.argmax()
rc = edge_agent.cli.main(["run", "--config", sys.argv[3], "--max-items", "5", "--json"])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "edgectl")
                and sys.modules[m] is not None)
print(json.dumps({"red": c.labels[red], "green": c.labels[green], "rc": rc, "loaded": loaded}))
"""


def test_agent_runs_without_torch(tiny_bundle, sim_config):
    from pathlib import Path

    here = str(Path(__file__).parent)
    out = subprocess.run(
        [sys.executable, "-c", CODE, str(tiny_bundle), here, str(sim_config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"red": "scratch", "green": "ok", "rc": 0, "loaded": []}
