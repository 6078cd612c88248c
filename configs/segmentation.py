"""U-Net segmentation (Ronneberger et al. 2015) of the synthetic shapes or of crops of a real fluorescence image of
nuclei, with cross-entropy + Dice loss; evaluated by mean IoU and Dice over the foreground classes.

    python run.py --config=configs/segmentation.py --workdir=workdirs/segmentation_shapes
    python run.py --config=configs/segmentation.py:nuclei --workdir=workdirs/segmentation_nuclei
    python run.py --config=configs/segmentation.py --workdir=workdirs/shapes_no_skips --config.model.skips=False
    python run.py --config=configs/segmentation.py:test --workdir=/tmp/tiny_unet       # seconds, for tests

The variant names the data set ("shapes", the default, or "nuclei"), then optionally ",test": `:nuclei,test`.
`--config.model.skips=False` is the ablation without skip connections; `--config.model.upsampling=bilinear` (or
nearest, pixel_shuffle) changes the expanding path's upsampling.
"""
import ml_collections

from configs import parse_variant

DATASETS = ("shapes", "nuclei")
STEPS = {"shapes": 3000, "nuclei": 2000}  # the nuclei crops are few: fewer steps before they are learnt by heart


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  name, test = parse_variant(variant, DATASETS, "segmentation")
  config = ml_collections.ConfigDict()
  config.task = "segmentation"
  config.seed = 0
  config.init_from = ""  # the segmentation task starts from scratch only
  # 64x64 images; random flips and transposes of image and mask together (the paper's augmentation is elastic).
  config.data = dict(name=name, data_dir="", batch_size=16, eval_batch_size=32, augment=True)
  # Four levels of 16 to 128 channels: the paper's shape (its five levels start at 64) scaled to 64x64 images.
  # GroupNorm (not in the paper, which predates it) lets Adam train it at a constant 1e-3 from the start.
  config.model = dict(
      base_width=16,
      channel_multipliers=(1, 2, 4, 8),
      convs_per_level=2,
      skips=True,
      upsampling="transposed",
      upsampling_kernel=2,
      norm="group",
      norm_groups=8,
      dropout=0.0,
  )
  config.objective = dict(dice_weight=1.0)
  config.optimizer = dict(
      learning_rate=1e-3,
      schedule="cosine",
      warmup_steps=100,
      final_lr_fraction=0.1,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      weight_decay=1e-4,
      clip_norm=1.0,
  )
  config.train = dict(
      num_steps=STEPS[name],
      log_every=50,
      eval_every=500,
      eval_batches=0,
      checkpoint_every=500,
      keep_checkpoints=2,
      profile_steps=0,
  )
  config.mesh = dict(data=-1, fsdp=1, tensor=1)
  if test:
    config.data.update(batch_size=8, eval_batch_size=8)  # 8: the test suite's virtual devices split the batch
    config.model.update(base_width=4, channel_multipliers=(1, 2), convs_per_level=1, norm_groups=2)
    config.optimizer.update(learning_rate=3e-3, warmup_steps=2)
    config.train.update(num_steps=20, log_every=5, eval_every=10, checkpoint_every=10)
  return ml_collections.ConfigDict(config)
