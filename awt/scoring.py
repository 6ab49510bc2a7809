"""AWT image-to-class scores for a whole batch of images and every class at once.

Shapes follow the pipeline: image views (batch, views, dim), class prompts (classes, prompts, dim),
logits (batch, views, prompts, classes) with ``logit = s * cosine``. A SigLIP-style ``logit_bias``
shifts every class equally, so it is left out of the transport (and of the scores).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .errors import SettingError
from .transport import sinkhorn
from .weighting import image_weights, prompt_weights


@dataclass(frozen=True)
class AWTConfig:
    """The method's hyper-parameters; the defaults are the paper's."""

    image_temperature: float = 0.5
    text_temperature: float = 0.5
    epsilon: float = 0.1
    max_iter: int = 100
    tol: float = 1e-2
    uniform_weights: bool = field(default=False, metadata={"config": False})  # the 'awt-uniform' method

    def __post_init__(self) -> None:
        """Refuse what the scorer cannot compute with (a SettingError naming the field and the value):
        temperatures and epsilon divide, and an epsilon under 1e-3 underflows the float32 kernel
        ``exp((cos - 1) / epsilon)`` to zero for any cosine below 0.9, so every score would be NaN."""
        for key, low in (("image_temperature", 1e-6), ("text_temperature", 1e-6), ("epsilon", 1e-3), ("tol", 0.0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
                raise SettingError(key, value, f"a finite number >= {low:g}")
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise SettingError("max_iter", self.max_iter, "a whole number >= 1")


# Elements of the (images, classes, views, prompts) kernel held at once, and of one temporary
# block: cache-sized on the CPU; on a GPU larger, as each block costs a few kernel launches.
_KERNEL_ELEMENTS = {"cpu": 1 << 26, "cuda": 1 << 28}
_BLOCK_ELEMENTS = {"cpu": 1 << 23, "cuda": 1 << 25}


def _chunks(total: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, total)) for start in range(0, total, size)]


def _image_chunk(views: int, prompts: int, classes: int, device: torch.device) -> int:
    return max(1, _KERNEL_ELEMENTS.get(device.type, 1 << 26) // (classes * views * prompts))


def _class_chunk(images: int, views: int, prompts: int, classes: int, class_chunk: int | None,
                 device: torch.device) -> int:
    if class_chunk is not None:
        return max(1, min(int(class_chunk), classes))
    return max(1, min(classes, _BLOCK_ELEMENTS.get(device.type, 1 << 23) // (images * views * prompts)))


def awt_marginals(
    mean_logits: torch.Tensor, view0_logits: torch.Tensor, config: AWTConfig, prompt_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Marginals of the transport problems.

    Args:
        mean_logits: (batch, views, classes) logits averaged over each class's (real) prompts.
        view0_logits: (batch, prompts, classes) logits of view 0 for every prompt.
        prompt_mask: (classes, prompts) bool, real prompts; padding gets weight 0.
    Returns:
        ``a`` (batch, views) shared by all classes, ``b`` (batch, prompts, classes).
    """
    batch, views, _ = mean_logits.shape
    prompts, classes = view0_logits.shape[1:]
    if config.uniform_weights:
        a = mean_logits.new_full((batch, views), 1.0 / views, dtype=torch.float32)
        if prompt_mask is None:
            b = mean_logits.new_full((batch, prompts, classes), 1.0 / prompts, dtype=torch.float32)
        else:
            real = prompt_mask.T.float()
            b = (real / real.sum(0, keepdim=True)).expand(batch, prompts, classes)
        return a, b
    a = image_weights(mean_logits, config.image_temperature)
    b = prompt_weights(mean_logits[:, 0], view0_logits, config.text_temperature, prompt_mask)
    return a, b


def transport_scores(
    kernel: torch.Tensor, logit_scale: float, a: torch.Tensor, b: torch.Tensor, config: AWTConfig, class_chunk: int | None = None
) -> torch.Tensor:
    """Optimal-transport score of each (image, class) pair.

    Args:
        kernel: (batch, classes, views, prompts) Gibbs kernels ``exp((cos - 1) / eps)``.
        a: (batch, views) view weights; b: (batch, prompts, classes) prompt weights.
    Returns:
        (batch, classes): ``sum_{v,p} T[v,p] * s * cos[v,p]`` with ``T`` the Sinkhorn plan.
    """
    batch, classes, views, prompts = kernel.shape
    u, v, _ = sinkhorn(
        kernel, a.unsqueeze(1).expand(batch, classes, views), b.transpose(1, 2), max_iter=config.max_iter, tol=config.tol
    )
    # s * cos = s * (1 + eps * log K), so the score is s * (sum T + eps * sum u K log(K) v): the
    # logits are recovered from the kernel and no second (batch, classes, views, prompts) tensor
    # is kept alive. After the last column update, sum T = sum b exactly.
    mass = b.sum(1)                                                            # (batch, classes)
    scores = kernel.new_empty(batch, classes)
    for cls in _chunks(classes, _class_chunk(batch, views, prompts, classes, class_chunk, kernel.device)):
        k = kernel[:, cls]
        row = torch.matmul(k.log().mul_(k), v[:, cls].unsqueeze(-1)).squeeze(-1)  # (batch, chunk, views)
        scores[:, cls] = (mass[:, cls] + config.epsilon * (u[:, cls] * row).sum(-1)) * logit_scale
    return scores


def awt_scores(
    logits: torch.Tensor,
    logit_scale: float | torch.Tensor,
    *,
    image_temperature: float = 0.5,
    text_temperature: float = 0.5,
    epsilon: float = 0.1,
    max_iter: int = 100,
    tol: float = 1e-2,
    uniform_weights: bool = False,
    class_chunk: int | None = None,
) -> torch.Tensor:
    """AWT scores from logits.

    Args:
        logits: (batch, views, prompts, classes), ``s * cos(view, prompt of class)``; view 0 must be
            the un-augmented view and prompt 0 the bare template.
        logit_scale: the multiplier ``s`` itself (CLIP: 100.0), not its log.
        class_chunk: classes per temporary block (memory bound); ``None`` picks one. The result
            does not depend on it.
    Returns:
        (batch, classes) float32 scores on the logits' device; each image's scores depend on
        that image alone.
    """
    config = AWTConfig(image_temperature, text_temperature, epsilon, max_iter, tol, uniform_weights)
    s = float(logit_scale)
    logits = logits.float()
    batch, views, prompts, classes = logits.shape
    a, b = awt_marginals(logits.mean(2), logits[:, 0], config)
    scores = logits.new_empty(batch, classes)
    for imgs in _chunks(batch, _image_chunk(views, prompts, classes, logits.device)):
        n = imgs.stop - imgs.start
        kernel = logits.new_empty(n, classes, views, prompts)
        for i, image in enumerate(range(imgs.start, imgs.stop)):
            # One 2-D transpose per image: torch copies those in cache-friendly tiles, many times
            # faster than a 4-D permute (the largest cost of this function otherwise).
            kernel[i].view(classes, views * prompts).copy_(logits[image].reshape(views * prompts, classes).T)
        for cls in _chunks(classes, _class_chunk(n, views, prompts, classes, class_chunk, logits.device)):
            kernel[:, cls].mul_(1.0 / (s * config.epsilon)).sub_(1.0 / config.epsilon).exp_()
        scores[imgs] = transport_scores(kernel, s, a[imgs], b[imgs], config, class_chunk)
    return scores


def awt_scores_from_features(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: float | torch.Tensor,
    config: AWTConfig = AWTConfig(),
    class_chunk: int | None = None,
    prompt_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """AWT scores from L2-normalised embeddings, never materialising all logits at once.

    Args:
        image_features: (batch, views, dim), view 0 un-augmented.
        text_features: (classes, prompts, dim), prompt 0 the bare template.
        prompt_mask: (classes, prompts) bool when classes have different numbers of prompts
            (padding rows of ``text_features`` must then be zero).
    Returns:
        (batch, classes) float32 scores, equal to ``awt_scores`` of the full logits.
    """
    s = float(logit_scale)
    img = image_features.float()
    txt = text_features.to(img.device, torch.float32)
    batch, views, dim = img.shape
    classes, prompts, _ = txt.shape
    # The prompt average of the logits is the logit against the (unnormalised) mean prompt.
    mean_logits = s * _gemm(img.reshape(-1, dim), mean_prompt(txt, prompt_mask).T).view(batch, views, classes)
    view0 = (s * _gemm(img[:, 0], txt.reshape(-1, dim).T)).view(batch, classes, prompts).transpose(1, 2)
    if prompt_mask is not None:
        prompt_mask = prompt_mask.to(img.device)
    a, b = awt_marginals(mean_logits, view0, config, prompt_mask)
    scores = img.new_empty(batch, classes)
    for imgs in _chunks(batch, _image_chunk(views, prompts, classes, img.device)):
        n = imgs.stop - imgs.start
        flat = img[imgs].reshape(n * views, dim) / config.epsilon
        kernel = img.new_empty(n, classes, views, prompts)
        for cls in _chunks(classes, _class_chunk(n, views, prompts, classes, class_chunk, img.device)):
            scaled = _gemm(flat, txt[cls].reshape(-1, dim).T)                      # cos / eps, (n * views, chunk * prompts)
            block = kernel[:, cls]
            block.copy_(scaled.sub_(1.0 / config.epsilon).view(n, views, -1, prompts).transpose(1, 2))
            block.exp_()  # exp((cos - 1) / eps)
        scores[imgs] = transport_scores(kernel, s, a[imgs], b[imgs], config, class_chunk)
    return scores


def _gemm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` in float32. On CUDA the operands are rounded to float16 (tensor cores, float32
    accumulation and output): unit vectors lose about 1e-5 of cosine, where float32 GEMMs would
    cost more than the whole rest of the scorer."""
    if a.is_cuda and _half_gemm(a.device):
        return torch.mm(a.half(), b.half(), out_dtype=torch.float32)
    return a.float() @ b.float()


@functools.cache
def _half_gemm(device: torch.device) -> bool:
    """Whether this torch has float16 GEMMs with float32 output (``out_dtype``) on ``device``."""
    one = torch.ones(1, 1, device=device, dtype=torch.float16)
    try:
        return torch.mm(one, one, out_dtype=torch.float32).dtype == torch.float32
    except (TypeError, RuntimeError):
        return False


def mean_prompt(text_features: torch.Tensor, prompt_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(classes, prompts, dim) -> (classes, dim) mean over each class's real prompts (not renormalised)."""
    if prompt_mask is None:
        return text_features.mean(1)
    mask = prompt_mask.to(text_features.device, text_features.dtype).unsqueeze(-1)
    return (text_features * mask).sum(1) / mask.sum(1)


def clip_scores(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: float | torch.Tensor) -> torch.Tensor:
    """Plain zero-shot CLIP: view 0 against prompt 0. (batch, views, dim), (classes, prompts, dim) -> (batch, classes)."""
    img = image_features[:, 0].float()
    txt = text_features[:, 0].to(img.device, torch.float32)
    return float(logit_scale) * img @ txt.T


def ensemble_scores(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: float | torch.Tensor, prompt_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Prompt ensembling: view 0 against the normalised mean of each class's prompts -> (batch, classes)."""
    img = image_features[:, 0].float()
    txt = F.normalize(mean_prompt(text_features.to(img.device, torch.float32), prompt_mask), dim=-1)
    return float(logit_scale) * img @ txt.T
