"""How the command line spells each library setting, for the hints that errors carry (:mod:`awt.errors`)."""

FLAGS = {
    "classes": "--classes", "descriptions": "--descriptions", "template": "--template", "views": "--views",
    "descriptions_per_class": "--descriptions-per-class", "allow_fewer_descriptions": "--allow-fewer-descriptions",
    "model": "--model", "pretrained": "--pretrained", "device": "--device", "precision": "--precision",
    "seed": "--seed", "method": "--method", "cache_dir": "--cache-dir", "no_cache": "--no-cache",
    "max_pixels": "--max-pixels", "batch_size": "--batch-size", "workers": "--workers",
    # awt explain
    "top_k": "--top-k", "png": "--png", "json": "--json",
    # awt describe
    "llm": "--llm", "base_url": "--base-url", "out": "--out", "questions": "--questions", "per_class": "--per-class",
    "num_questions": "--num-questions", "concurrency": "--concurrency", "timeout": "--timeout",
    "max_attempts": "--max-attempts", "max_requests": "--max-requests", "backoff": "--backoff",
}
