"""transformers backbones (``hf:``): every family's tiny random model, built offline and loaded by path
through the code path a Hub model takes; processor and feature parity; open_clip / transformers CLIP
parity on real images; ``awt classify`` and ``awt bench`` end to end."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

pytest.importorskip("transformers")
from support import hf_models  # noqa: E402

from awt.backbones import create_backbone  # noqa: E402
from awt.backbones.hf import _pooled  # noqa: E402
from awt.errors import AWTError  # noqa: E402

TEXTS = ["a photo of a Cat.", "A blurry photo of the airplane. It has wings, a long body and a tail.", "dog"]


def load(folder: Path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_backbone(f"hf:{folder}", kwargs.pop("pretrained", None), device="cpu", **kwargs)


@pytest.fixture(scope="module")
def image(labeled_images) -> Image.Image:
    with Image.open(labeled_images.rows[0][0]) as im:
        return im.convert("RGB")


@pytest.fixture(scope="module")
def built(tmp_path_factory, clip_pair):
    """family -> folder, built once per module (CLIP: the open_clip weights converted, below)."""
    cache: dict[str, Path] = {"clip": Path(clip_pair[1].name[len("hf:"):])}

    def get(family: str) -> Path:
        if family not in cache:
            cache[family] = hf_models.build(family, tmp_path_factory.mktemp(family.replace("_", "-")))
        return cache[family]
    return get


def reference(folder: Path, family: str, image: Image.Image, backbone):
    """The family's own processor and model on ``image`` and TEXTS: (view 0, image features, text features)."""
    import transformers as t

    processor = t.AutoProcessor.from_pretrained(folder)
    model = backbone.model
    if family == "siglip2":   # NaFlex keeps the aspect ratio: compare on a square image
        side = backbone.image_size[0]
        image = image.resize((side, side), Image.Resampling(int(processor.image_processor.resample)))
    pixels = processor(images=image, return_tensors="pt")
    texts = [s.lower() for s in TEXTS] if backbone.family.lower_case else TEXTS
    tokens = processor(text=texts, return_tensors="pt", truncation=True, max_length=backbone.max_length,
                       padding="max_length" if backbone.family.padding == "max_length" else True)
    with torch.no_grad():
        if family == "blip-itr":
            return image, pixels, tokens, None, None
        if backbone.family.attention_mask is False:   # SigLIP: input_ids alone, as it was trained
            tokens = {"input_ids": tokens["input_ids"]}
        img = _pooled(model.get_image_features(**pixels))
        txt = _pooled(model.get_text_features(**tokens))
    return image, pixels, tokens, img, txt


@pytest.mark.parametrize("family", [f for f in hf_models.FAMILIES if f != "clip"] + ["clip"])
def test_family_matches_its_own_processor_and_model(family, built, image):
    folder = built(family)
    bb = load(folder)
    assert bb.library == "transformers" and bb.fingerprint and bb.pretrained == "local"
    img, pixels, tokens, ref_image, ref_text = reference(folder, family, image, bb)
    view0 = bb.preprocess(img)
    assert tuple(view0.shape[-2:]) == bb.image_size
    if family == "siglip2":
        from awt.backbones.hf import unpatchify

        g = bb.image_size[0] // bb.patch
        assert pixels["spatial_shapes"][0].tolist() == [g, g]
        expected = unpatchify(pixels["pixel_values"][0], g, g, bb.patch)
    else:
        expected = pixels["pixel_values"][0]
    assert torch.equal(view0, expected.float())
    image_features = bb.encode_images(view0[None])
    text_features = bb.encode_texts(TEXTS)
    assert torch.allclose(image_features.norm(dim=-1), torch.ones(1)) and torch.allclose(text_features.norm(dim=-1), torch.ones(3))
    if family == "blip-itr":   # the contrastive head of BLIP's retrieval model: its own cosine matrix
        with torch.no_grad():
            own = bb.model(**pixels, input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                           use_itm_head=False).itm_score
        assert (image_features @ text_features.T - own).abs().max() < 1e-5
    else:
        assert (image_features - torch.nn.functional.normalize(ref_image, dim=-1)).abs().max() < 1e-5
        assert (text_features - torch.nn.functional.normalize(ref_text, dim=-1)).abs().max() < 1e-5
    # the crops' normalisation is the processor's own
    ip = __import__("transformers").AutoImageProcessor.from_pretrained(folder)
    if family == "align":   # rescaled to [-1, 1], not normalised
        assert bb.mean == pytest.approx((0.5,) * 3) and bb.std == pytest.approx((0.5,) * 3)
        assert bb.logit_scale == pytest.approx(1 / float(bb.model.temperature.detach()))
    else:
        assert bb.mean == pytest.approx(tuple(ip.image_mean), abs=1e-6) and bb.std == pytest.approx(tuple(ip.image_std), abs=1e-6)
    if family.startswith("siglip"):
        assert bb.logit_bias == pytest.approx(float(bb.model.logit_bias.detach())) and bb.family.padding == "max_length"
        assert bb._tokenize(["A Cat"])["input_ids"].shape[1] == bb.max_length
    else:
        assert bb.logit_bias is None


def test_padding_is_inert_where_masked(built):
    """Families padded to the longest prompt give the features of max_length padding (the authors' choice for ALIGN)."""
    bb = load(built("align"))
    longest = bb.encode_texts(TEXTS)
    tokens = bb.tokenizer(TEXTS, padding="max_length", truncation=True, max_length=bb.max_length, return_tensors="pt")
    with torch.no_grad():
        full = _pooled(bb.model.get_text_features(**tokens))
    assert (longest - torch.nn.functional.normalize(full, dim=-1)).abs().max() < 1e-5


def test_errors_are_one_line(built, tmp_path, monkeypatch):
    import transformers as t

    bert = tmp_path / "bert"
    t.BertModel(t.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).save_pretrained(bert)
    with pytest.raises(AWTError, match=r"BertModel is not a supported dual encoder; supported families: CLIP, SigLIP"):
        load(bert)
    with pytest.raises(AWTError, match="not found"):
        load(tmp_path / "missing")
    folder = built("siglip")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(AWTError, match=r"pip install 'awt\[hf\]'"):
        load(folder)


# -- open_clip and transformers, same CLIP weights ------------------------------------------------

def open_clip_to_hf(state: dict, layers: int) -> dict:
    """An open_clip CLIP state dict as transformers' CLIPModel's."""
    out = {"logit_scale": state["logit_scale"],
           "visual_projection.weight": state["visual.proj"].T, "text_projection.weight": state["text_projection"].T,
           "vision_model.embeddings.patch_embedding.weight": state["visual.conv1.weight"],
           "vision_model.embeddings.class_embedding": state["visual.class_embedding"],
           "vision_model.embeddings.position_embedding.weight": state["visual.positional_embedding"],
           "text_model.embeddings.token_embedding.weight": state["token_embedding.weight"],
           "text_model.embeddings.position_embedding.weight": state["positional_embedding"]}
    for src, dst in (("visual.ln_pre", "vision_model.pre_layrnorm"), ("visual.ln_post", "vision_model.post_layernorm"),
                     ("ln_final", "text_model.final_layer_norm")):
        for p in ("weight", "bias"):
            out[f"{dst}.{p}"] = state[f"{src}.{p}"]
    for tower, prefix in (("visual.transformer", "vision_model.encoder"), ("transformer", "text_model.encoder")):
        for i in range(layers):
            s, d = f"{tower}.resblocks.{i}", f"{prefix}.layers.{i}"
            for p in ("weight", "bias"):
                q, k, v = state[f"{s}.attn.in_proj_{p}"].chunk(3)
                out.update({f"{d}.self_attn.q_proj.{p}": q, f"{d}.self_attn.k_proj.{p}": k, f"{d}.self_attn.v_proj.{p}": v,
                            f"{d}.self_attn.out_proj.{p}": state[f"{s}.attn.out_proj.{p}"],
                            f"{d}.layer_norm1.{p}": state[f"{s}.ln_1.{p}"], f"{d}.layer_norm2.{p}": state[f"{s}.ln_2.{p}"],
                            f"{d}.mlp.fc1.{p}": state[f"{s}.mlp.c_fc.{p}"], f"{d}.mlp.fc2.{p}": state[f"{s}.mlp.c_proj.{p}"]})
    return out


@pytest.fixture(scope="module")
def clip_pair(tiny_backbone, tmp_path_factory):
    """The tiny open_clip model of conftest, and the same weights as a transformers CLIP folder."""
    import transformers as t
    from conftest import TINY_CONFIG

    mc, pc = TINY_CONFIG["model_cfg"], TINY_CONFIG["preprocess_cfg"]
    vc, tc = mc["vision_cfg"], mc["text_cfg"]
    vocab, merges = hf_models.clip_bpe()
    cfg = t.CLIPConfig(
        text_config=dict(vocab_size=tc["vocab_size"], hidden_size=tc["width"], intermediate_size=4 * tc["width"],
                         num_hidden_layers=tc["layers"], num_attention_heads=tc["heads"], hidden_act="gelu",
                         max_position_embeddings=tc["context_length"], bos_token_id=49406, eos_token_id=49407),
        vision_config=dict(image_size=vc["image_size"], patch_size=vc["patch_size"], hidden_size=vc["width"],
                           intermediate_size=4 * vc["width"], num_hidden_layers=vc["layers"],
                           num_attention_heads=vc["width"] // vc["head_width"], hidden_act="gelu"),
        projection_dim=mc["embed_dim"])
    model = t.CLIPModel(cfg)
    missing, unexpected = model.load_state_dict(open_clip_to_hf(tiny_backbone.model.state_dict(), vc["layers"]), strict=False)
    assert not unexpected and all("position_ids" in k for k in missing)
    folder = tmp_path_factory.mktemp("clip-from-open-clip")
    model.save_pretrained(folder)
    size = vc["image_size"]
    # open_clip resizes with PIL (bicubic): the PIL backend of CLIP's image processor does the same
    ip = t.CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                 image_mean=pc["mean"], image_std=pc["std"])
    t.CLIPProcessor(image_processor=ip, tokenizer=t.CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges])
                    ).save_pretrained(folder)
    return tiny_backbone, load(folder)


@pytest.mark.slow
def test_clip_open_clip_and_transformers_agree(clip_pair, labeled_images):
    from awt.classifier import AWTClassifier
    from awt.spec import ClassifierSpec
    from awt.descriptions import load_descriptions

    oc, hf = clip_pair
    assert oc.fingerprint != hf.fingerprint and (oc.library, hf.library) == ("open_clip", "transformers")
    assert hf.logit_scale == pytest.approx(oc.logit_scale) and hf.image_size == oc.image_size
    assert hf.mean == pytest.approx(oc.mean) and hf.std == pytest.approx(oc.std)
    rows = labeled_images.rows
    paths = [str(r[0]) for r in rows[::2]][:8]
    images = [Image.open(p).convert("RGB") for p in paths]
    pix_oc = torch.stack([oc.preprocess(im) for im in images])
    pix_hf = torch.stack([hf.preprocess(im) for im in images])
    # PIL bicubic both; the centre crop's offset rounds differently (torchvision rounds half a margin,
    # transformers floors it): an odd margin moves the crop by one pixel
    for a, b in zip(pix_oc, pix_hf):
        shifts = [(a - b).abs().max()] + [(x - y).abs().max() for x, y in (
            (a[:, :, 1:], b[:, :, :-1]), (a[:, :, :-1], b[:, :, 1:]), (a[:, 1:], b[:, :-1]), (a[:, :-1], b[:, 1:]))]
        assert min(shifts) < 0.03   # one 8-bit level (about 0.015 after normalisation)
    same_pixels = (oc.encode_images(pix_oc) - hf.encode_images(pix_oc)).abs().max()
    assert same_pixels < 1e-4
    prompts = [f"a photo of a {r[2]}." for r in rows[:50:5]] + TEXTS
    assert (oc.encode_texts(prompts) - hf.encode_texts(prompts)).abs().max() < 1e-4
    descriptions = load_descriptions(labeled_images.descriptions)
    names = list(descriptions.names)
    tops = []
    for bb in (oc, hf):
        clf = AWTClassifier(bb, ClassifierSpec(names, descriptions=descriptions, descriptions_per_class=5,
                                               views=8, cache_dir=None))
        tops.append([[p.index for p in r.predictions] for r in clf.classify(paths, top_k=5, num_workers=0)])
    assert tops[0] == tops[1]


# -- end to end ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_classify_and_bench_end_to_end(built, tmp_path, labeled_images):
    from support.bench_configs import quiet_run, write_config, write_small_csv
    from support.commands import run_awt

    folder = built("siglip")
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\nairplane\n")
    images = [str(r[0]) for r in labeled_images.rows[:2]]
    done = run_awt("classify", *images, "--classes", str(classes), "--model", f"hf:{folder}", "--views", "3",
                   "--json", "--device", "cpu", cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 2 and all(len(x["predictions"]) == 3 for x in lines)

    data = write_small_csv(labeled_images, tmp_path / "data")
    config = write_config(
        tmp_path / "hf.yaml", name="hf", methods=["clip", "awt"],
        settings={"views": 2, "descriptions_per_class": 2, "batch_size": 4, "workers": 0, "device": "cpu",
                  "cache_dir": str(tmp_path / "cache")},
        backbones=[{"name": "tiny-siglip", "model": f"hf:{folder}"}],
        datasets=[{"name": "cal4", "path": str(data.parent), "template": "a photo of a {}.",
                   "descriptions": str(labeled_images.descriptions)}])
    quiet_run(config, tmp_path / "out")
    records = [json.loads(p.read_text()) for p in (tmp_path / "out").rglob("*.json") if "runs" in p.parts or p.parent.name != "out"]
    records = [r for r in records if isinstance(r, dict) and r.get("format")]
    assert records and all(r["library"] == "transformers" and r["revision"] == "local" for r in records)
