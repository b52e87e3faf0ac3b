"""DAVIS 2017 tfds builder (multiple objects, palette ids kept).

Configs: '480p' and 'full_resolution' (JPEGImages/Full-Resolution). Splits:
'train' (60 sequences) and 'val' (30) from ImageSets/2017/<split>.txt
(test-dev, whose masks exist only for first frames, is not built). Masks are
object ids 0..N with 255 = void. See `vosjax.data.davis_tfds` for
the features, the manual dir and the `sequences=` option.

  builder = Davis2017(data_dir=..., config='480p')
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir='/path/to/DAVIS'))
  train = builder.as_data_source('train')
"""

# The builder lives in the library (the shared pipeline prepares it); this
# module is where `tfds build` and `datasets.davis2017` find it.
from vosjax.data.davis_tfds import Davis2017  # pylint: disable=unused-import
