"""Every default of the engine, defined once; light (no torch), so the command line reads them too."""

MODEL = "ViT-B-32"
PRETRAINED = "openai"
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "amp", "amp_bf16")
TEMPLATE = "a photo of a {}"
VIEWS = 50                  # N: random views per image besides view 0
DESCRIPTIONS_PER_CLASS = 50  # M: descriptions per class besides the bare template
SEED = 0
BATCH_SIZE = 8              # images per batch, each with N + 1 views
TOP_K = 5
METHOD = "awt"
LLM = "gpt-3.5-turbo"       # the model the AWT paper used for its descriptions
CACHE_ENV = "AWT_CACHE_DIR"
MAX_PIXELS = 2 * (1024 * 1024 * 1024 // 4 // 3)  # 178,956,970: PIL's own refusal limit; larger is a likely bomb
# a video's views: frames x crops x clips, the AWT authors' 8 x 3 x 4 (awt.video_sampling)
VIDEO_FRAMES = 8
VIDEO_CROPS = 3
VIDEO_CLIPS = 4
