"""Tiny randomly initialised transformers dual encoders of every supported family, built offline
from their configs with small tokenizers made here, written with ``save_pretrained`` to a folder:
loaded by path, they take the code path a Hub model takes."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import torch

CORPUS = (
    "a photo of a cat. a photo of a dog, which is a type of pet. a blurry photo of the airplane. "
    "a rendition of a red car on the road. a bird with a long beak sitting on a branch. "
    "satellite photo of the forest and the river. food on a plate, a type of food. "
    "a person doing yoga in the park. texture of wood, or a type of pattern. flower with white petals."
).split(". ")
WORDS = sorted({w.strip(",.").lower() for line in CORPUS for w in line.split()} - {""})
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
FAMILIES = ("clip", "siglip", "siglip2-fixed", "siglip2", "align", "altclip", "chinese_clip", "blip", "blip-itr",
            "metaclip_2")


def clip_bpe() -> tuple[dict[str, int], list[str]]:
    """CLIP's own vocabulary and merges, from the BPE file that open_clip ships (what its tokenizer reads)."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return {v: i for i, v in enumerate(vocab)}, merges


def bert_vocab() -> list[str]:
    chars = sorted({c for w in WORDS for c in w})
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]", ".", ","] + WORDS + chars + ["##" + c for c in chars]
    return list(dict.fromkeys(tokens))   # "a" is a word and a character: one id


def unigram_vocab(specials: list[str]) -> list[tuple[str, float]]:
    chars = sorted({c for w in WORDS for c in w})
    pieces = [(s, 0.0) for s in specials] + [("\u2581" + w, -2.0) for w in WORDS] + [("\u2581", -3.0), (".", -3.0), (",", -3.0)] \
        + [(c, -5.0) for c in chars]
    return list({p: (p, score) for p, score in reversed(pieces)}.values())[::-1]


def sentencepiece_model() -> bytes:
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS * 4), model_writer=out, vocab_size=60,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   character_coverage=1.0, minloglevel=2)
    return out.getvalue()


def build(family: str, folder: Path, seed: int = 0) -> Path:
    """Write a tiny model of ``family`` (see FAMILIES) to ``folder``; returns it."""
    import transformers as t

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vision = dict(TEXT, image_size=32, patch_size=16)
    if family == "clip":
        vocab, merges = clip_bpe()
        tok = t.CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges])
        cfg = t.CLIPConfig(text_config=dict(TEXT, vocab_size=len(vocab), max_position_embeddings=77, bos_token_id=49406,
                                            eos_token_id=49407), vision_config=vision, projection_dim=32)
        ip = t.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        proc, model = t.CLIPProcessor(image_processor=ip, tokenizer=tok), t.CLIPModel(cfg)
    elif family == "metaclip_2":
        tok = t.XLMRobertaTokenizer(vocab=unigram_vocab(["<s>", "<pad>", "</s>", "<unk>", "<mask>"]))
        cfg = t.MetaClip2Config(text_config=dict(TEXT, vocab_size=len(tok), max_position_embeddings=77, bos_token_id=0,
                                                 eos_token_id=2, pad_token_id=1), vision_config=vision, projection_dim=32)
        ip = t.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        proc, model = t.CLIPProcessor(image_processor=ip, tokenizer=tok), t.MetaClip2Model(cfg)
    elif family in ("siglip", "siglip2-fixed"):
        if family == "siglip":
            (folder / "spiece.model").write_bytes(sentencepiece_model())
            tok = t.SiglipTokenizer(vocab_file=str(folder / "spiece.model"), model_max_length=16)
        else:   # SigLIP 2 at a fixed resolution: a SigLIP model with a Gemma tokenizer
            tok = t.GemmaTokenizer(vocab={"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4,
                                          **{c: 5 + i for i, c in enumerate(sorted({c for w in WORDS for c in w} | {"\u2581", ".", ","}))}},
                                   merges=[], model_max_length=16)
        cfg = t.SiglipConfig(text_config=dict(TEXT, vocab_size=len(tok), max_position_embeddings=16), vision_config=vision)
        ip = t.SiglipImageProcessor(size={"height": 32, "width": 32})
        proc, model = t.SiglipProcessor(image_processor=ip, tokenizer=tok), t.SiglipModel(cfg)
    elif family == "siglip2":   # NaFlex
        tok = t.Siglip2Tokenizer(vocab={"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4,
                                        **{c: 5 + i for i, c in enumerate(sorted({c for w in WORDS for c in w} | {"\u2581", ".", ","}))}},
                                 merges=[], model_max_length=16)
        # Siglip2Processor passes its own patch_size 16 and max_num_patches 256 to the image processor
        v2 = dict(TEXT, patch_size=16, num_patches=256)
        cfg = t.Siglip2Config(text_config=dict(TEXT, vocab_size=len(tok), max_position_embeddings=16), vision_config=v2)
        ip = t.Siglip2ImageProcessor(patch_size=16, max_num_patches=256)
        proc, model = t.Siglip2Processor(image_processor=ip, tokenizer=tok), t.Siglip2Model(cfg)
    elif family == "align":
        tok = t.BertTokenizer(vocab={w: i for i, w in enumerate(bert_vocab())}, model_max_length=24)
        cfg = t.AlignConfig(text_config=dict(TEXT, vocab_size=len(tok), max_position_embeddings=32),
                            vision_config=dict(image_size=36, width_coefficient=0.1, depth_coefficient=0.1, initializer_range=0.5,  # features neither vanish nor explode
                                               
                                               hidden_dim=64), projection_dim=32)
        ip = t.EfficientNetImageProcessor(size={"height": 36, "width": 36}, crop_size={"height": 32, "width": 32},
                                          do_center_crop=True, rescale_factor=1 / 127.5, rescale_offset=True,
                                          do_normalize=False, include_top=False)
        proc, model = t.AlignProcessor(image_processor=ip, tokenizer=tok), t.AlignModel(cfg)
    elif family == "altclip":
        tok = t.XLMRobertaTokenizer(vocab=unigram_vocab(["<s>", "<pad>", "</s>", "<unk>", "<mask>"]))
        cfg = t.AltCLIPConfig(text_config=dict(TEXT, vocab_size=len(tok), max_position_embeddings=40, project_dim=32,
                                               pad_token_id=1), vision_config=vision, projection_dim=32)
        ip = t.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        proc, model = t.AltCLIPProcessor(image_processor=ip, tokenizer=tok), t.AltCLIPModel(cfg)
    elif family == "chinese_clip":
        tok = t.BertTokenizer(vocab={w: i for i, w in enumerate(bert_vocab())}, model_max_length=24)
        cfg = t.ChineseCLIPConfig(text_config=dict(TEXT, vocab_size=len(tok), max_position_embeddings=32),
                                  vision_config=vision, projection_dim=32)
        ip = t.ChineseCLIPImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32})
        proc, model = t.ChineseCLIPProcessor(image_processor=ip, tokenizer=tok), t.ChineseCLIPModel(cfg)
    elif family in ("blip", "blip-itr"):
        tok = t.BertTokenizer(vocab={w: i for i, w in enumerate(bert_vocab())}, model_max_length=24, bos_token="[DEC]")
        cfg = t.BlipConfig(text_config=dict(TEXT, vocab_size=len(tok), max_position_embeddings=32),
                           vision_config=dict(TEXT, image_size=32, patch_size=16), projection_dim=32, image_text_hidden_size=32)
        ip = t.BlipImageProcessor(size={"height": 32, "width": 32})
        model = t.BlipForImageTextRetrieval(cfg) if family == "blip-itr" else t.BlipModel(cfg)
        proc = t.BlipProcessor(image_processor=ip, tokenizer=tok)
    else:
        raise ValueError(family)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder
