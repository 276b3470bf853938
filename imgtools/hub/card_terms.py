"""What a dataset card says about the dataset as a whole, whatever the config: its description
(from the recipe when the dataset is one of ours), the ImageNet terms of access and the licence
keys that point to them, and the citations."""

from __future__ import annotations

from dataclasses import dataclass

from imgtools.errors import UserError
from imgtools.recipes import load_recipe

FAMILY_IMAGENETTE = ("imagenette", "imagewoof", "imagewang")
IMAGENET_1K_CARD = "https://huggingface.co/datasets/ILSVRC/imagenet-1k"
IMAGENET_TERMS_URL = "https://image-net.org/download.php"
IMAGENET_LICENSE_NAME = "imagenet-terms-of-access"

IMAGENET_TERMS = (
    'By clicking on "Access repository" below, you also agree to the ImageNet Terms of Access: '
    '[RESEARCHER_FULLNAME] (the "Researcher") has requested permission to use the ImageNet '
    'database (the "Database") at Princeton University and Stanford University. In exchange for '
    "such permission, Researcher hereby agrees to the following terms and conditions: "
    "1. Researcher shall use the Database only for non-commercial research and educational "
    "purposes. 2. Princeton University and Stanford University make no representations or "
    "warranties regarding the Database, including but not limited to warranties of "
    "non-infringement or fitness for a particular purpose. 3. Researcher accepts full "
    "responsibility for his or her use of the Database and shall defend and indemnify the "
    "ImageNet team, Princeton University, and Stanford University, including their employees, "
    "Trustees, officers and agents, against any and all claims arising from Researcher's use of "
    "the Database, including but not limited to Researcher's use of any copies of copyrighted "
    "images that he or she may create from the Database. 4. Researcher may provide research "
    "associates and colleagues with access to the Database provided that they first agree to be "
    "bound by these terms and conditions. 5. Princeton University and Stanford University "
    "reserve the right to terminate Researcher's access to the Database at any time. 6. If "
    "Researcher is employed by a for-profit, commercial entity, Researcher's employer shall also "
    "be bound by these terms and conditions, and Researcher hereby represents that he or she is "
    "fully authorized to enter into this agreement on behalf of such employer. 7. The law of the "
    "State of New Jersey shall apply to all disputes under this agreement.")

CITATION_IMAGENET = """@article{ILSVRC15,
  author = {Olga Russakovsky and Jia Deng and Hao Su and Jonathan Krause and Sanjeev Satheesh and
            Sean Ma and Zhiheng Huang and Andrej Karpathy and Aditya Khosla and Michael Bernstein
            and Alexander C. Berg and Li Fei-Fei},
  title = {{ImageNet Large Scale Visual Recognition Challenge}},
  journal = {International Journal of Computer Vision (IJCV)},
  year = {2015},
  volume = {115},
  number = {3},
  pages = {211--252},
  doi = {10.1007/s11263-015-0816-y}
}"""

CITATION_IMAGENETTE = """@software{Howard_Imagenette_2019,
  title = {Imagenette: A smaller subset of 10 easily classified classes from Imagenet},
  author = {Jeremy Howard},
  year = {2019},
  month = {March},
  publisher = {GitHub},
  url = {https://github.com/fastai/imagenette}
}"""

CITATION_DOWNSAMPLED = """@article{chrabaszcz2017downsampled,
  title = {A Downsampled Variant of ImageNet as an Alternative to the CIFAR datasets},
  author = {Patryk Chrabaszcz and Ilya Loshchilov and Frank Hutter},
  journal = {arXiv preprint arXiv:1707.08819},
  year = {2017}
}"""


@dataclass
class DatasetDescription:
    """Dataset-level facts, from the recipe when the dataset is one of ours."""

    name: str
    pretty_name: str
    description: str
    homepage: str
    selection_license: str  # the licence of the class list / split files (not of the photos)
    from_imagenet: bool
    has_official_split: bool = False

    @classmethod
    def for_dataset(cls, name: str, from_imagenet: bool) -> DatasetDescription:
        try:
            recipe = load_recipe(name)
        except (UserError, OSError, ValueError):
            return cls(name, name, f"An image classification dataset ({name}).", "", "",
                       from_imagenet)
        return cls(name, recipe.pretty_name or name, recipe.description, recipe.homepage,
                   recipe.license or "", True, recipe.official is not None)
