"""Metadata files written beside a dataset so that other tools load it in place: the Hugging
Face card YAML of a WebDataset output (:mod:`.huggingface`), TFDS's ``dataset_info.json`` /
``features.json`` beside TFRecords (:mod:`.tfds`) and an MLCommons Croissant description of
every output (:mod:`.croissant`). Each writer describes files already written; none of them
reads or changes a record."""
