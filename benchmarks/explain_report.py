"""What an explanation costs beyond classifying, on a large class set, measured in one run.

    python benchmarks/explain_report.py [--classes 20000] [--views 50] [--descriptions 50]
                                        [--model tiny|ViT-B-32] [--repeat 3]

One photo (awt/data/examples/astronaut.jpg) is classified (``clf.classify``) and explained
(``clf.explain`` + ``write_report``), in turns, ``repeat`` times after a warm-up, on a model with random
weights. The class set's prompt embeddings are random unit vectors of the model's width, handed to
the classifier as already encoded (encoding a million prompts on a CPU would take the whole run);
the scorer's work depends on their shape (classes x 1 + M prompts), not on their values. Printed:
the median times, explain's excess over classify and their ratio, and the report's size in bytes
(top-k classes only, so it does not grow with the class set).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PHOTO = REPO / "awt" / "data" / "examples" / "astronaut.jpg"

TINY = {"model_cfg": {"embed_dim": 64, "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16,
                                                      "head_width": 32},
                      "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}},
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                           "interpolation": "bicubic", "resize_mode": "shortest"}}


def in_turns(calls: dict, repeat: int) -> dict[str, tuple[float, object]]:
    """Each call's median time over ``repeat`` rounds, the calls timed in turns within each round (a busy
    spell of a shared machine then hits them alike), after one warm-up round (loader pool, buffers)."""
    for fn in calls.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    last = {}
    for _ in range(repeat):
        for name, fn in calls.items():
            t = time.perf_counter()
            last[name] = fn()
            times[name].append(time.perf_counter() - t)
    return {name: (statistics.median(times[name]), last[name]) for name in calls}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, default=20000)
    p.add_argument("--views", type=int, default=50)
    p.add_argument("--descriptions", type=int, default=50)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--model", default="tiny", help="tiny (a 2-layer ViT, width 64) or an open_clip name")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()

    from awt import AWTClassifier, ClassifierSpec
    from awt.backbones import create_backbone
    from awt.explain import write_report
    from awt.methods import get_method
    from awt.prompts import ClassPrompts

    work = Path(tempfile.mkdtemp(prefix="awt-explain-bench-"))
    model = args.model
    if model == "tiny":
        (work / "tiny").mkdir()
        (work / "tiny" / "open_clip_config.json").write_text(json.dumps(TINY))
        model = f"local-dir:{work / 'tiny'}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backbone = create_backbone(model, "none", device="cpu")
    c, m = args.classes, args.descriptions
    names = [f"class {i}" for i in range(c)]
    descriptions = [[f"Sentence {j} about class {i}." for j in range(m)] for i in range(c)]
    spec = ClassifierSpec(names, descriptions=descriptions, descriptions_per_class=m, views=args.views, cache_dir=None)
    generator = torch.Generator().manual_seed(0)
    dim = backbone.encode_texts(["a photo"]).shape[-1]
    features = torch.nn.functional.normalize(torch.randn(c, 1 + m, dim, generator=generator), dim=-1)
    prompts = spec.prompts(get_method("awt").prompts)
    clf = AWTClassifier(backbone, spec, classes=ClassPrompts(names, prompts, features, None))

    out = work / "report.html"
    timed = in_turns({"classify": lambda: clf.classify([str(PHOTO)], top_k=args.top_k, num_workers=0),
                      "explain": lambda: write_report(clf.explain(str(PHOTO), top_k=args.top_k), out)}, args.repeat)
    (classify_s, results), (explain_s, size) = timed["classify"], timed["explain"]
    ex = clf.explain(str(PHOTO), top_k=args.top_k)
    same = [x.index for x in ex.classes] == [x.index for x in results[0].predictions]
    json_bytes = len(json.dumps(ex.to_json()).encode())
    print(f"{backbone.name if args.model != 'tiny' else 'tiny'} on the CPU ({torch.get_num_threads()} threads), "
          f"{c} classes, {args.views + 1} views x {m + 1} prompts, top-{args.top_k}, median of {args.repeat}")
    print(f"classify     {classify_s:8.3f} s")
    print(f"explain      {explain_s:8.3f} s   (explain + report: +{explain_s - classify_s:.3f} s beyond classify, "
          f"{explain_s / classify_s:.2f}x)")
    print(f"report       {size:8d} bytes   (JSON {json_bytes} bytes; same top-{args.top_k} as classify: {same})")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
