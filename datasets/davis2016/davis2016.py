"""DAVIS 2016 tfds builder (single object, binarised masks).

Configs: '480p' (JPEGImages/480p) and 'full_resolution' (the 2016 package's
JPEGImages/1080p). Splits: 'train' (30 sequences), 'val' (20 sequences, 1,376
frames) from ImageSets/480p/<split>.txt. Masks are 0/1. See
`vosjax.data.davis_tfds` for the features, the manual dir and the
`sequences=` option.

  builder = Davis2016(data_dir=..., config='480p',
                      sequences={'train': ['surf', 'dog-agility']})  # optional
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir='/path/to/DAVIS'))
  val = builder.as_data_source('val')   # val[i]['frames'] [N, H, W, 3] uint8
"""

# The builder lives in the library (the shared pipeline prepares it); this
# module is where `tfds build` and `datasets.davis2016` find it.
from vosjax.data.davis_tfds import Davis2016  # pylint: disable=unused-import
