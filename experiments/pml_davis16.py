"""PML on DAVIS 2016: train the embedding on train, retrieve on val.

Chen et al., "Blazingly Fast Video Object Segmentation with Pixel-Wise Metric
Learning", CVPR 2018: DeepLab-v2 ResNet-101 at stride 8, embedding head on
features ++ (x, y, t) to d = 128, modified triplet loss, 1-NN retrieval from
the first-frame mask with online adaptation (the paper's full model;
published J 75.5 / F 79.3 on val).

The paper's backbone is COCO-pretrained for segmentation; those weights are not
obtainable offline, so the ResNet starts from RANDOM INIT here (expect far
lower J&F than published from DAVIS train alone). Converted weights plug in
with --config.model.init=npz --config.model.weights_path=/path/to/resnet.npz
(keys as `vosjax.models.resnet.load_weights_npz` documents).

Margin, optimiser, crop and sampling counts are our choices (not stated in
the paper) and are all overridable:

  python run.py --experiment=pml_davis16 \
    --config.data_dir=../shared/data/DAVIS \
    --config.data.train_sequences=surf,dog-agility --config.train.num_steps=200
"""

import ml_collections

from experiments import _davis


def get_config():
  config = ml_collections.ConfigDict()
  config.program = "pml"
  config.seed = 0

  # --config.data_dir=/path/to/DAVIS, --config.data.val_sequences=a,b, ...
  _davis.add_davis2016_data(config)

  config.model = ml_collections.ConfigDict()
  config.model.backbone = "resnet"  # or "vgg" (dense VGG16), "i3d"
  config.model.depth = 101
  config.model.width_multiplier = 1.0
  config.model.resnet_stage_blocks = ""  # e.g. "1,1,1,1" overrides depth
  config.model.i3d_endpoint = "Mixed_3c"  # stride 8
  config.model.embed_dim = 128
  config.model.hidden_dim = 256
  config.model.use_coords = True
  config.model.use_head = True
  config.model.train_backbone = True  # False: only the head is trained
  # "kinetics400" (i3d), "imagenet" (vgg) or "npz" (resnet).
  config.model.init = "random"
  config.model.weights_path = ""

  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 20000  # 0: no training, evaluate the init.
  config.train.batch_size = 4  # videos per step
  config.train.crop_size = 320
  config.train.min_foreground = 0.1
  # Anchors from one frame; the pool from num_ref_frames frames at most
  # max_frames_apart away; counts per label present (background included).
  config.train.num_ref_frames = 2
  config.train.max_frames_apart = 10
  config.train.anchors_per_object = 256
  config.train.pool_per_object = 1024
  config.train.max_objects = 1  # DAVIS 2016: one object per video.
  config.train.margin = 0.3  # squared-distance units (unit vectors: [0, 4])
  config.train.optimizer = "adam"
  config.train.learning_rate = 1e-4
  config.train.weight_decay = 0.0
  config.train.update_batch_stats = True
  config.train.checkpoint_every = 1000
  config.train.log_every = 50

  config.eval = ml_collections.ConfigDict()
  config.eval.name = "pml"  # predictions/<name>/
  config.eval.k = 1
  # "labels": the 1/8-resolution label map upsampled nearest, as the paper
  # transfers labels; "distances": each label's distance map upsampled
  # bilinearly, then the nearest label per pixel (vosjax.retrieval).
  config.eval.upsample = "labels"
  config.eval.online = True  # the paper's online adaptation
  # Also the other online setting, from the same embeddings (a second
  # variant named <name>_online or <name>_no_online).
  config.eval.compare_online = False
  config.eval.online_capacity = 16384
  config.eval.online_max_add_per_frame = 1024
  config.eval.online_confidence_ratio = 0.5
  config.eval.clip_len = 8  # frames embedded per forward pass
  config.eval.scale = 1.0  # frames resized by this before embedding
  config.eval.chunk_size = 4096
  config.eval.ref_chunk_size = 8192
  config.eval.overlays = True  # GIF + contact sheet per val sequence.
  return config
