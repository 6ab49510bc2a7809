"""Command line: ``awt classify``, ``awt describe``, ``awt bench``, ``awt models``."""

from __future__ import annotations

import functools
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import typer

from .errors import AWTError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Training-free zero-shot image classification with AWT over open_clip models.")


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


def user_errors(fn):
    """Turn AWTError into one line on stderr and exit status 1; Ctrl-C into status 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        warnings.showwarning = _show_warning
        logging.basicConfig(level=logging.ERROR, format="%(levelname)s: %(message)s")
        try:
            return fn(*args, **kwargs)
        except AWTError as e:
            print(f"error: {e}", file=sys.stderr)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@user_errors
def classify(
    images: List[Path] = typer.Argument(..., help="Image files or directories (walked recursively)."),
    classes: Path = typer.Option(..., "--classes", help="Class names, one per line ('#' comments, blank lines ignored)."),
    descriptions: Optional[Path] = typer.Option(None, help="Descriptions JSON: {class: [sentences]} or an `awt describe` cache."),
    template: str = typer.Option("a photo of a {}", help="Prompt template; '{}' is the class name."),
    views: int = typer.Option(50, help="Random augmented views per image (N); view 0 is the plain centre crop."),
    descriptions_per_class: int = typer.Option(50, help="Descriptions used per class (M)."),
    allow_fewer_descriptions: bool = typer.Option(False, help="Use what a class has when it has fewer than M."),
    model: str = typer.Option("ViT-B-32", help="open_clip model: name, hf-hub:ORG/REPO or local-dir:PATH."),
    pretrained: str = typer.Option("openai", help="Pretrained tag, checkpoint file, or 'none' for random weights."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, ..."),
    precision: str = typer.Option("auto", help="auto (fp16 on GPU, fp32 on CPU), fp32, fp16, bf16, amp, amp_bf16."),
    batch_size: int = typer.Option(8, min=1, help="Images per batch (each with N+1 views)."),
    workers: Optional[int] = typer.Option(None, help="Image decoding processes (default: by CPU count)."),
    seed: int = typer.Option(0, help="Seed of the random views (with each image's pixels)."),
    top_k: int = typer.Option(5, min=1, help="Predictions shown per image."),
    method: str = typer.Option("awt", help="awt, clip, ensemble, awt-uniform, awt-image, awt-text."),
    json_lines: bool = typer.Option(False, "--json", help="JSON Lines on stdout, one object per image."),
    cache_dir: Optional[Path] = typer.Option(None, help="Embedding cache folder (default $AWT_CACHE_DIR or ~/.cache/awt)."),
    no_cache: bool = typer.Option(False, help="Do not read or write the embedding cache."),
) -> None:
    """Classify images zero-shot among the classes in --classes."""
    from .backbone import create_backbone
    from .classifier import METHODS, AWTClassifier
    from .images import find_images
    from .classes import read_class_file, warn_duplicates

    if method not in METHODS:
        raise AWTError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    names = read_class_file(classes)
    warn_duplicates(names, str(classes))
    desc = None
    if descriptions is not None:
        from .descriptions import load_descriptions
        desc = load_descriptions(descriptions)
    elif method not in ("clip",):
        print("note: no --descriptions given: using the template alone (M=0)", file=sys.stderr)
    paths = find_images([str(p) for p in images])
    if not paths:
        raise AWTError("no images found in " + ", ".join(map(str, images)))
    backbone = create_backbone(model, pretrained, device, precision, cache_dir=None)
    clf = AWTClassifier(
        backbone, names, template=template, descriptions=desc,
        descriptions_per_class=descriptions_per_class if desc is not None else 0,
        allow_fewer_descriptions=allow_fewer_descriptions, views=views, seed=seed,
        cache_dir=None if no_cache else (cache_dir or "default"),
    )
    failed = 0
    for result in clf.classify(paths, top_k=top_k, method=method, batch_size=batch_size, num_workers=workers):
        if result.error is not None:
            failed += 1
            print(f"error: {result.error}", file=sys.stderr)
            if json_lines:
                print(json.dumps({"image": result.image, "error": result.error}), flush=True)
            continue
        if json_lines:
            preds = [{"class": p.name, "index": p.index, "score": round(p.score, 4)} for p in result.predictions]
            print(json.dumps({"image": result.image, "predictions": preds}, ensure_ascii=False), flush=True)
        else:
            print(result.image)
            width = max(len(p.name) for p in result.predictions)
            for rank, p in enumerate(result.predictions, 1):
                print(f"  {rank:>2}. {p.name:<{width}}  {p.score:8.3f}")
    if failed:
        print(f"{failed} of {len(paths)} input(s) could not be read", file=sys.stderr)
        raise typer.Exit(1)


@app.command()
@user_errors
def models(pretrained_only: bool = typer.Option(True, help="Only (model, tag) pairs with downloadable weights.")) -> None:
    """List the open_clip models and pretrained tags that awt can load."""
    import open_clip

    if pretrained_only:
        for name, tag in open_clip.list_pretrained():
            print(f"{name}\t{tag}")
    else:
        print("\n".join(open_clip.list_models()))


def _register_subcommands() -> None:
    # Both modules import only typer at load time; their heavy imports happen when a command runs.
    from .bench.command import bench
    from .describe.command import describe

    app.command("describe")(user_errors(describe))
    app.command("bench")(user_errors(bench))


_register_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
