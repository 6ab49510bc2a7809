"""``awt models``: the models and pretrained weights that awt can load."""

from __future__ import annotations

import typer


def models(pretrained_only: bool = typer.Option(True, help="Only (model, tag) pairs with downloadable weights.")
           ) -> None:
    """List the open_clip models and pretrained tags that awt can load."""
    import open_clip

    if pretrained_only:
        for name, tag in open_clip.list_pretrained():
            print(f"{name}\t{tag}")
    else:
        print("\n".join(open_clip.list_models()))
