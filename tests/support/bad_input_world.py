"""The files the bad-input cases read (tests/support/bad_input_cases.py), made once under one folder: a tiny
open_clip model and damaged copies of it (checkpoints empty, truncated, of another architecture, with
NaN weights; configs with wrong keys), a tiny transformers CLIP without its tokenizer or weights,
odd image files (truncated, an EPS renamed .jpg, a FIFO, a JPEG with corrupt EXIF), small bench
datasets, and small filesystems (tmpfs with a size limit, full or read-only) mounted on demand.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "awt" / "data" / "examples"
TINY = {
    "model_cfg": {"embed_dim": 64,
                  "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}},
    "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                       "interpolation": "bicubic", "resize_mode": "shortest"},
}
CLASSES = ["astronaut", "cat", "cup of coffee", "rocket"]
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n"


# -- the world the cases run in ----------------------------------------------------------------------

class World:
    """Every file the cases read, made once under ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self.mounts: list[Path] = []
        self.mount_error: str | None = None
        # every command runs without the Hugging Face Hub: an empty cache, an endpoint that refuses
        # connections (a closed port); set before any process imports the hub client
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.hub_env = {"HF_HOME": str(root / "hf-home"), "HF_ENDPOINT": f"http://127.0.0.1:{port}"}

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def build(self) -> "World":
        import warnings

        with warnings.catch_warnings():   # PIL's, about the damaged files made here
            warnings.simplefilter("ignore")
            return self._build()

    def _build(self) -> "World":
        from PIL import Image

        r = self.root
        (r / "images").mkdir(parents=True)
        for stem in ("cat", "rocket", "coffee", "astronaut"):
            with Image.open(EXAMPLES / f"{stem}.jpg") as im:
                im.convert("RGB").resize((96, 72)).save(r / "images" / f"{stem}.jpg", quality=90)
        self.good = [str(r / "images" / "cat.jpg"), str(r / "images" / "rocket.jpg")]
        (r / "classes.txt").write_text("\n".join(CLASSES) + "\n")
        (r / "tiny").mkdir()
        (r / "tiny" / "open_clip_config.json").write_text(json.dumps(TINY))
        self.tiny = f"local-dir:{r / 'tiny'}"
        bad = r / "bad"
        bad.mkdir()
        data = (r / "images" / "cat.jpg").read_bytes()
        (bad / "truncated.jpg").write_bytes(data[: len(data) // 3])
        (bad / "eps-renamed.jpg").write_bytes(EPS)
        (bad / "text.jpg").write_text("not an image\n")
        os.mkfifo(bad / "fifo.jpg")
        (bad / "empty.png").write_bytes(b"")
        os.symlink(bad / "loop.jpg", bad / "loop.jpg")
        self._exif_warning(bad / "corrupt-exif.jpg")
        self.tiff_error = self._tiff_warning(bad / "damaged.tif")
        self._checkpoints()
        self._hf()
        self._bench()
        from support.bad_input_videos import make_videos

        make_videos(r / "videos")
        return self

    def _exif_warning(self, path: Path) -> None:
        """A JPEG whose EXIF block is cut short: PIL warns (``Corrupt EXIF data``) while reading it."""
        from PIL import Image

        exif = Image.Exif()
        exif[0x010F] = "maker" * 20
        exif[0x0112] = 1
        buf = io.BytesIO()
        Image.open(self.good[0]).save(buf, "JPEG", exif=exif.tobytes())
        raw = bytearray(buf.getvalue())
        at = raw.find(b"Exif\x00\x00") + 6
        # the first IFD claims one more entry than it has: the last one reads past the block
        count = int.from_bytes(raw[at + 8 : at + 10], "little" if raw[at : at + 2] == b"II" else "big")
        raw[at + 8 : at + 10] = (count + 40).to_bytes(2, "little" if raw[at : at + 2] == b"II" else "big")
        path.write_bytes(bytes(raw))

    def _tiff_warning(self, path: Path) -> str | None:
        """A TIFF with a few bytes changed such that it still decodes, and libtiff (or the JPEG codec
        inside it) writes a warning to stderr meanwhile: the first of a few hundred seeded damages
        that does. None, or why there is none."""
        import random
        import tempfile

        from PIL import Image

        photo = Image.open(self.good[0]).convert("RGB").resize((40, 30))
        for compression in ("jpeg", "tiff_lzw"):
            buf = io.BytesIO()
            photo.save(buf, "TIFF", compression=compression)
            data = buf.getvalue()
            for seed in range(400):
                rng, damaged = random.Random(seed), bytearray(data)
                for _ in range(1 + seed % 3):
                    damaged[rng.randrange(8, len(data))] = rng.randrange(256)
                with tempfile.TemporaryFile() as capture:
                    saved = os.dup(2)
                    os.dup2(capture.fileno(), 2)
                    try:
                        Image.open(io.BytesIO(bytes(damaged))).load()
                        decoded = True
                    except Exception:
                        decoded = False
                    finally:
                        os.dup2(saved, 2)
                        os.close(saved)
                    capture.seek(0)
                    said = capture.read().strip()
                if decoded and said:
                    path.write_bytes(bytes(damaged))
                    return None
        return "no damaged TIFF made libtiff warn and still decode (a libtiff that says nothing?)"

    def _checkpoints(self) -> None:
        import warnings

        import open_clip
        import torch
        from safetensors.torch import save_file

        r = self.root
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = open_clip.create_model(self.tiny)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        torch.save(state, r / "tiny-state.pt")
        (r / "zero.pt").write_bytes(b"")
        (r / "not-a-checkpoint.pt").write_text("these are not weights\n")
        for name, cfg in (("wrong-keys", {"model_cfg": {"embed_dim": 64, "vision_cfg": {"image_size": 64, "widht": 64}},
                                          "preprocess_cfg": TINY["preprocess_cfg"]}),
                          ("no-model-cfg", {"embed_dim": 64})):
            (r / name).mkdir()
            (r / name / "open_clip_config.json").write_text(json.dumps(cfg))
        (r / "not-json").mkdir()
        (r / "not-json" / "open_clip_config.json").write_text("{model_cfg: [")
        for name in ("truncated-local", "nan-local", "pt-local"):
            shutil.copytree(r / "tiny", r / name)
        save_file(state, str(r / "truncated-local" / "open_clip_model.safetensors"))
        whole = (r / "truncated-local" / "open_clip_model.safetensors").read_bytes()
        (r / "truncated-local" / "open_clip_model.safetensors").write_bytes(whole[: len(whole) // 2])
        nan = dict(state)
        nan["visual.proj"] = torch.full_like(state["visual.proj"], float("nan"))
        save_file(nan, str(r / "nan-local" / "open_clip_model.safetensors"))
        torch.save(state, r / "pt-local" / "model.pt")   # open_clip reads .safetensors, .bin, .pth only

    def _hf(self) -> None:
        r = self.root
        try:
            from support.hf_models import build
        except ImportError:
            self.hf_error = "tests/support/hf_models.py not importable"
            return
        self.hf_error = None
        with contextlib.redirect_stderr(io.StringIO()):
            build("clip", r / "hf-clip")
        tokenizer_files = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")
        for name, drop in (("hf-no-tokenizer", tokenizer_files), ("hf-no-weights", ("model.safetensors",)),
                           ("hf-unk-tokenizer", ("tokenizer.json",)), ("hf-truncated", ()), ("hf-bad-config", ())):
            shutil.copytree(r / "hf-clip", r / name, ignore=shutil.ignore_patterns(*drop))
        # every text one unknown token: a word-level vocabulary that knows nothing
        (r / "hf-unk-tokenizer" / "tokenizer.json").write_text(json.dumps({
            "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
            "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
            "model": {"type": "WordLevel", "vocab": {"<|endoftext|>": 0, "<|startoftext|>": 1}, "unk_token": "<|endoftext|>"}}))
        weights = r / "hf-truncated" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:4096])
        (r / "hf-bad-config" / "config.json").write_text('{"model_type": "clip", ')

    def _bench(self) -> None:
        r = self.root
        ds = r / "dataset"
        ds.mkdir()
        rows = [(f"{stem}.jpg", i) for i, stem in enumerate(["astronaut", "cat", "coffee", "rocket"])]
        for name, _ in rows:
            shutil.copy(r / "images" / name, ds / name)
        (ds / "broken.jpg").write_bytes((ds / "cat.jpg").read_bytes()[:300])
        with open(ds / "labels.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "classname"])
            for name, label in rows + [("broken.jpg", 1)]:
                w.writerow([name, label, CLASSES[label]])
        dead = r / "dead-dataset"
        dead.mkdir()
        for i in range(2):
            (dead / f"x{i}.jpg").write_text("no image here")
        with open(dead / "labels.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "classname"])
            w.writerows([["x0.jpg", 0, CLASSES[0]], ["x1.jpg", 1, CLASSES[1]]])

    def bench_config(self, name: str, awt: dict | None = None, dataset: str = "dataset", extra: str = "",
                     model: str | None = None) -> Path:
        """A small bench config (tiny model, awt and clip, N = 2, M = 0) with ``awt`` settings."""
        import yaml

        doc = {"name": name, "methods": ["awt", "clip"],
               "settings": {"views": 2, "descriptions_per_class": 0, "batch_size": 8, "workers": 0, "device": "cpu"},
               "backbones": [{"name": "tiny", "model": model or self.tiny}],
               "datasets": [{"name": dataset.replace("-", "_"), "path": str(self.root / dataset)}]}
        if awt is not None:
            doc["settings"]["awt"] = awt
        path = self.root / "configs" / f"{name}.yaml"
        path.parent.mkdir(exist_ok=True)
        text = yaml.safe_dump(doc, sort_keys=False)
        for key, value in (awt or {}).items():   # YAML spellings (.nan, .inf) written as a user would
            if isinstance(value, str) and value.startswith("!raw "):
                text = text.replace(f"{key}: '{value}'", f"{key}: {value[5:]}").replace(f"{key}: {value}", f"{key}: {value[5:]}")
        path.write_text(text + extra)
        return path

    # -- small filesystems ---------------------------------------------------------------------------

    def mount(self, name: str, size_kb: int, read_only: bool = False, fill: bool = False) -> Path | None:
        """A tmpfs of ``size_kb`` at ``root/name`` (read-only, or filled to the last byte); None when
        mounting is not permitted (``mount_error`` says why)."""
        target = self.root / name
        if target.is_dir() and target in self.mounts:
            return target
        target.mkdir(exist_ok=True)
        options = f"size={size_kb}k" + (",ro" if read_only else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True, text=True)
        if r.returncode != 0:
            self.mount_error = (r.stderr.strip() or f"mount exited {r.returncode}").splitlines()[0]
            return None
        self.mounts.append(target)
        if fill:
            fill_up(target / "filler")
        return target

    def unmount_all(self) -> None:
        for target in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(target)], capture_output=True)
        self.mounts.clear()


def fill_up(path: Path) -> None:
    """Write zeros to ``path`` until its filesystem is full."""
    with open(path, "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 1024)
