"""The transform stage: what happens to one record between a source and a format's writer.

A transform takes one :class:`imgtools.records.Record` (encoded image bytes and their label)
and returns one record per output of the run, or raises :class:`BadImage` with a reason. Each
declares what it produces, so the engine can check that the writer takes it:

* :class:`~imgtools.transforms.jpeg.ResizeJPEG` (``jpeg``): decode, repair to upright sRGB,
  shortest side to N for every requested size, encode - builds, and ``convert --size``;
* :class:`~imgtools.transforms.passthrough.Passthrough` (``as-input``): the bytes untouched -
  conversions;
* :class:`~imgtools.transforms.square.SquareRows` (``planar-rows``): N x N box-downsampled,
  channel-planar rows - downsampled ImageNet (pickle/npz).

The codec itself (decoding, repair, resize, encode) is :mod:`.jpeg` and :mod:`.resample`.
"""
