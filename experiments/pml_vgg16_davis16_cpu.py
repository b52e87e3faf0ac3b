"""PML with a dense ImageNet VGG16 on the CPU protocol (DAVIS 2016).

`python run.py --experiment=pml_vgg16_davis16_cpu --config.data_dir=../shared/data/DAVIS`

The paper's COCO DeepLab ResNet-101 is not obtainable offline; this is its
nearest obtainable relative: torchvision's ImageNet VGG16 made dense the
DeepLab-LargeFOV way (pool4 3x3 stride 1, conv5 dilated by 2: conv5_3 at
stride 8, `vosjax.models.vgg`), under the paper's embedding head (features
++ (x, y, t) -> 1x1 -> ReLU -> 1x1 to d = 128). Budget, for about an hour on
2 cores:
  * the backbone is frozen (`model.train_backbone=False`): a forward pass
    of the dense VGG16 costs about 1 s per 427x240 frame on 2 shared cores,
    its backward pass twice that, and 150 steps of training the I3D
    backbone with its head made retrieval worse than no training
    (`pml_davis16_cpu`, docs/RESULTS.md); the head alone trains from its
    random start;
  * 300 Adam steps of 2 videos x 3 frames of 160x160 crops, learning rate
    1e-3 (our choice: a randomly initialised two-layer head with no
    pre-trained weights to protect; the paper gives no rate);
  * retrieval at half resolution (427x240, as the I3D rows), with the
    paper's online adaptation and, from the same embeddings, without it
    (`eval.compare_online`: the second variant `pml_vgg16_trained_no_online`;
    its s/frame is retrieval alone, the embeddings being reused).
  * `eval.upsample = "distances"`: each label's distance map, at 1/8 of the
    half-resolution frame (a cell is 16x16 pixels of the 854x480 frame),
    upsampled bilinearly before the nearest label is taken, instead of the
    label map upsampled nearest (the paper's label transfer; our deviation).
    On blackswan, car-shadow, cows, dog and soapbox with the zero-shot I3D
    features (`pml_i3d_zero_shot` at 0.5 scale), J&F 0.485 -> 0.508 (J
    0.521 -> 0.554, F 0.449 -> 0.462), at no measurable cost.
"""

from experiments import pml_davis16_cpu


def get_config():
  config = pml_davis16_cpu.get_config()
  config.model.backbone = "vgg"
  config.model.init = "imagenet"
  config.model.use_head = True
  config.model.train_backbone = False
  config.train.num_steps = 300
  config.train.learning_rate = 1e-3
  config.train.checkpoint_every = 50
  config.eval.name = "pml_vgg16_trained"
  config.eval.clip_len = 8  # frames per forward pass (no temporal context)
  config.eval.compare_online = True
  config.eval.upsample = "distances"  # See above.
  return config
