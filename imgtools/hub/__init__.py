"""Publishing to the Hugging Face Hub: the repository layout, the dataset card, the upload.

``imgtools push-hub`` produces the layout ``datasets.push_to_hub`` writes (Parquet shards per
config and split, HF ``Image``/``ClassLabel`` features, a README whose YAML lists ``configs`` and
``dataset_info``), so ``datasets.load_dataset("user/name", "320px")`` and the dataset viewer work
without any loading script. The modules follow the order of the work:

    layout  which configs a folder holds, staging them as Parquet, the tree to upload
    card    the README.md (YAML front matter + body), merged with what is already published
    push    the upload: huggingface_hub's upload_folder, the card committed last, clear errors
"""

from imgtools.hub.push import push_hub

__all__ = ["push_hub"]
